"""DICOM test inputs made from committed fixtures, and the one validation assertion.

`smear_dicom` wraps the committed BCCD JPEG (tests/fixtures/datasets/bccd_tiny, MIT) in an
RGB Secondary Capture, so the bundled detector can run on DICOM input. `assert_valid` runs
dciodvfy (and PixelMed's SR validator for SRs) through shared.dicom_validation and fails
naming the Debian package when a tool is missing and cannot be installed.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from shared import dicom_validation
from tests.conftest import FIXTURES

SMEAR_JPEG = FIXTURES / "datasets" / "bccd_tiny" / "JPEGImages" / "BloodImage_00007.jpg"


def smear_dicom(path: Path = SMEAR_JPEG, *, study_uid: str | None = None) -> bytes:
    """The JPEG's pixels as an uncompressed RGB Secondary Capture (Part 10 bytes)."""
    rgb = np.asarray(Image.open(path).convert("RGB"))
    ds = Dataset()
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientName, ds.PatientID = "Smear^Test", "SMEAR-1"
    ds.Modality, ds.ConversionType = "OT", "WSD"
    ds.StudyDate, ds.StudyTime = "20260101", "120000"
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.Rows, ds.Columns = rgb.shape[:2]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = rgb.tobytes()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def assert_valid(obj: pydicom.Dataset | bytes, *, pixelmed: bool | None = None) -> None:
    """No dciodvfy errors; for an SR (or ``pixelmed=True``) no PixelMed errors either."""
    ds = obj if isinstance(obj, pydicom.Dataset) else pydicom.dcmread(io.BytesIO(obj))
    is_sr = str(ds.get("Modality", "")) == "SR"
    try:
        reports = [dicom_validation.dciodvfy(obj)]
        if pixelmed if pixelmed is not None else is_sr:
            reports.append(dicom_validation.pixelmed_sr(obj))
    except dicom_validation.ToolMissing as exc:
        pytest.fail(str(exc))
    for report in reports:
        assert not report.errors, f"{report.tool} errors:\n{report.output}"
    if len(reports) > 1:
        assert "Found Root Template TID_1500" in reports[1].output, reports[1].output
