"""Session-wide real stack: embedded PostgreSQL + Valkey, migrations, API and workers.

The stack is started with the same code and commands as `make run` (cli.stack), on
free ports and a temporary data folder. With DATABASE_URL and REDIS_URL set, the
tests use those servers instead of embedded ones.
"""

from __future__ import annotations

import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.orm import Session, sessionmaker

from cli.stack import Stack, StackConfig, free_port
from shared.apikeys import create_key
from shared.config import psycopg_url
from shared.db.session import make_engine, make_sessionmaker

FIXTURES = Path(__file__).parent / "fixtures"
MAX_REQUEST_BYTES = 24 * 1024 * 1024
# Callbacks to local receivers (tests/api/test_callbacks.py): 127.0.0.2 allow-listed by
# address; `localhost` by name only, so its loopback address is still refused. Fast retries.
CALLBACK_SECRET = "test-callback-secret"
CALLBACK_ENV = {
    "MEDIMG_CALLBACK_ALLOWED_HOSTS": "127.0.0.2,localhost",
    "MEDIMG_CALLBACK_ALLOW_HTTP": "true",
    "MEDIMG_CALLBACK_SECRET": CALLBACK_SECRET,
    "MEDIMG_CALLBACK_TIMEOUT_SECONDS": "2",
    "MEDIMG_CALLBACK_BACKOFF_SECONDS": "0.3",
    "MEDIMG_CALLBACK_POLL_SECONDS": "0.2",
    "MEDIMG_IDEMPOTENCY_CLEANUP_SECONDS": "1",
}


def pytest_configure(config: pytest.Config) -> None:
    """A base temp folder of this run's own unless --basetemp is given.

    pytest's default numbered folders keep only the newest three, deleting older ones even
    while another run still uses them: concurrent runs on one machine (several checkouts,
    CI beside a developer) then lose their PostgreSQL data folder mid-run.
    """
    if config.option.basetemp is None and not hasattr(config, "workerinput"):
        config.option.basetemp = tempfile.mkdtemp(prefix="medimg-pytest-")
        config.add_cleanup(lambda: shutil.rmtree(config.option.basetemp, ignore_errors=True))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-gpu", action="store_true", help="run tests marked gpu")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    import torch

    if config.getoption("--run-gpu") or torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (run on a GPU machine or --run-gpu)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("stack")
    config = StackConfig(
        data_dir=root / "data",
        api_port=free_port(),
        redis_port=None,
        worker_concurrency=1,
        worker_metrics_port=free_port(),
        dicom_port=free_port(),
        gateway_http_port=free_port(),
        log_dir=root / "logs",
        # Generous: several suites may share the 2-core box (helpers, CI).
        ready_timeout=600,
        # Small enough that a test can exceed it quickly.
        extra_env={
            "MEDIMG_MAX_REQUEST_BYTES": str(MAX_REQUEST_BYTES),
            **CALLBACK_ENV,
            # The session's Orthanc (tests/integration/orthanc.py) on loopback, over http.
            "MEDIMG_DICOMWEB_ALLOWED_HOSTS": "127.0.0.1",
            "MEDIMG_DICOMWEB_ALLOW_HTTP": "true",
            # Local FHIR servers of tests/integration/test_fhir_delivery.py, over http.
            "MEDIMG_FHIR_ALLOWED_HOSTS": "127.0.0.1",
            "MEDIMG_FHIR_ALLOW_HTTP": "true",
            "MEDIMG_DICOM_STUDY_QUIET_SECONDS": "1",
            "MEDIMG_DICOM_DELIVERY_BACKOFF_SECONDS": "0.5",
            "MEDIMG_DICOM_DELIVERY_BACKOFF_MAX_SECONDS": "2",
            # The learning-loop scheduler (issue 17) passes every second.
            "MEDIMG_LEARNING_INTERVAL_SECONDS": "1",
        },
    )
    s = Stack(config)
    try:
        s.start()
    except BaseException:
        _dump_logs(config.log_dir)
        raise
    yield s
    s.stop()


def _dump_logs(log_dir: Path | None) -> None:
    if log_dir and log_dir.is_dir():
        for log in sorted(log_dir.glob("*.log")):
            print(f"===== {log.name} =====\n{log.read_text()[-5000:]}")


@pytest.fixture(scope="session")
def db(stack: Stack) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(psycopg_url(stack.env["DATABASE_URL"]))
    yield make_sessionmaker(engine)
    engine.dispose()


KeyFactory = Callable[..., str]


@pytest.fixture(scope="session")
def make_key(db: sessionmaker[Session]) -> KeyFactory:
    """Create an API key in the real database; returns its plaintext."""

    def make(
        tenant: str = "default",
        scopes: tuple[str, ...] = ("jobs:write", "jobs:read"),
        rate_limit: int | None = 1_000_000,
    ) -> str:
        with db() as session:
            key, plaintext = create_key(
                session, tenant=tenant, name=f"test-{uuid.uuid4().hex[:6]}", scopes=scopes
            )
            key.rate_limit_per_minute = rate_limit
            session.commit()
        return plaintext

    return make


def client_for(stack: Stack, key: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=stack.api_url, timeout=30, headers=headers)


@pytest.fixture(scope="session")
def api(stack: Stack, make_key: KeyFactory) -> Iterator[httpx.Client]:
    """A client with an admin key of the default tenant that is also the platform operator."""
    with client_for(stack, make_key(scopes=("admin", "platform:admin"))) as client:
        yield client


def wait_for_job(api: httpx.Client, job_id: str, timeout: float = 120) -> dict[str, Any]:
    """Poll until the job is final, as a client would."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job: dict[str, Any] = api.get(f"/v1/jobs/{job_id}").raise_for_status().json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} not finished after {timeout}s: {job}")
