"""The DICOM gateway against real servers: pynetdicom as a modality, Orthanc as the PACS."""

from __future__ import annotations

import io
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from cli.stack import Stack
from tests.conftest import FIXTURES, KeyFactory, client_for, wait_for_job
from tests.dicom_helpers import assert_valid
from tests.integration.orthanc import AE_TITLE, Orthanc

CXR = sorted((FIXTURES / "pneumoniamnist").glob("*.dcm"))[:2]


def _poll(fetch: Any, done: Any, timeout: float = 60, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = fetch()
        if done(value):
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}: last {value}")


@pytest.fixture(scope="module")
def admin(stack: Stack, make_key: KeyFactory) -> httpx.Client:
    """An admin of a tenant of its own, so rules of other tests never interfere."""
    return client_for(stack, make_key(tenant=f"pacs-{uuid.uuid4().hex[:6]}", scopes=("admin",)))


@pytest.fixture(scope="module")
def wired(admin: httpx.Client, orthanc: Orthanc) -> dict[str, Any]:
    """Orthanc registered as calling AE, PACS and STOW destination; a CR rule to pneumonia."""
    admin.post("/v1/dicom/calling-aes", json={"ae_title": AE_TITLE}).raise_for_status()
    admin.post(
        "/v1/dicom/pacs", json={"name": "orthanc", "base_url": orthanc.dicomweb}
    ).raise_for_status()
    admin.post(
        "/v1/dicom/destinations", json={"name": "orthanc-stow", "kind": "stow", "pacs": "orthanc"}
    ).raise_for_status()
    rule = admin.post(
        "/v1/dicom/rules",
        json={
            "name": "cxr",
            "match": {"modality": ["CR", "DX"], "sop_class_uid": ["1.2.840.10008.5.1.4.1.1.7"]},
            "model": "pneumonia-resnet18",
            "params": {"target_sensitivity": 0.95},
            "destinations": ["orthanc-stow"],
        },
    )
    assert rule.status_code == 201, rule.text
    return rule.json()


def _upload_to_orthanc(orthanc: Orthanc, path: Path) -> str:
    answer = httpx.post(orthanc.url + "/instances", content=path.read_bytes()).raise_for_status()
    return str(answer.json()["ParentStudy"])


def test_echo_from_registered_ae_and_unknown_ae_refused(
    stack: Stack, wired: dict[str, Any]
) -> None:
    port = stack.config.dicom_port
    assert port
    time.sleep(2.5)  # the listener refreshes its allowed AE titles every 2 s
    for calling, expected in ((AE_TITLE, True), ("STRANGER", False)):
        ae = AE(ae_title=calling)
        ae.add_requested_context(Verification)
        assoc = ae.associate("127.0.0.1", port, ae_title="MEDIMG")
        assert assoc.is_established is expected
        if expected:
            assert assoc.send_c_echo().Status == 0x0000
            assoc.release()


def test_rule_rejects_unsafe_pattern(admin: httpx.Client) -> None:
    bad = admin.post(
        "/v1/dicom/rules",
        json={
            "name": "bad",
            "match": {"study_description": "(a)\\1"},
            "model": "pneumonia-resnet18",
        },
    )
    assert bad.status_code == 422
    assert bad.headers["content-type"].startswith("application/problem+json")


def test_orthanc_push_is_routed_and_sr_comes_back(
    admin: httpx.Client, orthanc: Orthanc, wired: dict[str, Any]
) -> None:
    study = _upload_to_orthanc(orthanc, CXR[0])
    httpx.post(
        orthanc.url + "/modalities/medimg/store", json={"Resources": [study]}, timeout=60
    ).raise_for_status()
    original_uid = str(pydicom.dcmread(CXR[0], stop_before_pixels=True).StudyInstanceUID)
    routed = _poll(
        lambda: admin.get("/v1/dicom/studies", params={"status": "routed"}).json()["items"],
        lambda items: any(i["study_instance_uid"] == original_uid for i in items),
        what="the routed study",
    )
    entry = next(i for i in routed if i["study_instance_uid"] == original_uid)
    assert entry["rule_id"] == wired["id"]
    job = wait_for_job(admin_jobs(admin), entry["job_id"])
    assert job["status"] == "succeeded", job
    assert job["model"]["name"] == "pneumonia-resnet18"
    # One delivery per destination, in the job view; delivered means QIDO-RS found it.
    view = _poll(
        lambda: admin.get(f"/v1/jobs/{job['id']}").json(),
        lambda v: v["dicom_deliveries"] and v["dicom_deliveries"][0]["status"] == "delivered",
        timeout=60,
        what="the STOW-RS delivery",
    )
    (delivery,) = view["dicom_deliveries"]
    assert delivery["destination"] == "orthanc-stow" and delivery["kind"] == "stow"
    # The SR comes back into the hospital's own study (re-identified) and QIDO finds it.
    found = _poll(
        lambda: httpx.get(
            orthanc.dicomweb + f"/studies/{original_uid}/instances",
            params={"Modality": "SR"},
        ),
        lambda r: r.status_code == 200 and r.content and r.json(),
        timeout=90,
        what="the SR in Orthanc",
    ).json()
    assert len(found) == 1
    # It is the job's SR (the UID of the job view and of report.dcm), and WADO-RS returns it.
    sr_uid = found[0]["00080018"]["Value"][0]
    objects = view["dicom_results"]
    assert [(o["kind"], o["sop_instance_uid"]) for o in objects] == [("sr", sr_uid)]
    assert delivery["sop_instance_uids"] == [sr_uid]
    series_uid = found[0]["0020000E"]["Value"][0]
    sr = _wado_instance(orthanc, original_uid, series_uid, sr_uid)
    original = pydicom.dcmread(CXR[0], stop_before_pixels=True)
    assert (sr.StudyInstanceUID, sr.PatientID) == (original_uid, original.PatientID)
    refs = {
        ref.ReferencedSOPInstanceUID
        for series in sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence
        for ref in series.ReferencedSOPSequence
    }
    assert refs == {original.SOPInstanceUID}  # re-identified: the hospital's own instance
    assert_valid(sr)  # dciodvfy and PixelMed (TID 1500)
    # The API's copy (de-identified) is the same object; its download is audited.
    report = admin.get(f"/v1/jobs/{job['id']}/report.dcm")
    assert report.status_code == 200 and report.headers["content-type"] == "application/dicom"
    assert pydicom.dcmread(io.BytesIO(report.content)).SOPInstanceUID == sr_uid
    events = admin.get("/v1/audit", params={"action": "job.report.read"}).json()["items"]
    assert any(e["resource_id"] == job["id"] for e in events), events


def _wado_instance(orthanc: Orthanc, study: str, series: str, instance: str) -> pydicom.Dataset:
    """One instance by WADO-RS (multipart/related; type=application/dicom)."""
    url = f"{orthanc.dicomweb}/studies/{study}/series/{series}/instances/{instance}"
    answer = httpx.get(url, headers={"Accept": 'multipart/related; type="application/dicom"'})
    answer.raise_for_status()
    boundary = answer.headers["content-type"].split("boundary=")[1].split(";")[0].strip('"')
    part = answer.content.split(b"--" + boundary.encode())[1]
    return pydicom.dcmread(io.BytesIO(part.split(b"\r\n\r\n", 1)[1].rstrip(b"\r\n")))


def admin_jobs(admin: httpx.Client) -> httpx.Client:
    return admin


def test_unmatched_study_is_recorded(
    admin: httpx.Client, stack: Stack, wired: dict[str, Any]
) -> None:
    ds = pydicom.dcmread(CXR[1])
    ds.Modality = "MR"
    ds.StudyInstanceUID = pydicom.uid.generate_uid()
    port = stack.config.dicom_port
    assert port
    ae = AE(ae_title=AE_TITLE)
    ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", port, ae_title="MEDIMG")
    assert assoc.is_established
    assert assoc.send_c_store(ds).Status == 0x0000
    assoc.release()
    items = _poll(
        lambda: admin.get("/v1/dicom/studies", params={"status": "unmatched"}).json()["items"],
        lambda items: any(i["study_instance_uid"] == ds.StudyInstanceUID for i in items),
        what="the unmatched study",
    )
    entry = next(i for i in items if i["study_instance_uid"] == ds.StudyInstanceUID)
    assert entry["reason"] == "no routing rule matched"
    assert entry["summary"]["series"][0]["modality"] == "MR"
    assert entry["job_id"] is None


def test_job_by_study_uid_pulls_from_orthanc(
    admin: httpx.Client, orthanc: Orthanc, wired: dict[str, Any]
) -> None:
    _upload_to_orthanc(orthanc, CXR[1])
    study_uid = str(pydicom.dcmread(CXR[1], stop_before_pixels=True).StudyInstanceUID)
    pull = admin.post("/v1/dicom/pulls", json={"pacs": "orthanc", "study_instance_uid": study_uid})
    assert pull.status_code == 202, pull.text
    location = pull.headers["Location"]
    study = _poll(
        lambda: admin.get(location).json(),
        lambda s: s["status"] in ("routed", "failed", "unmatched"),
        what="the pulled study",
    )
    assert study["status"] == "routed", study
    assert study["source"] == "dicomweb" and study["rule_id"] == wired["id"]
    job = wait_for_job(admin, study["job_id"])
    assert job["status"] == "succeeded", job
    assert job["image_count"] == 1
    assert job["images"][0]["output"]["label"] in ("normal", "pneumonia")


def test_pull_from_unknown_pacs_is_a_problem(admin: httpx.Client, wired: dict[str, Any]) -> None:
    answer = admin.post("/v1/dicom/pulls", json={"pacs": "nope", "study_instance_uid": "1.2.3"})
    assert answer.status_code == 422
    assert "nope" in answer.json()["detail"]
