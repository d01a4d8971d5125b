"""`medimg train`: start a training job through the API and follow it with a progress bar."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import httpx
from tqdm import tqdm

from shared.schemas.training import epochs_done

FINAL = ("succeeded", "failed", "cancelled")


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("train", help="train a model on a dataset through the API")
    p.add_argument("--api-url", default=os.environ.get("MEDIMG_API_URL", "http://127.0.0.1:8000"))
    p.add_argument(
        "--api-key", default=os.environ.get("MEDIMG_API_KEY"), help="default: $MEDIMG_API_KEY"
    )
    p.add_argument("--dataset", required=True, help="'name' (newest ready version) or 'name:v'")
    p.add_argument(
        "--task", default="classification", choices=("classification", "detection", "segmentation")
    )
    p.add_argument("--architecture", default=None, help="default: derived from the dataset")
    p.add_argument(
        "--start-from", default=None, help="random, imagenet, or a model ref (default: derived)"
    )
    p.add_argument("--model-name", default=None, help="default: <dataset>-<architecture>")
    p.add_argument("--monitor", default=None, help="validation metric (default by task)")
    p.add_argument("--promote", action="store_true", help="move `production` if better")
    for name, kind in (("epochs", int), ("batch-size", int), ("lr", float), ("image-size", int)):
        p.add_argument(f"--{name}", type=kind, default=None)
    p.add_argument(
        "--param", action="append", default=[], metavar="KEY=VALUE",
        help="any other hyper-parameter (JSON value), e.g. --param patience=3",
    )  # fmt: skip
    p.add_argument("--no-wait", action="store_true", help="print the job and return")
    p.set_defaults(handler=run)


def _params(args: argparse.Namespace) -> dict[str, Any]:
    params: dict[str, Any] = {
        key: getattr(args, key)
        for key in ("epochs", "batch_size", "lr", "image_size")
        if getattr(args, key) is not None
    }
    for item in args.param:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--param {item!r}: expected KEY=VALUE")
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    return params


def request_body(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {
        "dataset": args.dataset,
        "task": args.task,
        "promote": args.promote,
        "params": _params(args),
    }
    # Unset values stay out of the request so the platform derives them from the dataset.
    for key in ("architecture", "start_from", "model_name", "monitor"):
        if getattr(args, key):
            body[key] = getattr(args, key)
    return body


def _describe(progress: dict[str, Any]) -> dict[str, str]:
    shown = {"phase": str(progress.get("phase", ""))}
    if progress.get("folds"):  # cross-validation: which fold the epochs belong to
        shown["fold"] = f"{progress.get('fold')}/{progress['folds']}"
    monitor = progress.get("monitor")
    value = (progress.get("val") or {}).get(monitor) if monitor else None
    if value is not None:
        shown[f"val_{monitor}"] = f"{value:.4f}"
    if progress.get("loss") is not None:
        shown["loss"] = f"{progress['loss']:.4f}"
    return shown


def follow(client: httpx.Client, job_id: str, poll_s: float = 1.0) -> dict[str, Any]:
    """Show a live bar in epochs (fractional within an epoch) until the job is final."""
    with tqdm(total=None, unit="epoch", dynamic_ncols=True, file=sys.stderr) as bar:
        while True:
            response = None
            try:
                response = client.get(f"/v1/training-jobs/{job_id}")
            except httpx.TransportError:  # a slow or restarting API: the job runs on
                pass
            if response is None or response.status_code >= 500:
                time.sleep(poll_s)
                continue
            job: dict[str, Any] = response.raise_for_status().json()
            progress = job["progress"] or {}
            bar.total = progress.get("epochs") or bar.total
            done = epochs_done(progress)
            bar.n = round(done, 2)
            bar.set_postfix(_describe(progress), refresh=False)
            bar.refresh()
            if job["status"] in FINAL:
                return job
            time.sleep(poll_s)


def run(args: argparse.Namespace) -> int:
    if not args.api_key:
        print("medimg train: pass --api-key or set MEDIMG_API_KEY", file=sys.stderr)
        return 2
    headers = {"Authorization": f"Bearer {args.api_key}"}
    with httpx.Client(base_url=args.api_url, headers=headers, timeout=30) as client:
        response = client.post("/v1/training-jobs", json=request_body(args))
        if response.status_code != 202:
            problem = response.json() if response.content else {}
            print(f"medimg train: {problem.get('detail', response.text)}", file=sys.stderr)
            return 1
        job = response.json()
        print(f"training job {job['id']} ({job['dataset']}, {job['architecture']})", flush=True)
        if args.no_wait:
            return 0
        try:
            job = follow(client, job["id"])
        except KeyboardInterrupt:
            print(f"\nstopped following; cancel with POST /v1/training-jobs/{job['id']}/cancel")
            return 130
    if job["status"] != "succeeded":
        error = job.get("error") or {}
        print(f"training job {job['status']}: {error.get('detail', '')}", file=sys.stderr)
        return 1
    test = (job.get("test_metrics") or {}).get("test_monitor", {})
    shown = ", ".join(f"{k} {v:.4f}" for k, v in test.items() if v is not None)
    promoted = {True: "; promoted to production", False: "; not promoted"}.get(job["promoted"], "")
    print(f"registered {job['model_version']} (test {shown}){promoted}")
    return 0
