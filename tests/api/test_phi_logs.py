"""Patient identifiers reach neither the logs nor the stored image."""

from __future__ import annotations

from io import BytesIO

import httpx
import pydicom
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from cli.stack import Stack
from shared.db.models import JobImage
from tests.conftest import FIXTURES, wait_for_job

PATIENT_NAME, PATIENT_ID = "Zyxwarski^Philomena", "MRN-8675309"
FILENAME = "Zyxwarski_Philomena_chest.dcm"


def _dicom_with_identifiers() -> bytes:
    ds = pydicom.dcmread(FIXTURES / "pneumoniamnist" / "test_0000_pneumonia.dcm")
    ds.PatientName, ds.PatientID = PATIENT_NAME, PATIENT_ID
    out = BytesIO()
    ds.save_as(out)
    return out.getvalue()


def test_no_log_line_or_stored_blob_carries_patient_identifiers(
    stack: Stack, api: httpx.Client, db: sessionmaker[Session]
) -> None:
    files = [("files", (FILENAME, _dicom_with_identifiers(), "application/dicom"))]
    created = api.post("/v1/jobs", data={"model": "pneumonia-resnet18"}, files=files)
    assert created.status_code == 202, created.text
    job = wait_for_job(api, created.json()["id"])
    assert job["status"] == "succeeded"
    # A rejected upload names the file in the response, never in the logs.
    bad = [("files", (FILENAME, b"\x00" * 300, "application/dicom"))]
    assert api.post("/v1/jobs", data={"model": "pneumonia-resnet18"}, files=bad).is_client_error

    with db() as session:
        key = session.scalar(select(JobImage.storage_key).where(JobImage.job_id == job["id"]))
    assert key is not None
    stored = next(stack.config.data_dir.rglob(key.rsplit("/", 1)[-1])).read_bytes()
    assert PATIENT_NAME.encode() not in stored and PATIENT_ID.encode() not in stored
    assert pydicom.dcmread(BytesIO(stored)).PatientIdentityRemoved == "YES"

    logs = sorted(stack.config.log_dir.glob("*.log"))  # type: ignore[union-attr]
    assert logs and any(job["id"] in log.read_text() for log in logs)
    for log in logs:
        text = log.read_text(errors="replace")
        for secret in ("Zyxwarski", "Philomena", PATIENT_ID):
            assert secret not in text, f"{secret!r} found in {log.name}"
