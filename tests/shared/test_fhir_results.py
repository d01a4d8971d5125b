"""The FHIR builder on its own: every task's Bundle validates against HL7's R4 JSON schema,
ids are stable per job and model version, transactions PUT, re-identification applies."""

from __future__ import annotations

import copy
import uuid
from datetime import UTC, datetime
from typing import Any

import pydicom
import pytest

from shared.fhir_results import (
    DicomUids,
    ImageFacts,
    JobFacts,
    build_bundle,
    dicom_uids,
    reidentified,
)
from shared.fhir_results import codes as c
from tests.conftest import FIXTURES
from tests.fhir_schema import schema_errors

JOB = uuid.UUID("0b6c9a52-7f1e-4c39-9a0e-3d3c1f0e2a11")
FINISHED = datetime(2026, 12, 6, 4, 0, 0, 123000, tzinfo=UTC)
UIDS = DicomUids("2.25.1001", "2.25.1002", "2.25.1003")


def _facts(task: str, output: dict[str, Any], *, dicom: bool = True, **kw: Any) -> JobFacts:
    fields: dict[str, Any] = {
        "job_id": JOB,
        "model_name": "m-" + task,
        "model_version": 3,
        "architecture": "arch",
        "weights_sha256": "ab" * 32,
        "task": task,
        "positive_label": "pneumonia" if task == "classification" else None,
        "finished_at": FINISHED,
        "images": [
            ImageFacts(0, "succeeded", output, UIDS if dicom else None),
            ImageFacts(1, "failed", None),
        ],
    }
    return JobFacts(**(fields | kw))


CLASSIFICATION = {
    "probabilities": {"normal": 0.25, "pneumonia": 0.75},
    "label": "pneumonia",
    "score": 0.75,
    "operating_point": {"threshold": 0.4, "sensitivity": 0.95, "source": "validation split"},
}
DETECTION = {
    "detections": [
        {
            "label": "WBC",
            "score": 0.98,
            "box": [10.5, 20.0, 110.0, 140.5],
            "size_mm": [4.975, 4.82],
        },
        {"label": "RBC", "score": 0.5, "box": [1.0, 2.0, 3.0, 4.0], "size_mm": None},
    ],
    "counts": {"WBC": 1, "RBC": 1, "Platelets": 0},
}
SEGMENTATION = {
    "segmentation": {
        "width": 10,
        "height": 10,
        "classes": [
            {"label": "wbc", "class_id": 1, "area_px": 12, "area_mm2": 0.3, "fraction": 0.12,
             "components": 1, "polygons": []},
            {"label": "platelets", "class_id": 2, "area_px": 0, "area_mm2": None, "fraction": 0.0,
             "components": 0, "polygons": []},
        ],
    }
}  # fmt: skip


def _resources(bundle: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == kind]


def _component(obs: dict[str, Any], code: str) -> list[dict[str, Any]]:
    return [p for p in obs["component"] if p["code"]["coding"][0]["code"] == code]


@pytest.mark.parametrize("bundle_type", ["collection", "transaction"])
@pytest.mark.parametrize(
    ("task", "output"),
    [("classification", CLASSIFICATION), ("detection", DETECTION), ("segmentation", SEGMENTATION)],
)
def test_every_task_validates(task: str, output: dict[str, Any], bundle_type: Any) -> None:
    bundle = build_bundle(_facts(task, output), bundle_type=bundle_type)
    assert schema_errors(bundle) == []
    assert bundle["type"] == bundle_type
    (report,) = _resources(bundle, "DiagnosticReport")
    assert report["status"] == "preliminary"
    assert report["imagingStudy"][0]["identifier"] == {
        "system": "urn:dicom:uid",
        "value": "urn:oid:2.25.1001",
    }
    assert "Image 1: no result (failed)" in report["conclusion"]
    observations = _resources(bundle, "Observation")
    expected = {"classification": 1, "detection": 2, "segmentation": 2}[task]
    assert len(observations) == expected == len(report["result"])
    (device,) = _resources(bundle, "Device")
    assert device["deviceName"] == [{"name": f"m-{task}:3", "type": "model-name"}]
    for obs in observations:
        assert obs["derivedFrom"][0]["identifier"]["value"] == "urn:oid:2.25.1001"
        assert _component(obs, "sop-instance-uid")[0]["valueString"] == "2.25.1003"
        if bundle_type == "transaction":
            assert obs["device"]["reference"] == f"Device/{device['id']}"
    if bundle_type == "transaction":
        for entry in bundle["entry"]:
            resource = entry["resource"]
            assert entry["request"] == {
                "method": "PUT",
                "url": f"{resource['resourceType']}/{resource['id']}",
            }
    else:
        urls = {e["fullUrl"] for e in bundle["entry"]}
        assert {r["reference"] for r in report["result"]} <= urls


def test_classification_values_and_interpretation() -> None:
    (obs,) = _resources(build_bundle(_facts("classification", CLASSIFICATION)), "Observation")
    assert obs["valueCodeableConcept"]["coding"][0] == {
        "system": c.label_system("m-classification"),
        "code": "pneumonia",
        "display": "pneumonia",
    }
    assert obs["interpretation"][0]["coding"][0]["code"] == "POS"
    probs = {p["code"]["text"]: p["valueQuantity"] for p in _component(obs, "probability")}
    assert probs["Probability of pneumonia"] == {
        "value": 0.75, "unit": "1", "system": "http://unitsofmeasure.org", "code": "1"
    }  # fmt: skip
    assert _component(obs, "threshold")[0]["valueQuantity"]["value"] == 0.4
    negative = CLASSIFICATION | {"label": "normal", "score": 0.25}
    (neg,) = _resources(build_bundle(_facts("classification", negative)), "Observation")
    assert neg["interpretation"][0]["coding"][0]["code"] == "NEG"


def test_detection_boxes_are_components() -> None:
    observations = _resources(build_bundle(_facts("detection", DETECTION)), "Observation")
    for obs, det in zip(observations, DETECTION["detections"], strict=True):
        box = [_component(obs, f"bbox-{k}")[0]["valueQuantity"]["value"]
               for k in ("xmin", "ymin", "xmax", "ymax")]  # fmt: skip
        assert box == det["box"]
        assert _component(obs, "score")[0]["valueQuantity"]["value"] == det["score"]
        assert obs["valueCodeableConcept"]["text"] == det["label"]
        widths = [p for p in obs["component"] if p["code"]["coding"][0]["code"] == "103355008"]
        assert len(widths) == (1 if det["size_mm"] else 0)


def test_png_job_has_no_imaging_study() -> None:
    bundle = build_bundle(_facts("detection", DETECTION, dicom=False))
    assert schema_errors(bundle) == []
    (report,) = _resources(bundle, "DiagnosticReport")
    assert "imagingStudy" not in report
    assert all("derivedFrom" not in o for o in _resources(bundle, "Observation"))


def test_ids_are_stable_per_job_and_model_version() -> None:
    first = build_bundle(_facts("detection", DETECTION), bundle_type="transaction")
    again = build_bundle(_facts("detection", DETECTION), bundle_type="transaction")
    assert first == again
    other_version = build_bundle(_facts("detection", DETECTION, model_version=4))
    other_job = build_bundle(_facts("detection", DETECTION, job_id=uuid.uuid4()))
    ids = {e["resource"]["id"] for e in first["entry"]}
    assert not ids & {e["resource"]["id"] for e in other_version["entry"]}
    # Another job of the same model version shares only the Device.
    shared_ids = ids & {e["resource"]["id"] for e in other_job["entry"]}
    assert shared_ids == {_resources(first, "Device")[0]["id"]}


def test_reidentified_copy_names_the_original_study_and_patient() -> None:
    mapping = {"uids": {"2.25.1001": "1.2.3.4", "2.25.1003": "1.2.3.4.5.6"},
               "patient": {"PatientID": "MRN-77"}}  # fmt: skip
    facts = reidentified(_facts("classification", CLASSIFICATION), mapping)
    bundle = build_bundle(facts, bundle_type="transaction")
    assert schema_errors(bundle) == []
    (report,) = _resources(bundle, "DiagnosticReport")
    assert report["imagingStudy"][0]["identifier"]["value"] == "urn:oid:1.2.3.4"
    assert report["subject"]["identifier"]["value"] == "MRN-77"
    (obs,) = _resources(bundle, "Observation")
    assert _component(obs, "sop-instance-uid")[0]["valueString"] == "1.2.3.4.5.6"
    # The de-identified view carries no patient.
    assert "subject" not in _resources(build_bundle(_facts("classification", CLASSIFICATION)),
                                       "DiagnosticReport")[0]  # fmt: skip


def test_schema_check_catches_a_broken_bundle() -> None:
    bundle = build_bundle(_facts("classification", CLASSIFICATION))
    broken = copy.deepcopy(bundle)
    broken["entry"][1]["resource"]["status"] = "draft"
    broken["entry"][1]["resource"]["issued"] = "yesterday"
    broken["entry"][0]["resource"]["conclusion"] = ["not", "a", "string"]
    errors = schema_errors(broken)
    assert any("Observation/status" in e for e in errors), errors
    assert any("Observation/issued" in e for e in errors), errors
    assert any("DiagnosticReport/conclusion" in e for e in errors), errors


def test_labels_fhir_cannot_code_stay_text() -> None:
    odd = {"probabilities": {"a  b": 0.6, "c": 0.4}, "label": "a  b", "score": 0.6}
    bundle = build_bundle(_facts("classification", odd, positive_label=None))
    assert schema_errors(bundle) == []
    (obs,) = _resources(bundle, "Observation")
    assert obs["valueCodeableConcept"] == {"text": "a  b"}
    assert "interpretation" not in obs


def test_dicom_uids_from_a_header() -> None:
    cxr = FIXTURES / "pneumoniamnist" / "test_0000_pneumonia.dcm"
    ds = pydicom.dcmread(cxr, stop_before_pixels=True)
    expected = DicomUids(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    assert dicom_uids(cxr) == dicom_uids(cxr.read_bytes()) == expected
    assert dicom_uids(FIXTURES / "pneumoniamnist" / "test_0001_normal.png") is None
    assert dicom_uids(FIXTURES / "no-such-blob.dcm") is None  # deleted: no study reference
