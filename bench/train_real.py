"""Train on a real dataset through the platform's own API and print the test evaluation.

    .venv/bin/python -m bench.train_real ddti --architecture efficientnet_lite0 \
        --start-from imagenet
    .venv/bin/python -m bench.train_real ddti-seg   # every setting derived from the dataset

Starts the platform as `make run` does (embedded PostgreSQL + Valkey, API, cpu worker,
trainer) on free ports in a temporary folder, uploads the dataset zip packed by
bench.datasets (POST /v1/datasets), starts a training job (POST /v1/training-jobs), follows
it with the `medimg train` progress bar and writes the job's final view to bench/results/.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from bench.datasets import PACKERS, TASKS
from cli.stack import Stack, StackConfig, free_port
from cli.train import follow
from shared.apikeys import create_key
from shared.config import psycopg_url
from shared.db.session import make_engine, make_sessionmaker

RESULTS = Path(__file__).with_name("results")


def _key(stack: Stack) -> str:
    engine = make_engine(psycopg_url(stack.env["DATABASE_URL"]))
    try:
        with make_sessionmaker(engine)() as session:
            _, plaintext = create_key(session, tenant="bench", name="train-real", scopes=("admin",))
            session.commit()
    finally:
        engine.dispose()
    return plaintext


def _wait_dataset(client: httpx.Client, location: str, timeout: float = 1800) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        version: dict[str, Any] = client.get(location).raise_for_status().json()
        if version["status"] != "importing":
            return version
        time.sleep(1)
    raise TimeoutError(f"dataset import still running after {timeout:.0f} s")


def _line(name: str, report: dict[str, Any]) -> str:
    op = report.get("at_operating_point") or {}
    ci = (report.get("ci95") or {}).get("auroc")
    interval = f" (95% CI {ci[0]:.3f}-{ci[1]:.3f})" if ci else ""
    return (
        f"{name}: n={report.get('n')} AUROC {report.get('auroc', float('nan')):.3f}{interval}; "
        f"at the operating point (threshold {op.get('threshold', float('nan')):.3f}): "
        f"balanced accuracy {op.get('balanced_accuracy', float('nan')):.3f}, sensitivity "
        f"{op.get('sensitivity', float('nan')):.3f}, specificity "
        f"{op.get('specificity', float('nan')):.3f}"
    )


def summary(job: dict[str, Any], wall_s: float) -> str:
    """The numbers a results table needs: test (and out-of-fold) AUROC with intervals,
    balanced accuracy and sensitivity/specificity at the operating point, wall times."""
    metrics = job.get("test_metrics") or {}
    lines = [f"job {job['id']} {job['status']}: {job['architecture']} from {job['start_from']}"]
    if "test" in metrics and "auroc" in metrics["test"]:
        lines.append(_line("test", metrics["test"]))
    if "out_of_fold" in metrics and "auroc" in metrics["out_of_fold"]:
        lines.append(_line("out-of-fold", metrics["out_of_fold"]))
    started, finished = job.get("started_at"), job.get("finished_at")
    if started and finished:
        span = datetime.fromisoformat(finished) - datetime.fromisoformat(started)
        train_s = span.total_seconds()
        lines.append(f"training job wall time {train_s / 60:.1f} min")
    lines.append(f"total wall time (stack start, upload, import, training) {wall_s / 60:.1f} min")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.train_real")
    parser.add_argument("dataset", choices=sorted(PACKERS))
    parser.add_argument("--architecture", default=None, help="default: derived by the platform")
    parser.add_argument("--start-from", default=None, help="default: derived by the platform")
    parser.add_argument("--param", action="append", default=[], metavar="KEY=JSON")
    args = parser.parse_args(argv)
    params = {k: json.loads(v) for k, _, v in (p.partition("=") for p in args.param)}

    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="medimg-train-") as tmp:
        root = Path(tmp)
        archive = PACKERS[args.dataset](root / f"{args.dataset}.zip")
        config = StackConfig(
            data_dir=root / "data",
            api_port=free_port(),
            redis_port=None,
            worker_concurrency=1,
            log_dir=root / "logs",
            ready_timeout=900,  # a shared, loaded box starts workers slowly
        )
        with Stack(config) as stack:
            key = _key(stack)
            headers = {"Authorization": f"Bearer {key}"}
            with httpx.Client(base_url=stack.api_url, headers=headers, timeout=120) as client:
                started = time.monotonic()
                with archive.open("rb") as f:
                    created = client.post(
                        "/v1/datasets",
                        data={"name": args.dataset, "on_duplicate": "drop"},
                        files={"file": (archive.name, f, "application/zip")},
                    )
                if created.status_code != 202:
                    raise SystemExit(f"dataset upload refused: {created.text}")
                dataset = _wait_dataset(client, created.headers["location"])
                seconds = time.monotonic() - started
                print(f"dataset {args.dataset}: {dataset['status']} in {seconds:.0f} s")
                if dataset["status"] != "ready":
                    raise SystemExit(json.dumps(dataset, indent=2)[:4000])
                body = {
                    "task": TASKS.get(args.dataset, "classification"),
                    "dataset": args.dataset,
                    "params": params,
                }
                # Unset: the platform derives them from the dataset (shared.recipes).
                body.update({k: v for k, v in (("architecture", args.architecture),
                             ("start_from", args.start_from)) if v is not None})  # fmt: skip
                job = client.post("/v1/training-jobs", json=body)
                if job.status_code != 202:
                    raise SystemExit(f"training job refused: {job.text}")
                final = follow(client, job.json()["id"])
        RESULTS.mkdir(exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        name = f"train-{args.dataset}-{final['architecture']}-{stamp}.json"
        (RESULTS / name).write_text(json.dumps(final, indent=2, default=str))
    print(json.dumps({"status": final["status"], "test_metrics": final.get("test_metrics")},
                     indent=2)[:6000])  # fmt: skip
    print(summary(final, time.monotonic() - t0))
    print(f"written: bench/results/{name}")
    return 0 if final["status"] == "succeeded" else 1


if __name__ == "__main__":
    raise SystemExit(main())
