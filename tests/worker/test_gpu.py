"""A real GPU worker (queue `gpu`, CUDA) runs the bundled model and agrees with the CPU.

Skipped without a CUDA device (tests/conftest.py). The CPU reference is computed in this
process on an explicit CPU model cache, because on a GPU host the stack's `cpu` worker
would pick CUDA too.
"""

from __future__ import annotations

import dataclasses
import signal
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import torch

from cli import services
from cli.stack import Stack
from shared.queueing import make_celery
from tests.conftest import wait_for_job
from tests.factories import MODEL, image_files, labelled_pngs, stack_settings, submit_job

NODE = "gpu-test"
# cuDNN convolutions use TF32 by default on Ampere and newer: about 1e-3 relative error.
PROBABILITY_ATOL = 5e-3


@pytest.fixture
def gpu_worker(stack: Stack) -> Iterator[str]:
    """A Celery worker on the `gpu` queue started as `make run`/compose start it; its log."""
    service = services.worker("gpu", 1, node=NODE)
    proc = stack.spawn(service)
    control = make_celery("gpu-test", stack.env["REDIS_URL"])
    deadline = time.monotonic() + 120
    try:
        while not any(NODE in name for r in control.control.ping(timeout=1.0) for name in r):
            assert proc.poll() is None, f"{service.name} exited with code {proc.returncode}"
            assert time.monotonic() < deadline, f"{service.name} did not start"
        yield service.name
    finally:
        control.close()
        # Other tests rely on no worker consuming `gpu` (tests/worker/test_batching.py).
        stack.processes.pop(service.name)
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)


def _cpu_reference(stack: Stack, api: httpx.Client, paths: list[Any]) -> dict[str, Any]:
    """The same job run by the worker code in this process, on a CPU model cache."""
    from worker.context import make_context
    from worker.inference.runner import ModelCache
    from worker.tasks.infer import run_inference_job

    # Queued on `gpu` while no worker consumes it, so only this call runs it; no batching
    # with other tests' queued jobs.
    job_id = submit_job(api, image_files(*paths), queue="gpu").raise_for_status().json()["id"]
    ctx = make_context(stack_settings(stack, cross_job_batching=False))
    ctx = dataclasses.replace(ctx, models=ModelCache(ctx.store, device=torch.device("cpu")))
    run_inference_job(ctx, uuid.UUID(job_id), "test@cpu-reference")
    return wait_for_job(api, job_id)


@pytest.mark.gpu
def test_gpu_worker_matches_cpu(stack: Stack, api: httpx.Client, gpu_worker: str) -> None:
    assert torch.cuda.is_available()
    paths = [p for p, _ in labelled_pngs()]
    cpu = _cpu_reference(stack, api, paths)

    response = submit_job(api, image_files(*paths), queue="gpu")
    assert response.status_code == 202, response.text
    gpu = wait_for_job(api, response.json()["id"])

    assert gpu["status"] == cpu["status"] == "succeeded", (gpu, cpu)
    assert stack.config.log_dir is not None
    log = (stack.config.log_dir / f"{gpu_worker}.log").read_text()
    assert f"loaded {MODEL}" in log and "on cuda" in log  # the job really ran on CUDA
    for on_gpu, on_cpu in zip(gpu["images"], cpu["images"], strict=True):
        g, c = on_gpu["output"], on_cpu["output"]
        for label, p in c["probabilities"].items():
            assert g["probabilities"][label] == pytest.approx(p, abs=PROBABILITY_ATOL)
        assert g["operating_point"] == c["operating_point"]
        threshold = c["operating_point"]["threshold"]
        if abs(c["probabilities"]["pneumonia"] - threshold) > PROBABILITY_ATOL:
            assert g["label"] == c["label"]  # same decision unless it sits on the threshold
