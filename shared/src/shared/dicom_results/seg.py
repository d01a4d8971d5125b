"""DICOM Segmentation (SEG) objects for a model's mask over a DICOM input (highdicom).

A BINARY SEG (Segmentation Storage, 1.2.840.10008.5.1.4.1.1.66.4) with one segment per
foreground class, referencing the source instance (same study, frame of reference and pixel
grid), so a PACS viewer overlays it on the image it came from. BINARY rather than LABELMAP:
Label Map Segmentation is a 2024 SOP class many archives and validators do not know yet.
Empty classes are kept as segments with an all-zero frame, so "nothing found" is explicit.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Sequence

import highdicom as hd
import numpy as np
import pydicom
from pydicom.sr.codedict import codes

from shared.dicom_results.sr import complete_type2
from shared.dicom_results.uids import result_uid, series_uid

# SNOMED CT "Nodule" for labels that name one; other labels get a code of this private
# scheme (value = class id, meaning = label), which DICOM allows for local concepts.
_NODULE = hd.sr.CodedConcept("27925004", "SCT", "Nodule")
PRIVATE_SCHEME = "99MEDIMG"


def _segmented_type(class_id: int, label: str) -> hd.sr.CodedConcept:
    if "nodule" in label.lower():
        return _NODULE
    return hd.sr.CodedConcept(str(class_id), PRIVATE_SCHEME, label[:64])


def build_seg(
    source: bytes | pydicom.Dataset,
    mask: np.ndarray,
    labels: Sequence[str],
    *,
    model_ref: str,
    software_version: str,
    job_id: uuid.UUID,
    index: int,
    series_number: int = 9901,
) -> bytes:
    """A DICOM SEG of ``mask`` (class id per pixel of the source's Rows x Columns grid).

    Args:
        source: the DICOM instance the mask was computed on (bytes as uploaded, or parsed).
        labels: the model's labels; ``labels[0]`` is the background (not a segment).
        model_ref: ``name:version`` of the model, recorded as the algorithm.
        job_id, index: the job and its image; with ``model_ref`` they fix the SEG's UIDs
            (shared.dicom_results.uids), so the job's artifact and every delivered copy are
            one object.

    Raises:
        ValueError: the mask does not match the source's pixel grid, or the source is not a
            single-frame image highdicom can reference.
    """
    seg = seg_dataset(
        source,
        mask,
        labels,
        model_ref=model_ref,
        software_version=software_version,
        job_id=job_id,
        index=index,
        series_number=series_number,
    )
    out = io.BytesIO()
    seg.save_as(out)
    return out.getvalue()


def seg_dataset(
    source: bytes | pydicom.Dataset,
    mask: np.ndarray,
    labels: Sequence[str],
    *,
    model_ref: str,
    software_version: str,
    job_id: uuid.UUID,
    index: int,
    series_number: int = 9901,
) -> hd.seg.Segmentation:
    """The SEG of `build_seg` as a dataset (see there)."""
    ds = source if isinstance(source, pydicom.Dataset) else pydicom.dcmread(io.BytesIO(source))
    complete_type2(ds)  # a de-identified source may lack the patient/study Type 2 attributes
    if int(getattr(ds, "NumberOfFrames", 1) or 1) != 1:
        raise ValueError("the source is multi-frame; a SEG per frame is not supported yet")
    if mask.shape != (int(ds.Rows), int(ds.Columns)):
        raise ValueError(f"mask {mask.shape} is not the source's {ds.Rows}x{ds.Columns} grid")
    name, _, version = model_ref.partition(":")
    algorithm = hd.AlgorithmIdentificationSequence(
        name=name[:64], version=version or "1", family=codes.cid7162.ArtificialIntelligence
    )
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=k,
            segment_label=label[:64],
            segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
            segmented_property_type=_segmented_type(k, label),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
        )
        for k, label in enumerate(labels[1:], start=1)
    ]
    # One binary plane per segment: (frames=1, rows, columns, segments).
    planes = np.stack([mask == k for k in range(1, len(labels))], axis=-1)[None]
    seg = hd.seg.Segmentation(
        source_images=[ds],
        pixel_array=planes.astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=series_uid(job_id, model_ref, "seg"),
        series_number=series_number,
        sop_instance_uid=result_uid(job_id, model_ref, "seg", index),
        instance_number=index + 1,
        manufacturer="medimg",
        manufacturer_model_name=model_ref[:64],
        software_versions=software_version,
        device_serial_number="medimg",
        series_description=f"Segmentation by {model_ref}"[:64],
        content_label="MEDIMG_SEG",
        content_description=f"Automatic segmentation by {model_ref}"[:64],
        omit_empty_frames=False,
    )
    if "FrameOfReferenceUID" not in ds and "PatientOrientation" not in seg:
        # General Image: Type 2C without a frame of reference (secondary captures); copy the
        # source's (possibly empty) value so viewers orient the SEG as the image.
        seg.PatientOrientation = ds.get("PatientOrientation", "")
    return seg
