"""The command of every platform service, in one place.

`medimg run`, the tests, docker-compose.yml and the k8s manifests all start the
services with exactly these commands.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Service:
    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)


# glibc malloc tuning for torch on CPU, measured (bench, resnet18 fp32 b8, 1 thread):
# default 26-27 ms/img; the mmap threshold alone 34-37 ms (freed buffers are trimmed back
# to the OS and page-faulted in again); with a trim threshold as well, 22.5-26 ms.
_MALLOC = {"MALLOC_MMAP_THRESHOLD_": "33554432", "MALLOC_TRIM_THRESHOLD_": "67108864"}


def migrate() -> Service:
    return Service("migrate", [sys.executable, "-m", "shared.db.migrate", "upgrade"])


def api(host: str = "127.0.0.1", port: int = 8000, workers: int = 1) -> Service:
    return Service(
        "api",
        [
            sys.executable, "-m", "uvicorn", "api.main:create_app", "--factory",
            "--host", host, "--port", str(port), "--workers", str(workers),
            "--no-access-log", "--timeout-graceful-shutdown", "10",
        ],
    )  # fmt: skip


def worker(
    queue: str = "cpu",
    concurrency: int = 2,
    metrics_port: int | None = None,
    node: str | None = None,
) -> Service:
    """A Celery inference worker; `node` names it (default: the queue) when several share a host."""
    node = node or queue
    return Service(
        f"worker-{node}",
        [
            sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker",
            "-Q", queue, "-n", f"{node}@%h", "--concurrency", str(concurrency),
            "--pool", "prefork", "--loglevel", "INFO", "--without-gossip", "--without-mingle",
        ],
        env={
            "MEDIMG_WORKER_CONCURRENCY": str(concurrency),
            **_MALLOC,
            **({"MEDIMG_WORKER_METRICS_PORT": str(metrics_port)} if metrics_port else {}),
        },
    )  # fmt: skip


def dataset_worker(concurrency: int = 1) -> Service:
    """The worker of the `datasets` queue: imports never take an inference process."""
    return worker("datasets", concurrency)


def trainer() -> Service:
    return Service(
        "trainer",
        [
            sys.executable, "-m", "celery", "-A", "trainer.celery_app", "worker",
            "-Q", "train", "-n", "train@%h", "--concurrency", "1",
            "--pool", "prefork", "--loglevel", "INFO", "--without-gossip", "--without-mingle",
        ],
        env={"MEDIMG_WORKER_CONCURRENCY": "1", **_MALLOC},
    )  # fmt: skip


def gateway(bind: str = "127.0.0.1", dicom_port: int = 11112, http_port: int = 9102) -> Service:
    """The DICOM node: C-STORE/C-ECHO listener, study intake, DICOMweb pulls, result delivery."""
    return Service(
        "gateway",
        [sys.executable, "-m", "gateway"],
        env={
            "MEDIMG_DICOM_BIND": bind,
            "MEDIMG_DICOM_PORT": str(dicom_port),
            "MEDIMG_GATEWAY_HTTP_PORT": str(http_port),
        },
    )
