"""Segmentation end to end: MSD/mask uploads, a U-Net trained through the API, served.

Real stack (API, Postgres, Valkey, importer, trainer and cpu worker). The fixture is 8 BCCD
smears (MIT) with box-derived ellipse masks (tests/fixtures/README.md), 160 x 120: not
square, so the mask back-mapping through the letterbox is exercised.
"""

from __future__ import annotations

import io
import json
import time
from typing import Any

import httpx
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from cli.stack import Stack
from tests.conftest import KeyFactory, client_for, wait_for_job
from tests.dicom_helpers import assert_valid
from tests.fixtures.datasets import DATASETS, zip_folder

SEG_TINY = DATASETS / "bccd_seg_tiny"
TASK = SEG_TINY / "Task003_bccdseg"
SPACING = (0.25, 0.5)  # PixelSpacing (row mm, column mm): anisotropic on purpose
FINAL = ("succeeded", "failed", "cancelled")


@pytest.fixture(scope="module")
def client(stack: Stack, make_key: KeyFactory) -> httpx.Client:
    return client_for(stack, make_key(tenant="segmentation", scopes=("admin",)))


def _upload(client: httpx.Client, name: str, data: bytes, **form: str) -> dict[str, Any]:
    response = client.post(
        "/v1/datasets", data={"name": name, **form},
        files={"file": ("data.zip", data, "application/zip")},
    )  # fmt: skip
    assert response.status_code == 202, response.text
    deadline = time.monotonic() + 90
    while (v := client.get(response.headers["Location"]).json())["status"] == "importing":
        assert time.monotonic() < deadline, v
        time.sleep(0.2)
    return v  # type: ignore[no-any-return]


LABELS_WBC = json.dumps({"labels": {"0": "background", "1": "wbc"}}).encode()


def _image(number: str) -> bytes:
    return (TASK / "imagesTr" / f"BloodImage_{number}_0000.png").read_bytes()


def _png(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, format="PNG")
    return out.getvalue()


def _masks_layout(extra: dict[str, bytes] | None = None, drop: str | None = None) -> bytes:
    """The same cases as images/ + masks/ (GIF masks stored 0/255 for the WBC class)."""
    files: dict[str, bytes] = {}
    for image in sorted((TASK / "imagesTr").glob("*.png")):
        stem = image.stem.removesuffix("_0000")
        if stem == drop:
            continue
        files[f"cells/images/{stem}.png"] = image.read_bytes()
        labels = np.asarray(Image.open(TASK / "labelsTr" / f"{stem}.png"))
        out = io.BytesIO()
        Image.fromarray(((labels == 1) * 255).astype(np.uint8)).save(out, format="GIF")
        files[f"cells/masks/{stem}.gif"] = out.getvalue()
    buffer = io.BytesIO()
    import zipfile

    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in {**files, **(extra or {})}.items():
            archive.writestr(name, data)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def trained(client: httpx.Client) -> dict[str, Any]:
    version = _upload(client, "bccd-seg", zip_folder(SEG_TINY),
                      ratios='{"train": 0.5, "validation": 0.25, "test": 0.25}')  # fmt: skip
    assert version["status"] == "ready", version
    assert version["labels"] == ["background", "wbc", "platelets"]
    fractions = version["stats"]["masks"]["foreground_fraction"]
    assert 0.05 < fractions["train"]["wbc"] < 0.2 and 0 < fractions["train"]["platelets"] < 0.02
    body = {
        "task": "segmentation",
        "dataset": f"{version['dataset_name']}:{version['version']}",
        "architecture": "unet_mobilenet_v2",
        "start_from": "imagenet",
        "model_name": "tiny-bccd-seg",
        "params": {"epochs": 2, "image_size": 64, "batch_size": 4, "bootstrap_samples": 100},
    }
    response = client.post("/v1/training-jobs", json=body)
    assert response.status_code == 202, response.text
    assert response.json()["monitor"] == "dice"
    deadline = time.monotonic() + 240
    while (job := client.get(f"/v1/training-jobs/{response.json()['id']}").json())[
        "status"
    ] not in FINAL:
        assert time.monotonic() < deadline, job
        time.sleep(0.3)
    assert job["status"] == "succeeded", job["error"]
    return job  # type: ignore[no-any-return]


def test_training_reports_dice_iou_hd95_and_registers_a_card(
    client: httpx.Client, trained: dict[str, Any]
) -> None:
    assert [e["epoch"] for e in trained["epochs"]] == [1, 2]
    assert set(trained["epochs"][0]["val_metrics"]) == {"dice", "iou"}
    test = trained["test_metrics"]["test"]
    assert test["n_cases"] == 2 and 0 <= test["dice"] <= 1
    assert set(test["per_class"]) == {"wbc", "platelets"}
    assert test["dice_ci95"][0] <= test["dice"] <= test["dice_ci95"][1]
    card = client.get("/v1/models/tiny-bccd-seg/versions/1").json()["card"]
    assert card["task"] == "segmentation" and card["labels"][0] == "background"
    assert card["input"]["resize"] == "letterbox" and "dice_ci95" in card["metrics"]["test"]
    assert "not a medical device" in card["intended_use"]
    names = {a["name"] for a in trained["artifacts"]}
    assert {"curves.png", "model_card.md"} <= names


def _infer(client: httpx.Client, name: str, data: bytes, **form: str) -> dict[str, Any]:
    response = client.post("/v1/jobs", data={"model": "tiny-bccd-seg:1", **form},
                           files=[("files", (name, data, "x/y"))])  # fmt: skip
    assert response.status_code == 202, response.text
    job = wait_for_job(client, response.json()["id"], timeout=120)
    assert job["status"] == "succeeded", job
    return job["images"][0]["output"]  # type: ignore[no-any-return]


def _download(client: httpx.Client, url: str) -> bytes:
    response = client.get(url)
    assert response.status_code == 200, response.text
    return response.content


def test_masks_come_back_in_the_uploaded_grid(
    client: httpx.Client, trained: dict[str, Any]
) -> None:
    image = (TASK / "imagesTr" / "BloodImage_00007_0000.png").read_bytes()
    out = _infer(client, "smear.png", image, threshold="0.05")
    seg = out["segmentation"]
    assert (seg["width"], seg["height"]) == (160, 120)
    mask = np.asarray(Image.open(io.BytesIO(_download(client, out["artifacts"]["mask"]))))
    assert mask.shape == (120, 160)
    for cls in seg["classes"]:
        assert cls["area_px"] == int((mask == cls["class_id"]).sum())
        assert cls["area_mm2"] is None
        for polygon in cls["polygons"]:
            xs, ys = np.array(polygon).T
            assert xs.min() >= 0 and xs.max() <= 160 and ys.min() >= 0 and ys.max() <= 120
    overlay = Image.open(io.BytesIO(_download(client, out["artifacts"]["overlay"])))
    assert overlay.size == (160, 120)
    # min_area removes every region smaller than the image: nothing is left.
    empty = _infer(client, "smear.png", image, threshold="0.05", min_area=str(160 * 120 + 1))
    assert all(c["area_px"] == 0 and c["polygons"] == [] for c in empty["segmentation"]["classes"])


def _dicom(png: bytes) -> bytes:
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("L"))
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientID, ds.PatientName, ds.Modality = "ANONYMOUS", "Anonymous", "OT"
    ds.StudyID, ds.SeriesNumber, ds.InstanceNumber = "1", 1, 1
    ds.PatientBirthDate = ds.PatientSex = ds.StudyDate = ds.StudyTime = ""
    ds.AccessionNumber = ds.ReferringPhysicianName = ""
    ds.PixelSpacing = [str(v) for v in SPACING]
    ds.set_pixel_data(pixels, "MONOCHROME2", 8, generate_instance_uid=False)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_dicom_input_gets_mm_areas_and_a_valid_seg(
    client: httpx.Client, trained: dict[str, Any]
) -> None:
    png = (TASK / "imagesTr" / "BloodImage_00007_0000.png").read_bytes()
    source = _dicom(png)
    out = _infer(client, "smear.dcm", source, threshold="0.05")
    assert out["image"]["format"] == "dicom"
    for cls in out["segmentation"]["classes"]:
        assert cls["area_mm2"] == pytest.approx(cls["area_px"] * SPACING[0] * SPACING[1], abs=1e-3)
    seg_bytes = _download(client, out["artifacts"]["seg"])
    seg = pydicom.dcmread(io.BytesIO(seg_bytes))
    src = pydicom.dcmread(io.BytesIO(source))
    assert seg.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4" and seg.SegmentationType == "BINARY"
    # The SEG references the instance the platform stored: the de-identified copy of the
    # upload (its UIDs are remapped consistently), in the same study as the SEG.
    ref = seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0]
    assert ref.ReferencedSOPClassUID == src.SOPClassUID
    assert ref.ReferencedSOPInstanceUID and seg.StudyInstanceUID
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID != seg.SeriesInstanceUID
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["wbc", "platelets"]
    assert (seg.Rows, seg.Columns) == (120, 160)
    mask = np.asarray(Image.open(io.BytesIO(_download(client, out["artifacts"]["mask"]))))
    frames = seg.pixel_array.reshape(-1, 120, 160)
    assert np.array_equal(frames[0] > 0, mask == 1)
    assert_valid(seg_bytes)  # dciodvfy: no errors (tests/dicom_helpers.py, shared with the SR)


def test_parameters_the_model_cannot_honour_are_422(
    client: httpx.Client, trained: dict[str, Any]
) -> None:
    image = (TASK / "imagesTr" / "BloodImage_00007_0000.png").read_bytes()
    for form in ({"target_sensitivity": "0.9"}, {"score_threshold": "0.3"}):
        response = client.post("/v1/jobs", data={"model": "tiny-bccd-seg:1", **form},
                               files=[("files", ("x.png", image, "image/png"))])  # fmt: skip
        assert response.status_code == 422, response.text
        assert response.headers["content-type"].startswith("application/problem+json")


def test_masks_layout_and_its_problems(client: httpx.Client) -> None:
    ok = _upload(client, "cells-masks", _masks_layout())
    assert ok["status"] == "ready", ok
    assert ok["source_format"] == "masks" and ok["labels"] == ["background", "foreground"]
    bad_size = _png(np.zeros((10, 10), np.uint8))
    bad_value = _png(np.full((120, 160), 7, np.uint8))
    broken = _upload(
        client,
        "cells-broken",
        _masks_layout(
            extra={
                "cells/dataset.json": LABELS_WBC,
                "cells/images/small.png": _image("00000")[:2000],
                "cells/masks/small.png": bad_size,
                "cells/images/seven.png": _image("00001"),
                "cells/masks/seven.png": bad_value,
                "cells/masks/BloodImage_00002.gif": b"GIF89a not really",
            },
        ),
    )  # fmt: skip
    assert broken["status"] == "failed"
    problems = {e["file"]: e["problem"] for e in broken["errors"]}
    assert "not declared" in problems["cells/masks/seven.png"], problems
    assert "unreadable" in problems["cells/masks/BloodImage_00002.gif"], problems
    assert "unreadable image" in problems["cells/images/small.png"], problems
    # Pairing problems are found before any pixel is read.
    orphan = _upload(
        client, "cells-orphan", _masks_layout(extra={"cells/masks/orphan.png": bad_size})
    )
    assert orphan["status"] == "failed"
    assert any(e["file"] == "cells/masks/orphan.png" and "without an image" in e["problem"]
               for e in orphan["errors"]), orphan["errors"]  # fmt: skip
    # A mask whose size differs from its image.
    sized = _upload(client, "cells-size", _masks_layout(
        drop="BloodImage_00003",
        extra={"cells/images/BloodImage_00003.png": _image("00003"),
               "cells/masks/BloodImage_00003.png": bad_size}))  # fmt: skip
    assert sized["status"] == "failed"
    assert any("is 10x10 but its image" in e["problem"] for e in sized["errors"]), sized["errors"]
