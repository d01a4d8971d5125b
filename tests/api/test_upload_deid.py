"""Job uploads: PNG/JPEG text metadata stripped from the stored blob (pixels identical), DICOM
burned-in annotation flagged in the job view, or refused with a 422 under policy `refuse`."""

from __future__ import annotations

import asyncio
from io import BytesIO
from pathlib import Path

import httpx
import numpy as np
import pydicom
import pytest
from PIL import Image
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from starlette.datastructures import Headers, UploadFile

from api.uploads import store_uploads
from cli.stack import Stack
from shared.config import Settings
from shared.db.models import JobImage
from shared.errors import InvalidImage
from shared.storage import BlobStore
from tests.api.test_dataset_deid import NAME, _jpeg, _png
from tests.conftest import FIXTURES

DICOM = FIXTURES / "pneumoniamnist" / "test_0000_pneumonia.dcm"


def _burned_in_dicom() -> bytes:
    ds = pydicom.dcmread(DICOM)
    ds.PatientName, ds.BurnedInAnnotation = NAME, "YES"
    out = BytesIO()
    ds.save_as(out)
    return out.getvalue()


def test_job_uploads_are_stored_without_metadata_and_burned_in_is_flagged(
    stack: Stack, api: httpx.Client, db: sessionmaker[Session]
) -> None:
    sent = {"a.png": _png(101), "b.jpg": _jpeg(102), "c.dcm": _burned_in_dicom()}
    files = [("files", (name, data, "application/octet-stream")) for name, data in sent.items()]
    response = api.post("/v1/jobs", data={"model": "pneumonia-resnet18"}, files=files)
    assert response.status_code == 202, response.text
    job = api.get(f"/v1/jobs/{response.json()['id']}").raise_for_status().json()
    flags = {image["filename"]: image["burned_in_annotation"] for image in job["images"]}
    assert flags == {"a.png": False, "b.jpg": False, "c.dcm": True}
    with db() as session:
        keys = dict(
            session.execute(
                select(JobImage.filename, JobImage.storage_key).where(JobImage.job_id == job["id"])
            ).all()
        )
    store = stack.config.data_dir / "store"
    for name, original in sent.items():
        stored = (store / keys[name]).read_bytes()
        assert b"Zyxwv" not in stored, name
        if name != "c.dcm":
            with Image.open(BytesIO(original)) as a, Image.open(BytesIO(stored)) as b:
                np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert pydicom.dcmread(store / keys["c.dcm"]).BurnedInAnnotation == "YES"


def test_burned_in_dicom_is_refused_under_policy_refuse(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, deidentify_burned_in="refuse")
    upload = UploadFile(
        BytesIO(_burned_in_dicom()),
        filename="c.dcm",
        headers=Headers({"content-type": "application/dicom"}),
    )
    with pytest.raises(InvalidImage, match="BurnedInAnnotation") as refused:
        asyncio.run(store_uploads([upload], settings=settings, store=BlobStore(tmp_path)))
    assert refused.value.status == 422  # problem+json 422 through api.problems
    assert not any(p.is_file() for p in tmp_path.rglob("*.dcm"))  # nothing stored
