"""Cross-job micro-batching off and on: single-image jobs submitted concurrently.

The platform starts with it on (the default); for the "off" run the CPU workers are
restarted with MEDIMG_CROSS_JOB_BATCHING=false, so both runs share the platform, the data
and the bare-model measurement of one bench run.
"""

from __future__ import annotations

import dataclasses
import signal

import httpx

from bench.e2e import RunResult, submit, throughput_run, wait_all
from cli import services
from cli.stack import Stack

WORKER = "worker-cpu"
BATCHING_SWITCH = "MEDIMG_CROSS_JOB_BATCHING"


def restart_workers(stack: Stack, env: dict[str, str], timeout: float = 60) -> None:
    """Stop the CPU worker (warm shutdown) and start it again with `env` on top."""
    old = stack.processes.pop(WORKER)
    old.send_signal(signal.SIGTERM)
    old.wait(timeout)
    cfg = stack.config
    service = services.worker("cpu", cfg.worker_concurrency, cfg.worker_metrics_port)
    stack.spawn(dataclasses.replace(service, env={**service.env, **env}))
    stack.wait_ready(timeout)


def warm_up(
    url: str, auth: dict[str, str], model: str, jpegs: list[bytes], batch: int, processes: int
) -> None:
    """Enough multi-image jobs that every worker process has loaded the model."""
    with httpx.Client(base_url=url, timeout=60, headers=auth) as client:
        ids = [submit(client, model, jpegs[:batch]) for _ in range(2 * processes)]
        wait_all(client, ids, poll=0.2)


def batching_off_run(
    stack: Stack, auth: dict[str, str], model: str, jpegs: list[bytes], *, clients: int, batch: int
) -> RunResult:
    """Throughput of single-image jobs with the workers restarted without cross-job batching."""
    restart_workers(stack, {BATCHING_SWITCH: "false"})
    warm_up(stack.api_url, auth, model, jpegs, batch, stack.config.worker_concurrency)
    return throughput_run(stack.api_url, auth, model, jpegs, 1, clients)
