"""Detection boxes burned into a copy of the source image: a Secondary Capture (highdicom).

For viewers that cannot draw SR image regions: an RGB Secondary Capture Image Storage object
in the source's study, on the source's pixel grid, with each box, label and score drawn as
in the JSON result's annotated image. It references the source image (Source Image
Sequence) and declares itself derived.
"""

from __future__ import annotations

import uuid
from typing import Any

import highdicom as hd
import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from shared.dicom_results.sr import MANUFACTURER, ModelInfo, SourceResult, stamp
from shared.dicom_results.uids import result_uid, series_uid
from shared.imaging.decode import decode_image
from shared.imaging.overlay import draw_detections

SC_SERIES_NUMBER = 9902
_PLACEHOLDER_ORIENTATION = ("L", "F")  # replaced by the source's own (possibly empty) value


def _orientation(ds: pydicom.Dataset) -> tuple[str, str] | None:
    value = ds.get("PatientOrientation")
    if value is not None and not isinstance(value, str) and len(value) == 2 and all(value):
        return (str(value[0]), str(value[1]))
    return None


def overlay_pixels(
    source: bytes, output: dict[str, Any], labels: list[str], max_pixels: int
) -> np.ndarray:
    """The source image (as the worker decoded it) with the boxes drawn, uint8 RGB."""
    decoded = decode_image(source, max_pixels=max_pixels)
    pixels = decoded.pixels
    size = (decoded.original_width, decoded.original_height)
    if pixels.shape[1::-1] != size:  # decoded at a reduced size: draw at the source's
        rgb = np.asarray(
            Image.fromarray((np.clip(pixels, 0, 1) * 255).astype(np.uint8)).resize(size)
        )
        pixels = (rgb / 255).astype(np.float32)
    return draw_detections(pixels, output.get("detections", []), labels)


def build_overlay(
    job_id: uuid.UUID,
    model: ModelInfo,
    src: SourceResult,
    source_bytes: bytes,
    *,
    when: Any,
    max_pixels: int,
) -> hd.sc.SCImage:
    """The Secondary Capture of one detection result (object index = the image's index)."""
    ds = src.dataset
    rgb = overlay_pixels(source_bytes, src.output, model.labels, max_pixels)
    orientation = _orientation(ds)
    sc = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=ds,
        pixel_array=rgb,
        photometric_interpretation=hd.PhotometricInterpretationValues.RGB,
        bits_allocated=8,
        coordinate_system=hd.CoordinateSystemNames.PATIENT,
        series_instance_uid=series_uid(job_id, model.ref, "sc"),
        series_number=SC_SERIES_NUMBER,
        sop_instance_uid=result_uid(job_id, model.ref, "sc", src.index),
        instance_number=src.index + 1,
        manufacturer=MANUFACTURER,
        patient_orientation=orientation or _PLACEHOLDER_ORIENTATION,
        laterality=ds.get("Laterality") or None,
        transfer_syntax_uid=pydicom.uid.ExplicitVRLittleEndian,
        series_description=f"AI boxes {model.ref}"[:64],
    )
    if orientation is None:  # Type 2: the source's value, empty when it had none
        sc.PatientOrientation = ds.get("PatientOrientation", "")
    if "Laterality" not in sc:  # Type 2C: dciodvfy asks for it; empty = not known
        sc.Laterality = ""
    sc.ImageType = ["DERIVED", "SECONDARY"]
    sc.DerivationDescription = f"detections of {model.ref} drawn on the source image"[:1024]
    ref = Dataset()
    ref.ReferencedSOPClassUID = ds.SOPClassUID
    ref.ReferencedSOPInstanceUID = ds.SOPInstanceUID
    sc.SourceImageSequence = Sequence([ref])
    stamp(sc, when)
    return sc
