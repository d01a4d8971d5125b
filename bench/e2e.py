"""End-to-end throughput and latency through HTTP, Postgres, Valkey and Celery workers."""

from __future__ import annotations

import io
import statistics
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

FINAL = ("succeeded", "failed", "cancelled")


def make_jpegs(sources: list[Path], count: int, size: int = 512) -> list[bytes]:
    """`count` distinct 512x512 JPEG q90 files (the TorchServe comparison's input)."""
    images = [Image.open(p).convert("L").resize((size, size), Image.BICUBIC) for p in sources]
    out = []
    for i in range(count):
        img = images[i % len(images)].rotate(i % 7)  # distinct bytes, same decode cost
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def submit(client: httpx.Client, model: str, batch: list[bytes]) -> str:
    files = [("files", (f"img{i}.jpg", data, "image/jpeg")) for i, data in enumerate(batch)]
    response = client.post("/v1/jobs", data={"model": model}, files=files)
    response.raise_for_status()
    return str(response.json()["id"])


def wait_all(client: httpx.Client, ids: list[str], poll: float = 0.5) -> list[dict[str, Any]]:
    """Wait for every job, polling only the oldest unfinished one (jobs finish roughly in
    order), so the waiting client adds one request per interval, not one per job."""
    for job_id in ids:
        while client.get(f"/v1/jobs/{job_id}").json()["status"] not in FINAL:
            time.sleep(poll)
    return [client.get(f"/v1/jobs/{job_id}").json() for job_id in ids]


def _ts(value: str) -> datetime:
    return datetime.fromisoformat(value)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


@dataclass
class RunResult:
    images: int
    jobs: int
    failed_images: int
    wall_s: float
    images_per_s: float
    job_latency_p50_ms: float
    job_latency_p95_ms: float
    job_latency_p99_ms: float
    image_latency_p50_ms: float
    # From each image's `timing` (worker side): images per forward pass, and the wait
    # between submission and a worker claiming the job.
    mean_batch_size: float
    queue_p50_ms: float


def throughput_run(
    url: str, auth: dict[str, str], model: str, jpegs: list[bytes], per_job: int, clients: int
) -> RunResult:
    """Saturate the workers: `clients` threads submit all jobs, then wait for all of them."""
    batches = [jpegs[i : i + per_job] for i in range(0, len(jpegs), per_job)]
    ids: list[str] = []
    lock = threading.Lock()

    def producer(mine: list[list[bytes]]) -> None:
        with httpx.Client(base_url=url, timeout=60, headers=auth) as client:
            for batch in mine:
                job_id = submit(client, model, batch)
                with lock:
                    ids.append(job_id)

    threads = [
        threading.Thread(target=producer, args=(batches[k::clients],)) for k in range(clients)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with httpx.Client(base_url=url, timeout=60, headers=auth) as client:
        jobs = wait_all(client, ids)
    # Server-side timestamps: polling cadence does not distort the numbers.
    start = min(_ts(j["created_at"]) for j in jobs)
    end = max(_ts(j["finished_at"]) for j in jobs)
    wall = (end - start).total_seconds()
    latencies = [
        (_ts(j["finished_at"]) - _ts(j["created_at"])).total_seconds() * 1000 for j in jobs
    ]
    per_image = [i["latency_ms"] for j in jobs for i in j["images"] if i["latency_ms"]]
    timings = [i["output"]["timing"] for j in jobs for i in j["images"] if i["output"]]
    failed = sum(j["images_failed"] for j in jobs)
    return RunResult(
        images=len(jpegs),
        jobs=len(jobs),
        failed_images=failed,
        wall_s=wall,
        images_per_s=(len(jpegs) - failed) / wall,
        job_latency_p50_ms=percentile(latencies, 50),
        job_latency_p95_ms=percentile(latencies, 95),
        job_latency_p99_ms=percentile(latencies, 99),
        image_latency_p50_ms=statistics.median(per_image) if per_image else 0.0,
        mean_batch_size=mean_batch_size(timings),
        queue_p50_ms=statistics.median(t["queue_ms"] for t in timings) if timings else 0.0,
    )


def mean_batch_size(timings: list[dict[str, Any]]) -> float:
    """Images per forward pass: each image of a pass of n reports n, so a pass is 1/n each."""
    passes = sum(1 / t["batch_size"] for t in timings)
    return len(timings) / passes if passes else 0.0


def latency_run(
    url: str, auth: dict[str, str], model: str, jpegs: list[bytes], count: int
) -> dict[str, float]:
    """One single-image job at a time: what one radiologist waiting on one image sees."""
    latencies = []
    with httpx.Client(base_url=url, timeout=60, headers=auth) as client:
        for i in range(count):
            start = time.perf_counter()
            job_id = submit(client, model, [jpegs[i % len(jpegs)]])
            # Long-poll: the answer comes when the job finishes, no polling interval.
            while (
                client.get(f"/v1/jobs/{job_id}", params={"wait": 30}).json()["status"] not in FINAL
            ):
                pass
            latencies.append((time.perf_counter() - start) * 1000)
    return {
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "n": float(count),
    }
