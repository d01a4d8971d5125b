"""FHIR destinations end to end: a study pushed to the gateway is routed, and its report is
posted as a transaction to a real (local) HTTP server that validates it against HL7's R4 JSON
schema. No FHIR server (HAPI, ...) is installable here, so the receiver is a small one of
ours: it checks the schema, stores what the PUTs name and answers a transaction-response."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pydicom
import pytest
from pynetdicom import AE

from cli.stack import Stack
from tests.conftest import FIXTURES, KeyFactory, client_for, wait_for_job
from tests.fhir_server import FhirServer, serve

CXR = FIXTURES / "pneumoniamnist" / "test_0000_pneumonia.dcm"


@pytest.fixture(scope="module")
def fhir_server() -> Iterator[FhirServer]:
    with serve() as state:
        yield state


@pytest.fixture(scope="module")
def admin(stack: Stack, make_key: KeyFactory) -> Iterator[httpx.Client]:
    with client_for(stack, make_key(tenant=f"fhir-{uuid.uuid4().hex[:6]}", scopes=("admin",))) as c:
        yield c


def _poll(fetch: Any, done: Any, timeout: float = 90, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = fetch()
        if done(value):
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}: last {value}")


def test_destination_checks(admin: httpx.Client, fhir_server: FhirServer) -> None:
    refused = admin.post(
        "/v1/dicom/destinations",
        json={"name": "elsewhere", "kind": "fhir", "base_url": "http://10.9.8.7/fhir"},
    )
    assert refused.status_code == 422, refused.text
    assert "MEDIMG_FHIR_ALLOWED_HOSTS" in refused.json()["detail"]
    no_secret = admin.post(
        "/v1/dicom/destinations",
        json={"name": "x", "kind": "fhir", "base_url": fhir_server.url, "auth": "bearer"},
    )
    assert no_secret.status_code == 422


def test_routed_study_report_is_posted_once_after_a_failure(
    admin: httpx.Client, stack: Stack, fhir_server: FhirServer
) -> None:
    ae_title = f"FH{uuid.uuid4().hex[:8].upper()}"
    admin.post("/v1/dicom/calling-aes", json={"ae_title": ae_title}).raise_for_status()
    dest = admin.post(
        "/v1/dicom/destinations",
        json={"name": "ehr", "kind": "fhir", "base_url": fhir_server.url + "/",
              "auth": "bearer", "secret": "s3cret-token"},
    )  # fmt: skip
    assert dest.status_code == 201, dest.text
    public = dest.json()
    assert public["verify_tls"] is True and public["has_secret"] is True
    assert "secret" not in public and public["base_url"] == fhir_server.url
    admin.post(
        "/v1/dicom/rules",
        json={"name": "cxr-fhir", "match": {"calling_ae": [ae_title]},
              "model": "pneumonia-resnet18", "destinations": ["ehr"]},
    ).raise_for_status()  # fmt: skip

    ds = pydicom.dcmread(CXR)
    ds.StudyInstanceUID = pydicom.uid.generate_uid()
    ds.SeriesInstanceUID = pydicom.uid.generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    ds.PatientID = f"MRN-{uuid.uuid4().hex[:6]}"
    fhir_server.fail_next = 1  # the first attempt finds the server down
    time.sleep(2.5)  # the listener refreshes its allowed AE titles every 2 s
    ae = AE(ae_title=ae_title)
    ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", stack.config.dicom_port or 0, ae_title="MEDIMG")
    assert assoc.is_established
    assert assoc.send_c_store(ds).Status == 0x0000
    assoc.release()

    study = _poll(
        lambda: admin.get("/v1/dicom/studies", params={"status": "routed"}).json()["items"],
        lambda items: any(i["study_instance_uid"] == ds.StudyInstanceUID for i in items),
        what="the routed study",
    )
    job_id = next(i["job_id"] for i in study if i["study_instance_uid"] == ds.StudyInstanceUID)
    job = wait_for_job(admin, job_id)
    assert job["status"] == "succeeded", job
    view = _poll(
        lambda: admin.get(f"/v1/jobs/{job_id}").json(),
        lambda v: v["dicom_deliveries"] and v["dicom_deliveries"][0]["status"] != "pending"
        and v["dicom_deliveries"][0]["status"] != "waiting",
        what="the FHIR delivery",
    )  # fmt: skip
    (delivery,) = view["dicom_deliveries"]
    assert delivery["status"] == "delivered", delivery
    assert delivery["kind"] == "fhir" and delivery["destination"] == "ehr"
    assert delivery["attempts"] == 2  # 503 first, then delivered: retried, posted once more

    # Both attempts reached the server with the token; the second validated and was stored.
    assert len(fhir_server.posts) == 2 and fhir_server.errors == [[]]
    assert all(h.get("Authorization") == "Bearer s3cret-token" for h in fhir_server.headers)
    kinds = sorted(key.split("/")[0] for key in fhir_server.resources)
    assert kinds == ["Device", "DiagnosticReport", "Observation"]
    report = next(r for k, r in fhir_server.resources.items() if k.startswith("Diagnostic"))
    # The hospital's copy names its own study and patient (re-identified on the way out).
    assert report["imagingStudy"][0]["identifier"]["value"] == f"urn:oid:{ds.StudyInstanceUID}"
    assert report["subject"]["identifier"]["value"] == ds.PatientID
    device = next(r for k, r in fhir_server.resources.items() if k.startswith("Device"))
    assert device["deviceName"][0]["name"] == job["model"]["ref"]
    (obs,) = (r for k, r in fhir_server.resources.items() if k.startswith("Observation"))
    assert obs["valueCodeableConcept"]["coding"][0]["code"] == job["images"][0]["output"]["label"]

    # The API's view has the same resource ids, de-identified (no patient, hashed study UID).
    mine = admin.get(f"/v1/jobs/{job_id}/fhir").json()
    ids = {f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in mine["entry"]}
    assert ids == set(fhir_server.resources)
    (api_report,) = (e["resource"] for e in mine["entry"]
                     if e["resource"]["resourceType"] == "DiagnosticReport")  # fmt: skip
    assert "subject" not in api_report
    assert api_report["imagingStudy"][0]["identifier"]["value"] != f"urn:oid:{ds.StudyInstanceUID}"
