"""The DICOM result builder without servers: UIDs stable on rebuild, objects valid.

Inputs are the committed fixtures, de-identified as the platform stores them; outputs are
shaped like the worker's JSON results.
"""

from __future__ import annotations

import io
import uuid
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

from shared.dicom_results.builder import (
    InputImage,
    JobInputs,
    build_objects,
    planned_objects,
)
from shared.dicom_results.sr import ModelInfo
from shared.imaging.deid import deidentify
from shared.storage import BlobStore
from tests.conftest import FIXTURES
from tests.dicom_helpers import assert_valid, smear_dicom

CXR = FIXTURES / "pneumoniamnist" / "test_0000_pneumonia.dcm"
WHEN = datetime(2026, 12, 6, 4, 5, 6, tzinfo=UTC)
PNEUMONIA = ModelInfo(
    "pneumonia-resnet18", 1, "classification", ["normal", "pneumonia"], "pneumonia"
)
BCCD = ModelInfo("bccd-frcnn", 2, "detection", ["RBC", "WBC", "Platelets"], None)
SEG = ModelInfo("tiny-seg", 1, "segmentation", ["background", "lung nodule"], None)
CLS_OUT = {
    "probabilities": {"normal": 0.2, "pneumonia": 0.8},
    "label": "pneumonia",
    "score": 0.8,
    "operating_point": {
        "threshold": 0.0762,
        "sensitivity": 0.9769,
        "specificity": 0.9852,
        "source": "validation split",
    },
}
DET_OUT = {
    "detections": [
        {"label": "WBC", "score": 0.97, "box": [260.4, 180.0, 420.9, 330.2]},
        {"label": "RBC", "score": 0.81, "box": [10.0, 12.5, 90.0, 101.0]},
        {"label": "Platelets", "score": 0.55, "box": [500.0, 400.0, 530.5, 431.0]},
    ],
    "params": {"score_threshold": 0.5, "nms_iou": 0.5, "max_detections": 100},
}


def _store(tmp_path: Path, data: bytes, suffix: str = ".dcm") -> tuple[BlobStore, str]:
    store = BlobStore(tmp_path / "blobs")
    key, _ = store.put(data, prefix="images", suffix=suffix)
    return store, key


def _deid(data: bytes) -> bytes:
    return deidentify(data, uid_salt=b"test-secret").data


def _inputs(
    model: ModelInfo, key: str, output: dict, job_id: uuid.UUID, mask: str | None = None
) -> JobInputs:
    return JobInputs(job_id, model, WHEN, [InputImage(0, key, output, mask)])


def _bytes(ds: pydicom.Dataset) -> bytes:
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def test_classification_sr_is_stable_and_valid(tmp_path: Path) -> None:
    store, key = _store(tmp_path, _deid(CXR.read_bytes()))
    job = uuid.uuid4()
    first = build_objects(_inputs(PNEUMONIA, key, CLS_OUT, job), store)
    again = build_objects(_inputs(PNEUMONIA, key, CLS_OUT, job), store)
    assert [o.kind for o in first] == ["sr"]
    assert [o.sop_instance_uid for o in first] == [o.sop_instance_uid for o in again]
    assert _bytes(first[0].dataset) == _bytes(again[0].dataset)  # a rebuild is the same object
    planned = planned_objects(_inputs(PNEUMONIA, key, CLS_OUT, job))
    assert [(p.kind, p.sop_instance_uid) for p in planned] == [("sr", first[0].sop_instance_uid)]
    # Another job, or another version of the model, is another object.
    other_job = build_objects(_inputs(PNEUMONIA, key, CLS_OUT, uuid.uuid4()), store)
    v2 = ModelInfo(**{**PNEUMONIA.__dict__, "version": 2})
    other_version = build_objects(_inputs(v2, key, CLS_OUT, job), store)
    uids = {
        first[0].sop_instance_uid,
        other_job[0].sop_instance_uid,
        other_version[0].sop_instance_uid,
    }
    assert len(uids) == 3
    sr = first[0].dataset
    source = pydicom.dcmread(io.BytesIO(store.get(key)))
    assert sr.StudyInstanceUID == source.StudyInstanceUID  # filed in the (de-identified) study
    assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"
    assert_valid(sr)  # dciodvfy and PixelMed TID 1500
    text = str(sr)
    for expected in ("233604007", "122157", "122411", "111088", "111090", "pneumonia-resnet18"):
        assert expected in text, expected


def _boxes(sr: pydicom.Dataset) -> list[tuple[str, list[float], str]]:
    """(finding type meaning, polyline, referenced SOP Instance UID) of every image region."""
    found = []

    def walk(items: pydicom.Sequence, finding: str | None) -> None:
        for item in items:
            name = (
                item.ConceptNameCodeSequence[0].CodeMeaning
                if "ConceptNameCodeSequence" in item
                else ""
            )
            if name == "Finding" and item.ValueType == "CODE":
                finding = item.ConceptCodeSequence[0].CodeMeaning
            if item.ValueType == "SCOORD":
                image = item.ContentSequence[0].ReferencedSOPSequence[0]
                found.append(
                    (
                        finding or "",
                        [float(v) for v in item.GraphicData],
                        image.ReferencedSOPInstanceUID,
                    )
                )
            if "ContentSequence" in item:
                walk(item.ContentSequence, finding)

    for group in _groups(sr):
        walk(group.ContentSequence, None)
    return found


def _groups(sr: pydicom.Dataset) -> list[pydicom.Dataset]:
    measurements = next(
        i for i in sr.ContentSequence if i.ConceptNameCodeSequence[0].CodeValue == "126010"
    )
    return list(measurements.ContentSequence)


def test_detection_sr_boxes_and_overlay(tmp_path: Path) -> None:
    store, key = _store(tmp_path, _deid(smear_dicom()))
    job = uuid.uuid4()
    objects = build_objects(_inputs(BCCD, key, DET_OUT, job), store)
    assert [o.kind for o in objects] == ["sr", "sc"]
    again = build_objects(_inputs(BCCD, key, DET_OUT, job), store)
    assert [_bytes(o.dataset) for o in objects] == [_bytes(o.dataset) for o in again]
    source = pydicom.dcmread(io.BytesIO(store.get(key)))
    sr, sc = objects[0].dataset, objects[1].dataset
    boxes = _boxes(sr)
    assert len(boxes) == len(DET_OUT["detections"])
    for det, (finding, polyline, ref) in zip(DET_OUT["detections"], boxes, strict=True):
        x1, y1, x2, y2 = det["box"]
        assert polyline == pytest.approx([x1, y1, x2, y1, x2, y2, x1, y2, x1, y1], abs=1e-3)
        assert finding == det["label"] and ref == source.SOPInstanceUID
    assert_valid(sr)
    # The overlay: same grid and study as the source, the boxes drawn in colour.
    assert sc.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7"
    assert (sc.Rows, sc.Columns, sc.StudyInstanceUID) == (
        source.Rows,
        source.Columns,
        source.StudyInstanceUID,
    )
    assert sc.SourceImageSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert not np.array_equal(sc.pixel_array, source.pixel_array)
    assert_valid(sc)


def test_segmentation_objects_are_stable_and_valid(tmp_path: Path) -> None:
    source = _deid(CXR.read_bytes())
    store, key = _store(tmp_path, source)
    mask = np.zeros((28, 28), dtype=np.uint8)
    mask[8:16, 10:20] = 1
    buffer = io.BytesIO()
    Image.fromarray(mask).save(buffer, format="PNG")
    mask_key, _ = store.put(buffer.getvalue(), prefix="artifacts", suffix=".png")
    output = {"segmentation": {"classes": [{"label": "lung nodule", "pixels": 80}]}}
    job = uuid.uuid4()
    objects = build_objects(_inputs(SEG, key, output, job, mask_key), store)
    assert [o.kind for o in objects] == ["sr", "seg"]
    again = build_objects(_inputs(SEG, key, output, job, mask_key), store)
    assert [o.sop_instance_uid for o in objects] == [o.sop_instance_uid for o in again]
    seg = objects[1].dataset
    assert seg.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4"
    assert np.array_equal(seg.pixel_array.astype(bool), mask.astype(bool))
    # The worker's artifact (shared.dicom_results.seg.build_seg) is the same object.
    from shared.dicom_results.seg import build_seg

    artifact = pydicom.dcmread(
        io.BytesIO(
            build_seg(
                source,
                mask,
                SEG.labels,
                model_ref=SEG.ref,
                software_version="1",
                job_id=job,
                index=0,
            )
        )
    )
    assert artifact.SOPInstanceUID == seg.SOPInstanceUID
    for obj in objects:
        assert_valid(obj.dataset, pixelmed=False)
