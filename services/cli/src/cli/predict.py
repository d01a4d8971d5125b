"""`medimg predict FOLDER --model NAME`: every image in a folder through the API, one CSV.

The platform's equivalent of the old thyroid scripts' ``Voting.predict(img_path)`` over a
directory: PNG, JPEG and DICOM files are found recursively, submitted in jobs of
``--batch`` images (each with an Idempotency-Key, so a retried request never makes a
second job), polled, and written one row per image.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from tqdm import tqdm

from shared.imaging.formats import IMAGE_SUFFIXES

FINAL = {"succeeded", "failed", "cancelled"}


def find_images(folder: Path) -> list[Path]:
    """PNG/JPEG/DICOM files under ``folder`` (recursive, sorted; DICOM also without suffix)."""
    found = []
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or path.name.startswith("."):
            continue
        if path.suffix.lower() in IMAGE_SUFFIXES or (not path.suffix and _is_dicom(path)):
            found.append(path)
    return found


def _is_dicom(path: Path) -> bool:
    with path.open("rb") as fh:
        return fh.read(132)[128:132] == b"DICM"


def _batches(items: list[Path], size: int) -> Iterator[list[Path]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def submit(client: httpx.Client, paths: list[Path], form: dict[str, str]) -> str | httpx.Response:
    """The new job's id, or the API's refusal (4xx other than 429)."""
    files = [("files", (p.name, p.read_bytes(), "application/octet-stream")) for p in paths]
    headers = {"Idempotency-Key": str(uuid.uuid4())}
    for attempt in range(5):
        try:
            response = client.post("/v1/jobs", data=form, files=files, headers=headers)
        except httpx.TransportError:
            if attempt == 4:
                raise
            time.sleep(2**attempt)
            continue
        if response.status_code in (429, 503) and attempt < 4:
            time.sleep(float(response.headers.get("Retry-After", 2**attempt)))
            continue
        if response.status_code == 202:
            return str(response.json()["id"])
        if 400 <= response.status_code < 500 and response.status_code not in (401, 403, 404):
            return response
        raise SystemExit(f"medimg predict: the API refused the job: {_problem(response)}")
    raise AssertionError("unreachable")


def _problem(response: httpx.Response) -> str:
    try:
        body = response.json()
        return f"{response.status_code} {body.get('title', '')}: {body.get('detail', '')}"
    except ValueError:
        return f"{response.status_code} {response.text[:200]}"


def _row(path: Path, root: Path, image: dict[str, Any], labels: list[str]) -> dict[str, Any]:
    out = image.get("output") or {}
    error = image.get("error") or {}
    point = out.get("operating_point") or {}
    row: dict[str, Any] = {
        "path": str(path.relative_to(root)),
        "status": image["status"],
        "label": out.get("label", ""),
        "score": out.get("score", ""),
        **{f"p_{label}": (out.get("probabilities") or {}).get(label, "") for label in labels},
        "threshold": point.get("threshold", ""),
        "sensitivity": point.get("sensitivity", ""),
        "specificity": point.get("specificity", ""),
        "operating_point_source": point.get("source", ""),
        "members": json.dumps(
            [
                {"ref": m["ref"], "label": m["label"], "probabilities": m["probabilities"]}
                for m in (out.get("ensemble") or {}).get("members", [])
            ]
        )
        if out.get("ensemble")
        else "",
        "error": f"{error.get('type', '')}: {error.get('detail', '')}" if error else "",
    }
    return row


def predict(args: argparse.Namespace) -> int:
    root = Path(args.folder)
    if not root.is_dir():
        print(f"medimg predict: {root} is not a folder", file=sys.stderr)
        return 2
    images = find_images(root)
    if not images:
        print(f"medimg predict: no PNG, JPEG or DICOM files under {root}", file=sys.stderr)
        return 2
    form = {"model": args.model, "priority": args.priority}
    params = {k: v for k, v in (("threshold", args.threshold),) if v is not None}
    if params:
        form["params"] = json.dumps(params)
    if args.target_sensitivity is not None:
        form["target_sensitivity"] = str(args.target_sensitivity)
    key = args.key or os.environ.get("MEDIMG_API_KEY")
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    with httpx.Client(base_url=args.api, headers=headers, timeout=120) as client:
        labels = _labels(client, args.model)
        jobs: list[tuple[str, list[Path]]] = []
        refused: list[dict[str, Any]] = []
        with tqdm(total=len(images), unit="img", desc="submitted", disable=args.quiet) as bar:
            for batch in _batches(images, args.batch):
                answer = submit(client, batch, form)
                # A file the API refuses (not an image, corrupt header) sinks its whole job:
                # resubmit that batch one file at a time so only that file gets an error row.
                singles = (
                    [(answer, batch)]
                    if isinstance(answer, str) or len(batch) == 1
                    else [(submit(client, [p], form), [p]) for p in batch]
                )
                for result, paths in singles:
                    if isinstance(result, str):
                        jobs.append((result, paths))
                    else:
                        refused.append(_refused_row(paths[0], root, labels, result))
                bar.update(len(batch))
        rows = _collect(client, jobs, root, labels, quiet=args.quiet) + refused
        rows.sort(key=lambda r: r["path"])
    out = Path(args.out)
    with out.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    failed = sum(r["status"] != "succeeded" for r in rows)
    print(f"{len(rows)} images, {failed} without a result; wrote {out}", file=sys.stderr)
    return 1 if failed == len(rows) else 0


def _refused_row(
    path: Path, root: Path, labels: list[str], response: httpx.Response
) -> dict[str, Any]:
    body = response.json() if "json" in response.headers.get("content-type", "") else {}
    error = {"type": str(body.get("type", response.status_code)), "detail": _problem(response)}
    return _row(path, root, {"status": "refused", "error": error}, labels)


def _labels(client: httpx.Client, model: str) -> list[str]:
    name = model.split(":")[0].split("@")[0]
    response = client.get(f"/v1/models/{name}")
    if response.status_code != 200:
        raise SystemExit(f"medimg predict: model {model!r}: {_problem(response)}")
    return list(response.json()["latest"]["labels"])


def _collect(
    client: httpx.Client,
    jobs: list[tuple[str, list[Path]]],
    root: Path,
    labels: list[str],
    *,
    quiet: bool,
) -> list[dict[str, Any]]:
    results: dict[str, dict[str, Any]] = {}
    with tqdm(total=sum(len(b) for _, b in jobs), unit="img", desc="done", disable=quiet) as bar:
        while len(results) < len(jobs):
            for job_id, _ in jobs:
                if job_id in results:
                    continue
                job = client.get(f"/v1/jobs/{job_id}").raise_for_status().json()
                if job["status"] in FINAL:
                    results[job_id] = job
                    bar.update(job["image_count"])
            if len(results) < len(jobs):
                time.sleep(0.3)
    rows = []
    for job_id, paths in jobs:
        job = results[job_id]
        for image, path in zip(job["images"], paths, strict=True):
            row = _row(path, root, image, labels)
            if not row["error"] and job["status"] != "succeeded" and job.get("error"):
                row["error"] = f"{job['error']['type']}: {job['error']['detail']}"
            rows.append(row)
    return rows


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("predict", help="run every image of a folder through a model, write a CSV")
    p.add_argument("folder", help="folder searched recursively for PNG, JPEG and DICOM files")
    p.add_argument("--model", required=True, help="name, name:version or name@alias")
    p.add_argument("--out", default="results.csv", help="CSV to write (default: results.csv)")
    p.add_argument(
        "--api-url",
        "--api",
        dest="api",
        default=os.environ.get("MEDIMG_API_URL", "http://127.0.0.1:8000"),
    )
    p.add_argument("--api-key", "--key", dest="key", help="API key (default: $MEDIMG_API_KEY)")
    p.add_argument("--batch", type=int, default=16, help="images per job (default: 16)")
    p.add_argument("--priority", choices=["routine", "stat"], default="routine")
    point = p.add_mutually_exclusive_group()
    point.add_argument("--threshold", type=float, help="decision threshold on the positive class")
    point.add_argument(
        "--target-sensitivity", type=float, help="operating point from the card's validation ROC"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(handler=predict)
