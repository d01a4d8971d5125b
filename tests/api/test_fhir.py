"""GET /v1/jobs/{id}/fhir through the real stack: Bundles of real jobs validate against HL7's
R4 JSON schema and say what the JSON result says."""

from __future__ import annotations

import io
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from cli.stack import Stack
from shared.config import Settings
from shared.db.base import utcnow
from shared.db.models import Job, JobStatus, Model, ModelVersion
from shared.imaging.deid import hashed_uid
from tests.conftest import FIXTURES, KeyFactory, client_for, wait_for_job
from tests.factories import MODEL as CLASSIFIER
from tests.fhir_schema import schema_errors
from tests.worker.test_detection import MODEL as DETECTOR
from tests.worker.test_detection import _dicom_of_jpeg

CXR = FIXTURES / "pneumoniamnist" / "test_0000_pneumonia.dcm"
PNG = FIXTURES / "pneumoniamnist" / "test_0001_normal.png"
FHIR_JSON = "application/fhir+json"


def _run(api: httpx.Client, model: str, name: str, data: bytes) -> dict[str, Any]:
    response = api.post("/v1/jobs", data={"model": model}, files=[("files", (name, data, "x/y"))])
    assert response.status_code == 202, response.text
    job = wait_for_job(api, response.json()["id"], timeout=180)
    assert job["status"] == "succeeded", job
    return job


def _bundle(api: httpx.Client, job_id: str) -> dict[str, Any]:
    response = api.get(f"/v1/jobs/{job_id}/fhir")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == FHIR_JSON
    bundle: dict[str, Any] = response.json()
    assert schema_errors(bundle) == []
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "collection"
    return bundle


def _of(bundle: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == kind]


def _parts(obs: dict[str, Any], code: str) -> list[dict[str, Any]]:
    return [p for p in obs["component"] if p["code"]["coding"][0]["code"] == code]


def _stored_study_uid(stack: Stack, original: str) -> str:
    """The StudyInstanceUID the stored (de-identified) instance carries."""
    salt = Settings(data_dir=Path(stack.env["MEDIMG_DATA_DIR"])).uid_salt()
    return hashed_uid(original, salt)


def _check_report(bundle: dict[str, Any], job: dict[str, Any], study: str | None) -> None:
    (report,) = _of(bundle, "DiagnosticReport")
    assert report["status"] == "preliminary"
    assert {c["code"] for cat in report["category"] for c in cat["coding"]} == {"RAD", "LP29684-5"}
    assert report["identifier"][0]["value"] == job["id"]
    (device,) = _of(bundle, "Device")
    ref = job["model"]["ref"]
    assert device["deviceName"][0]["name"] == ref and device["manufacturer"] == "medimg"
    assert device["version"][0]["value"] == str(job["model"]["version"])
    urls = {e["fullUrl"]: e["resource"] for e in bundle["entry"]}
    observations = _of(bundle, "Observation")
    assert [urls[r["reference"]] for r in report["result"]] == observations
    for obs in observations:
        assert urls[obs["device"]["reference"]] is device
        assert obs["status"] == "preliminary"
    if study is None:
        assert "imagingStudy" not in report
        assert all("derivedFrom" not in o for o in observations)
    else:
        expected = {"system": "urn:dicom:uid", "value": f"urn:oid:{study}"}
        assert [s["identifier"] for s in report["imagingStudy"]] == [expected]
        assert all(o["derivedFrom"][0]["identifier"] == expected for o in observations)


def test_classification_on_dicom(api: httpx.Client, stack: Stack) -> None:
    job = _run(api, CLASSIFIER, CXR.name, CXR.read_bytes())
    bundle = _bundle(api, job["id"])
    original = str(pydicom.dcmread(CXR, stop_before_pixels=True).StudyInstanceUID)
    _check_report(bundle, job, _stored_study_uid(stack, original))
    out = job["images"][0]["output"]
    (obs,) = _of(bundle, "Observation")
    assert obs["valueCodeableConcept"]["coding"][0]["code"] == out["label"]
    probabilities = {
        p["code"]["text"].removeprefix("Probability of "): p["valueQuantity"]["value"]
        for p in _parts(obs, "probability")
    }
    assert probabilities == out["probabilities"]
    assert all(p["valueQuantity"]["code"] == "1" for p in _parts(obs, "probability"))
    point = out["operating_point"]
    assert _parts(obs, "threshold")[0]["valueQuantity"]["value"] == point["threshold"]
    positive = out["probabilities"]["pneumonia"] >= point["threshold"]
    assert obs["interpretation"][0]["coding"][0]["code"] == ("POS" if positive else "NEG")
    assert (out["label"] == "pneumonia") is positive
    # Reading it again gives the same resources (stable ids); each read is audited once.
    assert _bundle(api, job["id"]) == bundle
    events = api.get("/v1/audit", params={"action": "job.fhir.read"}).json()["items"]
    assert sum(e["resource_id"] == job["id"] for e in events) == 2


def _dicom_smear() -> bytes:
    ds = pydicom.dcmread(io.BytesIO(_dicom_of_jpeg()))
    ds.StudyInstanceUID = pydicom.uid.generate_uid()
    ds.SeriesInstanceUID = pydicom.uid.generate_uid()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_detection_boxes_match_the_json_result(api: httpx.Client, stack: Stack) -> None:
    data = _dicom_smear()
    job = _run(api, DETECTOR, "smear.dcm", data)
    bundle = _bundle(api, job["id"])
    original = str(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).StudyInstanceUID)
    _check_report(bundle, job, _stored_study_uid(stack, original))
    detections = job["images"][0]["output"]["detections"]
    observations = _of(bundle, "Observation")
    assert len(detections) >= 5 and len(observations) == len(detections)
    for obs, det in zip(observations, detections, strict=True):
        assert obs["valueCodeableConcept"]["text"] == det["label"]
        assert _parts(obs, "score")[0]["valueQuantity"]["value"] == det["score"]
        box = [_parts(obs, f"bbox-{k}")[0]["valueQuantity"]["value"]
               for k in ("xmin", "ymin", "xmax", "ymax")]  # fmt: skip
        assert box == det["box"]
        sizes = [p["valueQuantity"] for p in obs["component"]
                 if p["code"]["coding"][0]["code"] in ("103355008", "121207")]  # fmt: skip
        assert [s["value"] for s in sizes] == det["size_mm"]
        assert all(s["code"] == "mm" for s in sizes)


def test_png_job_has_a_report_without_imaging_study(api: httpx.Client) -> None:
    job = _run(api, CLASSIFIER, PNG.name, PNG.read_bytes())
    bundle = _bundle(api, job["id"])
    _check_report(bundle, job, None)
    assert len(_of(bundle, "Observation")) == 1


@pytest.fixture
def running_job(db: sessionmaker[Session], api: httpx.Client) -> Any:
    """A job of the default tenant that a worker holds (unexpired lease): not final."""
    with db() as session:
        tenant_id = uuid.UUID(api.get("/v1/me").raise_for_status().json()["tenant_id"])
        version = session.scalars(
            select(ModelVersion).join(Model).where(Model.name == CLASSIFIER)
        ).first()
        assert tenant_id and version
        job = Job(
            id=uuid.uuid4(), tenant_id=tenant_id, status=JobStatus.RUNNING, model_name=CLASSIFIER,
            model_version_id=version.id, params={}, priority="routine", queue="cpu",
            image_count=0, started_at=utcnow(), lease_expires_at=utcnow() + timedelta(hours=1),
        )  # fmt: skip
        session.add(job)
        session.commit()
        yield job.id
        job.status, job.finished_at, job.lease_expires_at = JobStatus.CANCELLED, utcnow(), None
        session.commit()


def test_unfinished_job_is_409_and_other_tenants_404(
    api: httpx.Client, running_job: uuid.UUID, stack: Stack, make_key: KeyFactory
) -> None:
    response = api.get(f"/v1/jobs/{running_job}/fhir")
    assert response.status_code == 409, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert "running" in response.json()["detail"]
    with client_for(stack, make_key(tenant=f"other-{uuid.uuid4().hex[:6]}")) as other:
        answer = other.get(f"/v1/jobs/{running_job}/fhir")
        assert answer.status_code == 404
        assert answer.headers["content-type"] == "application/problem+json"
