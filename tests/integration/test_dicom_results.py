"""DICOM results against a real Orthanc: detection boxes in the SR, C-STORE delivery, and a
delivery that survives the PACS being down (issue 12 item 8 c-e).

A tenant of its own: Orthanc as DICOMweb PACS, a STOW-RS and a C-STORE destination, and a
rule for studies C-STOREd by the modality AE below (so the rules of other test modules,
which own Orthanc's AE title, never interfere).
"""

from __future__ import annotations

import io
import time
import uuid
from typing import Any

import httpx
import pydicom
import pytest
from pydicom.uid import generate_uid
from pynetdicom import AE

from cli.stack import Stack
from tests.conftest import FIXTURES, KeyFactory, client_for, wait_for_job
from tests.dicom_helpers import assert_valid, smear_dicom
from tests.integration.orthanc import Orthanc

CXR = FIXTURES / "pneumoniamnist" / "test_0001_normal.png"
CXR_DCM = sorted((FIXTURES / "pneumoniamnist").glob("*.dcm"))[0]
DETECTOR = "bccd-frcnn-efficientnet-lite0-fpn"
MODALITY_AE = "RESULTS_MOD"


def _poll(fetch: Any, done: Any, timeout: float = 120, what: str = "") -> Any:
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
    return client_for(stack, make_key(tenant=f"res-{uuid.uuid4().hex[:6]}", scopes=("admin",)))


@pytest.fixture(scope="module")
def wired(admin: httpx.Client, orthanc: Orthanc) -> dict[str, Any]:
    admin.post("/v1/dicom/calling-aes", json={"ae_title": MODALITY_AE}).raise_for_status()
    admin.post(
        "/v1/dicom/pacs", json={"name": "orthanc", "base_url": orthanc.dicomweb}
    ).raise_for_status()
    for body in (
        {"name": "stow", "kind": "stow", "pacs": "orthanc"},
        {
            "name": "cstore",
            "kind": "cstore",
            "ae_title": "ORTHANC",
            "host": "127.0.0.1",
            "port": orthanc.dicom_port,
        },
    ):
        admin.post("/v1/dicom/destinations", json=body).raise_for_status()
    rule = admin.post(
        "/v1/dicom/rules",
        json={
            "name": "modality-push",
            "match": {"calling_ae": [MODALITY_AE]},
            "model": "pneumonia-resnet18",
            "destinations": ["stow"],
        },
    )
    assert rule.status_code == 201, rule.text
    time.sleep(2.5)  # the listener refreshes its allowed calling AE titles every 2 s
    return rule.json()


def _orthanc_instances(orthanc: Orthanc, study_uid: str, modality: str) -> list[dict[str, Any]]:
    answer = httpx.get(
        f"{orthanc.dicomweb}/studies/{study_uid}/instances", params={"Modality": modality}
    )
    if answer.status_code != 200 or not answer.content:
        return []
    found: list[dict[str, Any]] = answer.json()
    return found


def _uid(item: dict[str, Any], tag: str = "00080018") -> str:
    return str(item[tag]["Value"][0])


def _wado(orthanc: Orthanc, study: str, series: str, instance: str) -> pydicom.Dataset:
    """One instance by WADO-RS (multipart/related; type=application/dicom)."""
    url = f"{orthanc.dicomweb}/studies/{study}/series/{series}/instances/{instance}"
    answer = httpx.get(url, headers={"Accept": 'multipart/related; type="application/dicom"'})
    answer.raise_for_status()
    boundary = answer.headers["content-type"].split("boundary=")[1].split(";")[0].strip('"')
    part = answer.content.split(b"--" + boundary.encode())[1]
    body = part.split(b"\r\n\r\n", 1)[1].rstrip(b"\r\n")
    return pydicom.dcmread(io.BytesIO(body))


def _sr_boxes(sr: pydicom.Dataset) -> list[tuple[str, list[float], str]]:
    """(finding type, polyline, referenced SOP Instance UID) of each region, in order."""
    found: list[tuple[str, list[float], str]] = []
    groups = next(
        i for i in sr.ContentSequence if i.ConceptNameCodeSequence[0].CodeValue == "126010"
    ).ContentSequence
    for group in groups:
        finding, scoord = "", None
        for item in group.ContentSequence:
            code = item.ConceptNameCodeSequence[0]
            if (code.CodeValue, code.CodingSchemeDesignator) == ("121071", "DCM"):
                finding = item.ConceptCodeSequence[0].CodeMeaning
            if item.ValueType == "SCOORD":
                scoord = item
        if scoord is not None:
            ref = scoord.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID
            found.append((finding, [float(v) for v in scoord.GraphicData], str(ref)))
    return found


def _pull(admin: httpx.Client, study_uid: str, **extra: Any) -> dict[str, Any]:
    pull = admin.post(
        "/v1/dicom/pulls", json={"pacs": "orthanc", "study_instance_uid": study_uid, **extra}
    )
    assert pull.status_code == 202, pull.text
    study = _poll(
        lambda: admin.get(pull.headers["Location"]).json(),
        lambda s: s["status"] in ("routed", "failed", "unmatched"),
        what="the pulled study",
    )
    assert study["status"] == "routed", study
    return study


def _delivered(admin: httpx.Client, job_id: str, timeout: float = 120) -> dict[str, Any]:
    return _poll(
        lambda: admin.get(f"/v1/jobs/{job_id}").json(),
        lambda v: (
            v["dicom_deliveries"]
            and all(d["status"] in ("delivered", "failed") for d in v["dicom_deliveries"])
        ),
        timeout=timeout,
        what="the deliveries",
    )


def test_detection_sr_boxes_match_json_and_cstore_delivers(
    admin: httpx.Client, orthanc: Orthanc, wired: dict[str, Any]
) -> None:
    """(c) every box of the JSON result is an SR region at the same pixel coordinates;
    (d) SR and box overlay delivered to Orthanc's AE by C-STORE."""
    smear = smear_dicom()
    original = pydicom.dcmread(io.BytesIO(smear))
    httpx.post(orthanc.url + "/instances", content=smear).raise_for_status()
    study = _pull(admin, original.StudyInstanceUID, model=DETECTOR, destinations=["cstore"])
    job = wait_for_job(admin, study["job_id"], timeout=300)
    assert job["status"] == "succeeded", job
    detections = job["images"][0]["output"]["detections"]
    assert detections, "the bundled detector finds cells on a BCCD test image"
    # The job view lists the SR and the overlay with their UIDs.
    kinds = [(o["kind"], o["sop_instance_uid"]) for o in job["dicom_results"]]
    assert [k for k, _ in kinds] == ["sr", "sc"]
    report = admin.get(f"/v1/jobs/{job['id']}/report.dcm")
    assert report.status_code == 200, report.text
    assert report.headers["content-type"] == "application/dicom"
    sr = pydicom.dcmread(io.BytesIO(report.content))
    assert sr.SOPInstanceUID == kinds[0][1]
    boxes = _sr_boxes(sr)
    assert len(boxes) == len(detections)
    for det, (finding, polyline, _ref) in zip(detections, boxes, strict=True):
        x1, y1, x2, y2 = det["box"]
        assert polyline == pytest.approx([x1, y1, x2, y1, x2, y2, x1, y2, x1, y1], abs=1e-3)
        assert finding == det["label"]
    # Downloading it again gives the same object.
    again = pydicom.dcmread(io.BytesIO(admin.get(f"/v1/jobs/{job['id']}/report.dcm").content))
    assert again.SOPInstanceUID == sr.SOPInstanceUID
    # (d) C-STORE: Orthanc holds the SR and the SC in the hospital's own study, where the
    # regions reference the original (re-identified) instance.
    view = _delivered(admin, job["id"])
    (delivery,) = view["dicom_deliveries"]
    assert delivery["kind"] == "cstore" and delivery["status"] == "delivered", delivery
    assert sorted(delivery["sop_instance_uids"]) == sorted(uid for _, uid in kinds)
    (stored_sr,) = _orthanc_instances(orthanc, original.StudyInstanceUID, "SR")
    assert _uid(stored_sr) == sr.SOPInstanceUID
    (stored_sc,) = [
        i
        for i in _orthanc_instances(orthanc, original.StudyInstanceUID, "OT")
        if _uid(i) == kinds[1][1]
    ]
    delivered_sr = _wado(
        orthanc, original.StudyInstanceUID, _uid(stored_sr, "0020000E"), sr.SOPInstanceUID
    )
    assert delivered_sr.PatientID == original.PatientID
    assert {ref for _, _, ref in _sr_boxes(delivered_sr)} == {original.SOPInstanceUID}
    assert_valid(delivered_sr, pixelmed=False)  # PixelMed runs on the SR in the STOW test
    assert stored_sc


def test_report_of_png_job_is_404_problem(admin: httpx.Client, wired: dict[str, Any]) -> None:
    with CXR.open("rb") as fh:
        created = admin.post(
            "/v1/jobs",
            data={"model": "pneumonia-resnet18"},
            files={"files": ("x.png", fh, "image/png")},
        )
    assert created.status_code == 202, created.text
    job = wait_for_job(admin, created.json()["id"])
    assert job["status"] == "succeeded" and job["dicom_results"] == []
    answer = admin.get(f"/v1/jobs/{job['id']}/report.dcm")
    assert answer.status_code == 404
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert answer.json()["type"].endswith("no-dicom-input")


def _c_store(stack: Stack, ds: pydicom.Dataset) -> None:
    port = stack.config.dicom_port
    assert port
    ae = AE(ae_title=MODALITY_AE)
    ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", port, ae_title="MEDIMG")
    assert assoc.is_established
    assert assoc.send_c_store(ds).Status == 0x0000
    assoc.release()


def test_delivery_retried_while_orthanc_is_down_then_delivered_once(
    admin: httpx.Client, stack: Stack, orthanc: Orthanc, wired: dict[str, Any]
) -> None:
    """(e) the STOW-RS target is down when the job finishes: attempts fail and are retried
    with backoff; once Orthanc is back the SR is delivered, and Orthanc holds it once."""
    ds = pydicom.dcmread(CXR_DCM)
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    orthanc.stop()
    try:
        _c_store(stack, ds)
        study = _poll(
            lambda: admin.get("/v1/dicom/studies", params={"status": "routed"}).json()["items"],
            lambda items: any(i["study_instance_uid"] == ds.StudyInstanceUID for i in items),
            what="the routed study",
        )
        job_id = next(i for i in study if i["study_instance_uid"] == ds.StudyInstanceUID)["job_id"]
        assert wait_for_job(admin, job_id)["status"] == "succeeded"
        failing = _poll(
            lambda: admin.get(f"/v1/jobs/{job_id}").json()["dicom_deliveries"][0],
            # attempts counts the one claimed; an error recorded means an attempt failed. One
            # attempt against a closed port takes ~30 s (dicomweb-client's own HTTP retries).
            lambda d: d["attempts"] >= 2 and d["last_error"],
            timeout=180,
            what="failed attempts while Orthanc is down",
        )
        assert failing["status"] == "pending", failing  # retried, not given up
    finally:
        orthanc.start()
    view = _delivered(admin, job_id, timeout=240)
    (delivery,) = view["dicom_deliveries"]
    assert delivery["status"] == "delivered", delivery
    assert delivery["attempts"] >= 2 and delivery["last_error"] is None
    found = _orthanc_instances(orthanc, ds.StudyInstanceUID, "SR")
    assert [_uid(i) for i in found] == [view["dicom_results"][0]["sop_instance_uid"]]
