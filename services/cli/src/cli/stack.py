"""Start and stop the whole platform on one machine: servers, migrations, services."""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx
from celery import Celery

from cli import embedded, services
from cli.services import Service
from shared.apikeys import any_key_exists, create_key
from shared.auth import Scope
from shared.config import psycopg_url
from shared.db.session import make_engine, make_sessionmaker
from shared.queueing import make_celery

log = logging.getLogger(__name__)
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    # A launcher killed with SIGKILL must not leave orphaned API or worker processes.
    if sys.platform == "linux":
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def port_is_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        return s.connect_ex((host, port)) != 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class StackConfig:
    data_dir: Path
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    worker_concurrency: int = 2
    worker_metrics_port: int | None = 9101
    with_trainer: bool = True
    # DICOM listener (MEDIMG_DICOM_PORT) and the gateway's /metrics + /healthz; None: no gateway.
    dicom_port: int | None = None
    gateway_http_port: int = 9102
    redis_port: int | None = 6379
    log_dir: Path | None = None  # None: prefix service output onto this process's stdout
    extra_env: dict[str, str] = field(default_factory=dict)
    # Seconds for every service to answer; a loaded CI box needs more than an idle laptop.
    ready_timeout: float = 120


class Stack:
    """The platform as `medimg run` starts it; usable as a context manager by tests."""

    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self.servers: embedded.EmbeddedServers | None = None
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.env: dict[str, str] = {}
        self.admin_key: str | None = None
        self._control: Celery | None = None  # broker client for worker pings

    @property
    def api_url(self) -> str:
        return f"http://{self.config.api_host}:{self.config.api_port}"

    def start(self) -> Stack:
        cfg = self.config
        cfg.data_dir.mkdir(parents=True, exist_ok=True)
        if not port_is_free(cfg.api_host, cfg.api_port):
            raise RuntimeError(f"port {cfg.api_port} is in use; pass --port to use another")
        if cfg.worker_metrics_port and not port_is_free("127.0.0.1", cfg.worker_metrics_port):
            cfg.worker_metrics_port = free_port()
        if cfg.dicom_port and not port_is_free(cfg.api_host, cfg.dicom_port):
            raise RuntimeError(f"DICOM port {cfg.dicom_port} is in use; pass --dicom-port")
        if not port_is_free("127.0.0.1", cfg.gateway_http_port):
            cfg.gateway_http_port = free_port()
        database_url = os.environ.get("DATABASE_URL")
        redis_url = os.environ.get("REDIS_URL")
        if not (database_url and redis_url):
            self.servers = embedded.start(
                cfg.data_dir,
                postgres=not database_url,
                valkey=not redis_url,
                redis_port=self._redis_port(),
            )
            database_url = database_url or self.servers.database_url
            redis_url = redis_url or self.servers.redis_url
        assert database_url and redis_url
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "MEDIMG_DATA_DIR": str(cfg.data_dir.resolve()),
            "PYTHONUNBUFFERED": "1",
            **cfg.extra_env,
        }
        try:
            self.run_once(services.migrate())
            self.admin_key = self._first_admin_key()
            self.spawn(services.api(cfg.api_host, cfg.api_port))
            self.spawn(services.worker("cpu", cfg.worker_concurrency, cfg.worker_metrics_port))
            self.spawn(services.dataset_worker())
            if cfg.with_trainer:
                self.spawn(services.trainer())
            if cfg.dicom_port:
                self.spawn(services.gateway(cfg.api_host, cfg.dicom_port, cfg.gateway_http_port))
            self.wait_ready(cfg.ready_timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _first_admin_key(self) -> str | None:
        """On a database without keys, create an admin key and print it, once."""
        engine = make_engine(psycopg_url(self.env["DATABASE_URL"]))
        try:
            with make_sessionmaker(engine)() as session:
                if any_key_exists(session):
                    return None
                _, plaintext = create_key(
                    session,
                    tenant="default",
                    name="admin (first run)",
                    # Whoever starts the platform operates it: shared models, all tenants.
                    scopes=[Scope.ADMIN, Scope.PLATFORM_ADMIN],
                )
                session.commit()
        finally:
            engine.dispose()
        print(
            "\n  First run: an admin API key was created for tenant 'default'. It is shown\n"
            f"  only now; store it safely:\n\n    {plaintext}\n\n"
            "  More keys: .venv/bin/medimg keys create --tenant NAME --name WHAT\n",
            flush=True,
        )
        return plaintext

    def _redis_port(self) -> int | None:
        port = self.config.redis_port
        return port if port is None or port_is_free("127.0.0.1", port) else None

    def _output(self, name: str) -> IO[bytes] | int:
        if self.config.log_dir is None:
            return subprocess.PIPE
        self.config.log_dir.mkdir(parents=True, exist_ok=True)
        return (self.config.log_dir / f"{name}.log").open("ab")

    def run_once(self, service: Service) -> None:
        out = self._output(service.name)
        result = subprocess.run(
            service.argv, env={**self.env, **service.env}, stdout=out, stderr=subprocess.STDOUT
        )
        if out == subprocess.PIPE:
            sys.stdout.buffer.write(_prefix(service.name, result.stdout or b""))
        if result.returncode != 0:
            raise RuntimeError(f"{service.name} failed with exit code {result.returncode}")

    def spawn(self, service: Service) -> subprocess.Popen[bytes]:
        out = self._output(service.name)
        proc = subprocess.Popen(
            service.argv,
            env={**self.env, **service.env},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches the launcher, which stops things in order
            preexec_fn=_die_with_parent,
        )
        if out == subprocess.PIPE:
            threading.Thread(target=_pump, args=(service.name, proc), daemon=True).start()
        self.processes[service.name] = proc
        return proc

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        self._wait(lambda: self._http_ok("/readyz"), deadline, "the API to become ready")
        names = ["cpu", "datasets"] + (["train"] if self.config.with_trainer else [])
        self._wait(lambda: self._workers_answer(names), deadline, "the workers to start")
        if self.config.dicom_port:
            url = f"http://127.0.0.1:{self.config.gateway_http_port}/healthz"
            self._wait(lambda: self._url_ok(url), deadline, "the DICOM gateway to listen")

    def _wait(self, check: Callable[[], bool], deadline: float, what: str) -> None:
        while time.monotonic() < deadline:
            self.check_alive()
            if check():
                return
            time.sleep(0.25)
        raise TimeoutError(f"timed out waiting for {what}")

    def _url_ok(self, url: str) -> bool:
        try:
            return httpx.get(url, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def _http_ok(self, path: str) -> bool:
        try:
            return httpx.get(self.api_url + path, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def _workers_answer(self, names: list[str]) -> bool:
        if self._control is None:
            self._control = make_celery("launcher", self.env["REDIS_URL"])
        replies = self._control.control.ping(timeout=1.0)
        answered = {next(iter(r)).split("@")[0] for r in replies}
        return set(names) <= answered

    def check_alive(self) -> None:
        for name, proc in self.processes.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with code {proc.returncode}")

    def stop(self, timeout: float = 20) -> None:
        """SIGTERM every service (workers finish their current task), then stop servers."""
        for proc in self.processes.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for name, proc in self.processes.items():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in time; killing it", name)
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.processes.clear()
        if self._control is not None:
            self._control.close()
            self._control = None
        if self.servers is not None:
            self.servers.stop()
            self.servers = None

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _prefix(name: str, data: bytes) -> bytes:
    tag = f"{name:>10} | ".encode()
    return b"".join(tag + line for line in data.splitlines(keepends=True))


def _pump(name: str, proc: subprocess.Popen[bytes]) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        sys.stdout.buffer.write(_prefix(name, line))
        sys.stdout.buffer.flush()
