"""Test data for jobs, datasets and models, in one place (issue 11 item 6).

Two kinds: requests through the real API (`submit_job`, `upload_dataset`, ...), and bare
database rows for tests that drive workers, leases or the reconciler directly
(`bare_job`, `bare_training_job`, `bare_dataset_version`): those carry no broker message
and, for jobs, sit on `IDLE_QUEUE`, which no worker of the test stack consumes.
"""

from __future__ import annotations

import csv
import io
import time
import uuid
import zipfile
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from cli.stack import Stack
from shared.config import Settings
from shared.db.models import (
    DEFAULT_TENANT_ID,
    Dataset,
    DatasetStatus,
    DatasetVersion,
    Job,
    Model,
    TrainingJob,
)

FIXTURES = Path(__file__).parent / "fixtures"
PNEUMONIA = FIXTURES / "pneumoniamnist"
MODEL = "pneumonia-resnet18"  # the bundled classifier every stack registers
ZIP = "application/zip"
# No worker of the test stack consumes this queue: rows put there stay as the test left them.
IDLE_QUEUE = "gpu"

FileParts = list[tuple[str, tuple[str, bytes, str]]]


def stack_settings(stack: Stack, **overrides: Any) -> Settings:
    """Settings of the test stack's servers, for code the tests run in-process."""
    env = stack.env
    return Settings(
        DATABASE_URL=env["DATABASE_URL"],
        REDIS_URL=env["REDIS_URL"],
        data_dir=Path(env["MEDIMG_DATA_DIR"]),
        **overrides,
    )


# ---------------------------------------------------------------- jobs through the API


def labelled_pngs() -> list[tuple[Path, str]]:
    """The PneumoniaMNIST fixture PNGs with their labels ("normal" / "pneumonia")."""
    with (PNEUMONIA / "labels.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    names = {"0": "normal", "1": "pneumonia"}
    return [(PNEUMONIA / r["file"], names[r["label"]]) for r in rows if r["file"].endswith(".png")]


def image_files(*paths: Path) -> FileParts:
    """Multipart `files` parts of a job submission."""
    return [("files", (p.name, p.read_bytes(), "application/octet-stream")) for p in paths]


def submit_job(
    api: httpx.Client, files: FileParts, model: str = MODEL, **form: str
) -> httpx.Response:
    """POST /v1/jobs as a client would; the response is returned unchecked."""
    return api.post("/v1/jobs", data={"model": model, **form}, files=files)


def assert_problem(response: httpx.Response, status: int, type_suffix: str) -> dict[str, Any]:
    """The response is an RFC 9457 problem of this status and type, without a traceback."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["type"].endswith(type_suffix), body
    assert body["detail"] and "Traceback" not in body["detail"]
    return body


# ---------------------------------------------------------------- datasets through the API


def upload_dataset(client: httpx.Client, data: bytes, name: str, **form: Any) -> httpx.Response:
    """POST /v1/datasets with a zip; the response is returned unchecked."""
    fields = {"name": name, **{k: str(v) for k, v in form.items()}}
    return client.post("/v1/datasets", data=fields, files={"file": ("data.zip", data, ZIP)})


def wait_for_import(client: httpx.Client, url: str, timeout: float = 90) -> dict[str, Any]:
    """Poll a dataset version until it is no longer `importing`."""
    deadline = time.monotonic() + timeout
    version: dict[str, Any] = {}
    while time.monotonic() < deadline:
        version = client.get(url).raise_for_status().json()
        if version["status"] != "importing":
            return version
        time.sleep(0.2)
    raise AssertionError(f"import at {url} not finished after {timeout}s: {version}")


def imported_dataset(client: httpx.Client, data: bytes, name: str, **form: Any) -> dict[str, Any]:
    """Upload and wait: the final version (ready or failed)."""
    response = upload_dataset(client, data, name, **form)
    assert response.status_code == 202, response.text
    return wait_for_import(client, response.headers["Location"])


def dataset_items(client: httpx.Client, version: dict[str, Any]) -> list[dict[str, Any]]:
    """Every item of a dataset version, page by page."""
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        params = {"limit": 25, **({"cursor": cursor} if cursor else {})}
        page = client.get(f"{version['url']}/items", params=params).raise_for_status().json()
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return items


def zip_of(entries: list[tuple[zipfile.ZipInfo | str, bytes]]) -> bytes:
    """A deflated zip of (name or ZipInfo, data) entries."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for info, data in entries:
            archive.writestr(info, data)
    return buffer.getvalue()


def deid_secret(stack: Stack) -> bytes:
    """The stack's de-identification secret (persisted by Settings.uid_salt on first use)."""
    configured = stack.env.get("MEDIMG_DEIDENTIFY_UID_SALT")
    if configured:
        return configured.encode()
    return (stack.config.data_dir / "secrets" / "deidentify-uid-salt").read_text().strip().encode()


# ---------------------------------------------------------------- bare rows


def bare_job(db: sessionmaker[Session], **values: Any) -> uuid.UUID:
    """An inference job of the bundled model on the idle queue, without images or message."""
    with db() as s:
        model = s.scalar(select(Model).where(Model.name == MODEL))
        assert model is not None
        job = Job(
            tenant_id=DEFAULT_TENANT_ID,
            model_name=MODEL,
            model_version_id=model.versions[-1].id,
            queue=IDLE_QUEUE,
            image_count=0,
            **values,
        )
        s.add(job)
        s.commit()
        return job.id


def bare_dataset_version(
    db: sessionmaker[Session], *, name: str | None = None, **values: Any
) -> uuid.UUID:
    """A dataset version row (default `importing`) whose upload does not exist."""
    with db() as s:
        dataset = Dataset(
            tenant_id=DEFAULT_TENANT_ID,
            name=name or f"bare-{uuid.uuid4().hex[:8]}",
            task="classification",
        )
        version = DatasetVersion(
            dataset=dataset,
            version=1,
            source_format="folders",
            upload_key="uploads/missing.zip",
            upload_sha256="0" * 64,
            **values,
        )
        s.add_all([dataset, version])
        s.commit()
        return version.id


def bare_training_job(db: sessionmaker[Session], **values: Any) -> uuid.UUID:
    """A training job on the idle queue, on a placeholder (failed) dataset version."""
    version_id = bare_dataset_version(db, status=DatasetStatus.FAILED)
    with db() as s:
        job = TrainingJob(
            tenant_id=DEFAULT_TENANT_ID,
            task="classification",
            dataset_version_id=version_id,
            architecture="resnet18",
            start_from="random",
            monitor="auroc",
            model_name="bare-training-job",
            queue=IDLE_QUEUE,
            **values,
        )
        s.add(job)
        s.commit()
        return job.id
