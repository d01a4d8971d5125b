"""Detection jobs end to end with the shipped BCCD model: boxes in original pixel coordinates
for JPEG, a resized PNG and a DICOM (with mm sizes), per-request filtering, annotated artifact."""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from tests.conftest import wait_for_job
from tests.factories import MODEL as CLASSIFIER

MODEL = "bccd-frcnn-efficientnet-lite0-fpn"
# A BCCD *test-split* image (not seen in training): 640x480, 17 RBC and 1 WBC annotated.
FIXTURE = Path(__file__).parents[1] / "fixtures" / "datasets" / "bccd_tiny"
STEM = "BloodImage_00007"
SPACING = (0.05, 0.04)  # DICOM PixelSpacing (row mm, column mm): deliberately anisotropic


def _truth(label: str) -> list[list[float]]:
    root = ET.parse(FIXTURE / "Annotations" / f"{STEM}.xml").getroot()
    return [
        [float(o.findtext(f"bndbox/{k}", "0")) for k in ("xmin", "ymin", "xmax", "ymax")]
        for o in root.iter("object")
        if o.findtext("name") == label
    ]


def _iou(a: list[float], b: list[float]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1])
    return inter / (area - inter)


def _jpeg() -> bytes:
    return (FIXTURE / "JPEGImages" / f"{STEM}.jpg").read_bytes()


def _dicom_of_jpeg() -> bytes:
    """The JPEG's decoded RGB pixels in an uncompressed DICOM with PixelSpacing."""
    pixels = np.asarray(Image.open(io.BytesIO(_jpeg())).convert("RGB"))
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientID = "ANONYMOUS"
    ds.Modality = "OT"
    ds.PixelSpacing = [str(v) for v in SPACING]
    ds.set_pixel_data(pixels, "RGB", 8, generate_instance_uid=False)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _png_resized(width: int, height: int) -> bytes:
    image = Image.open(io.BytesIO(_jpeg())).convert("RGB").resize((width, height), Image.BICUBIC)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _run(api: httpx.Client, name: str, data: bytes, **form: str) -> dict:
    response = api.post(
        "/v1/jobs", data={"model": MODEL, **form}, files=[("files", (name, data, "x/y"))]
    )
    assert response.status_code == 202, response.text
    job = wait_for_job(api, response.json()["id"], timeout=180)
    assert job["status"] == "succeeded", job
    return job["images"][0]


@pytest.fixture(scope="module")
def jpeg_result(api: httpx.Client) -> dict:
    return _run(api, f"{STEM}.jpg", _jpeg(), annotate="true")


def _wbc(output: dict) -> list[float]:
    """The most confident WBC box (detections are sorted by score)."""
    wbcs = [d for d in output["detections"] if d["label"] == "WBC"]
    assert wbcs, output["detections"]
    return wbcs[0]["box"]


def test_jpeg_boxes_are_in_original_pixels(jpeg_result: dict, api: httpx.Client) -> None:
    out = jpeg_result["output"]
    assert jpeg_result["status"] == "succeeded"
    assert out["image"]["width"] == 640 and out["image"]["height"] == 480
    assert _iou(_wbc(out), _truth("WBC")[0]) > 0.7
    rbc = [d["box"] for d in out["detections"] if d["label"] == "RBC"]
    truth = _truth("RBC")
    matched = sum(any(_iou(t, p) >= 0.5 for p in rbc) for t in truth)
    # BCCD's RBC boxes overlap heavily (clumped cells, some annotated twice): 11 of 17 here.
    assert matched >= 0.6 * len(truth), (matched, len(truth))
    for d in out["detections"]:
        x1, y1, x2, y2 = d["box"]
        assert 0 <= x1 < x2 <= 640 and 0 <= y1 < y2 <= 480
        assert d["score"] >= 0.3 and d["size_mm"] is None  # JPEG: no pixel spacing
    scores = [d["score"] for d in out["detections"]]
    assert scores == sorted(scores, reverse=True)
    for label in ("RBC", "WBC", "Platelets"):
        assert out["counts"][label] == sum(d["label"] == label for d in out["detections"])
    # The annotated image is an artifact at the uploaded size.
    url = out["artifacts"]["boxes"]
    png = api.get(url)
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(png.content)).size == (640, 480)


def test_dicom_gives_the_same_boxes_and_mm_sizes(jpeg_result: dict, api: httpx.Client) -> None:
    result = _run(api, "smear.dcm", _dicom_of_jpeg())
    out = result["output"]
    assert out["image"]["format"] == "dicom"
    assert out["image"]["pixel_spacing"] == list(SPACING)
    expected = jpeg_result["output"]["detections"]
    assert [d["label"] for d in out["detections"]] == [d["label"] for d in expected]
    for got, want in zip(out["detections"], expected, strict=True):
        np.testing.assert_allclose(got["box"], want["box"], atol=0.2)
        x1, y1, x2, y2 = got["box"]
        row_mm, col_mm = SPACING
        np.testing.assert_allclose(
            got["size_mm"], [(x2 - x1) * col_mm, (y2 - y1) * row_mm], atol=0.01
        )


def test_upscaled_image_gives_upscaled_boxes(jpeg_result: dict, api: httpx.Client) -> None:
    # The network sees (nearly) the same letterboxed input; boxes must scale with the upload.
    out = _run(api, "big.png", _png_resized(1280, 960))["output"]
    assert (out["image"]["width"], out["image"]["height"]) == (1280, 960)
    wbc = np.array(_wbc(out))
    np.testing.assert_allclose(wbc / 2, _wbc(jpeg_result["output"]), atol=4)


def test_request_parameters_filter_boxes(api: httpx.Client) -> None:
    out = _run(api, "a.jpg", _jpeg(), max_detections="3")["output"]
    assert len(out["detections"]) == 3 and out["params"]["max_detections"] == 3
    strict = _run(api, "b.jpg", _jpeg(), params='{"score_threshold": 0.9}')["output"]
    assert strict["detections"] and all(d["score"] >= 0.9 for d in strict["detections"])
    loose = _run(api, "c.jpg", _jpeg(), nms_iou="0.3", score_threshold="0.05")["output"]
    assert loose["params"] == {"score_threshold": 0.05, "nms_iou": 0.3, "max_detections": 100}


@pytest.mark.parametrize(
    ("model", "form", "needle"),
    [
        (MODEL, {"nms_iou": "0.95"}, "nms_iou"),
        (MODEL, {"max_detections": "0"}, "max_detections"),
        (CLASSIFIER, {"score_threshold": "0.5"}, "detection models"),
    ],
)
def test_bad_detection_parameters_are_422(
    api: httpx.Client, model: str, form: dict[str, str], needle: str
) -> None:
    response = api.post(
        "/v1/jobs", data={"model": model, **form}, files=[("files", ("a.jpg", _jpeg(), "x/y"))]
    )
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert needle in response.text
