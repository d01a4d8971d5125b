"""The TID 1500 Measurement Report of a job, as a Comprehensive 3D SR (highdicom).

Per source image:
- classification: one TID 1501 group per label (finding type = the label's concept) with its
  probability (DCM 122157, UCUM "1") and "Presence of property" Present for the label the
  job reported, Absent for the others; the positive label's group also carries the operating
  point used: Threshold Value (DCM 122411) and, when the model card has them, its
  validation Case Sensitivity / Case Specificity (DCM 111088 / 111090, as fractions).
- detection: one TID 1410 group per box, the box as a closed 5-point POLYLINE image region
  (SCOORD) in the source image's pixel coordinates (column, row; the box's corners as the
  JSON result gives them), finding type = the label, the detector's score (SCT "Score"); and
  one TID 1501 group per image with the score threshold used.
- segmentation: one TID 1501 group per image with the area of each class, when known.
Every group names the algorithm (TID 4019: model name and version) and its source image.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import highdicom as hd
import numpy as np
import pydicom
from pydicom.sr.codedict import codes

from shared.dicom_results import codes as c
from shared.dicom_results.uids import device_uid, result_uid, series_uid

SR_SERIES_NUMBER = 9900
MANUFACTURER = "medimg"


@dataclass(frozen=True)
class SourceResult:
    """One DICOM input of a job and its stored (de-identified) instance and JSON result."""

    index: int
    dataset: pydicom.Dataset
    output: dict[str, Any]


@dataclass(frozen=True)
class ModelInfo:
    name: str
    version: int
    task: str
    labels: list[str]
    positive_label: str | None

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"


# Type 2 attributes highdicom copies from the evidence into the report; de-identification
# may have removed them (empty is the de-identified value PS3.15 allows for them).
_TYPE2_COPIED = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "AccessionNumber",
    "ReferringPhysicianName",
)


def complete_type2(ds: pydicom.Dataset) -> pydicom.Dataset:
    """Give ``ds`` empty values for the copied Type 2 attributes it lacks (in place)."""
    for keyword in _TYPE2_COPIED:
        if keyword not in ds:
            setattr(ds, keyword, "")
    return ds


def algorithm(model: ModelInfo, parameters: Sequence[str] = ()) -> hd.sr.AlgorithmIdentification:
    return hd.sr.AlgorithmIdentification(
        name=model.name[:64],
        version=str(model.version),
        family=c.AI_FAMILY,
        parameters=list(parameters) or None,
    )


def _tracking(job_id: uuid.UUID, model: ModelInfo, key: str, text: str) -> hd.sr.TrackingIdentifier:
    return hd.sr.TrackingIdentifier(
        uid=result_uid(job_id, model.ref, "sr-group", key), identifier=text[:64]
    )


def _measure(name: Any, value: float, algo: hd.sr.AlgorithmIdentification) -> hd.sr.Measurement:
    return hd.sr.Measurement(name=name, value=float(value), unit=c.NO_UNITS, algorithm_id=algo)


def _classification_groups(
    job_id: uuid.UUID, model: ModelInfo, src: SourceResult
) -> list[hd.sr.MeasurementsAndQualitativeEvaluations]:
    out = src.output
    point: dict[str, Any] | None = out.get("operating_point")
    params = [f"threshold={point['threshold']:.6g}"] if point else []
    algo = algorithm(model, params)
    groups = []
    for label, probability in out.get("probabilities", {}).items():
        measurements = [_measure(c.PROBABILITY, probability, algo)]
        if point is not None and label == model.positive_label:
            measurements.append(_measure(c.THRESHOLD, point["threshold"], algo))
            for key, code in (("sensitivity", c.SENSITIVITY), ("specificity", c.SPECIFICITY)):
                if point.get(key) is not None:
                    measurements.append(_measure(code, point[key], algo))
        reported = c.PRESENT if label == out.get("label") else c.ABSENT
        groups.append(
            hd.sr.MeasurementsAndQualitativeEvaluations(
                tracking_identifier=_tracking(
                    job_id, model, f"{src.index}:{label}", f"image {src.index} {label}"
                ),
                finding_type=c.label_concept(model.labels, label),
                algorithm_id=algo,
                measurements=measurements,
                qualitative_evaluations=[hd.sr.QualitativeEvaluation(c.PRESENCE, reported)],
                source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(src.dataset)],
            )
        )
    return groups


def box_polyline(box: Sequence[float]) -> np.ndarray:
    """[x1, y1, x2, y2] -> the closed 5-point polyline (column, row) of the box's corners."""
    x1, y1, x2, y2 = (float(v) for v in box)
    return np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2], [x1, y1]], dtype=np.float64)


def _detection_groups(job_id: uuid.UUID, model: ModelInfo, src: SourceResult) -> list[Any]:
    chosen = src.output.get("params", {})
    params = [f"{k}={v}" for k, v in sorted(chosen.items())]
    algo = algorithm(model, params)
    groups: list[Any] = []
    if "score_threshold" in chosen:
        groups.append(
            hd.sr.MeasurementsAndQualitativeEvaluations(
                tracking_identifier=_tracking(
                    job_id, model, f"{src.index}:detections", f"image {src.index} detections"
                ),
                algorithm_id=algo,
                measurements=[_measure(c.THRESHOLD, chosen["score_threshold"], algo)],
                source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(src.dataset)],
            )
        )
    for k, det in enumerate(src.output.get("detections", [])):
        region = hd.sr.ImageRegion(
            graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
            graphic_data=box_polyline(det["box"]),
            source_image=hd.sr.SourceImageForRegion.from_source_image(src.dataset),
        )
        groups.append(
            hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
                tracking_identifier=_tracking(
                    job_id, model, f"{src.index}:box:{k}", f"image {src.index} box {k + 1}"
                ),
                referenced_region=region,
                finding_type=c.label_concept(model.labels, det["label"]),
                algorithm_id=algo,
                measurements=[_measure(c.SCORE, det["score"], algo)],
            )
        )
    return groups


def _segmentation_groups(
    job_id: uuid.UUID, model: ModelInfo, src: SourceResult
) -> list[hd.sr.MeasurementsAndQualitativeEvaluations]:
    algo = algorithm(model)
    groups = []
    for cls in src.output.get("segmentation", {}).get("classes", []):
        label = cls.get("label")
        if label not in model.labels:
            continue
        present = c.PRESENT if cls.get("pixels", cls.get("area_px", 0)) else c.ABSENT
        groups.append(
            hd.sr.MeasurementsAndQualitativeEvaluations(
                tracking_identifier=_tracking(
                    job_id, model, f"{src.index}:seg:{label}", f"image {src.index} {label}"
                ),
                finding_type=c.label_concept(model.labels, label),
                algorithm_id=algo,
                qualitative_evaluations=[hd.sr.QualitativeEvaluation(c.PRESENCE, present)],
                source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(src.dataset)],
            )
        )
    return groups


def build_sr(
    job_id: uuid.UUID, model: ModelInfo, sources: Sequence[SourceResult], when: datetime
) -> hd.sr.Comprehensive3DSR:
    """The job's TID 1500 report over ``sources`` (all of one study), dated ``when``."""
    if not sources:
        raise ValueError("an SR needs at least one DICOM source image")
    groups: list[Any] = []
    for src in sources:
        if model.task == "detection":
            groups.extend(_detection_groups(job_id, model, src))
        elif model.task == "segmentation":
            groups.extend(_segmentation_groups(job_id, model, src))
        else:
            groups.extend(_classification_groups(job_id, model, src))
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,  # DCM 121007
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=device_uid(model.ref),
            name=model.ref[:64],
            manufacturer_name=MANUFACTURER,
            model_name=model.ref[:64],
        ),
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=c.IMAGING_PROCEDURE,
        imaging_measurements=groups,
    )
    sr = hd.sr.Comprehensive3DSR(
        evidence=[s.dataset for s in sources],
        content=report[0],
        series_instance_uid=series_uid(job_id, model.ref, "sr"),
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=result_uid(job_id, model.ref, "sr", 0),
        instance_number=1,
        manufacturer=MANUFACTURER,
        is_complete=True,
        series_description=f"AI results {model.ref}"[:64],
    )
    stamp(sr, when)
    return sr


def stamp(ds: pydicom.Dataset, when: datetime) -> None:
    """Date the object by the job's finish, not by the build, so rebuilds are identical."""
    date, time = when.strftime("%Y%m%d"), when.strftime("%H%M%S")
    for prefix in ("Content", "InstanceCreation", "Series"):
        if f"{prefix}Date" in ds:
            setattr(ds, f"{prefix}Date", date)
        if f"{prefix}Time" in ds:
            setattr(ds, f"{prefix}Time", time)
    if "DateOfSecondaryCapture" in ds:
        ds.DateOfSecondaryCapture, ds.TimeOfSecondaryCapture = date, time
    for item in ds.get("ContributingEquipmentSequence", []):  # highdicom's own entry
        if "ContributionDateTime" in item:
            item.ContributionDateTime = when.strftime("%Y%m%d%H%M%S")
