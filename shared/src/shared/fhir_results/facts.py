"""What a FHIR report is made from: a finished job's results and its images' DICOM UIDs.

Kept as plain data so the builder is a pure function (tested without a database) and so the
async API and the sync gateway can each gather the facts their own way.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime
from io import BytesIO
from pathlib import Path
from typing import Any

import pydicom
from pydicom.errors import InvalidDicomError

from shared.db.models import ImageStatus, Job


@dataclass(frozen=True)
class DicomUids:
    study: str
    series: str | None = None
    sop_instance: str | None = None


@dataclass(frozen=True)
class ImageFacts:
    index: int
    status: str
    output: dict[str, Any] | None
    dicom: DicomUids | None = None


@dataclass(frozen=True)
class PatientFacts:
    """Identifiers of the hospital's patient (only on copies posted to its own FHIR server)."""

    patient_id: str


@dataclass(frozen=True)
class JobFacts:
    job_id: uuid.UUID
    model_name: str
    model_version: int
    architecture: str
    weights_sha256: str
    task: str  # classification | detection | segmentation
    positive_label: str | None
    finished_at: datetime
    images: list[ImageFacts] = field(default_factory=list)
    patient: PatientFacts | None = None

    @property
    def model_ref(self) -> str:
        return f"{self.model_name}:{self.model_version}"

    @property
    def study_uids(self) -> list[str]:
        """Distinct StudyInstanceUIDs of the DICOM inputs, in image order."""
        seen: dict[str, None] = {}
        for image in self.images:
            if image.dicom is not None:
                seen.setdefault(image.dicom.study)
        return list(seen)


def dicom_uids(source: bytes | Path) -> DicomUids | None:
    """Study/Series/SOP Instance UIDs from a stored input's header; None if it is not DICOM
    (or gone). A path is read only up to the pixel data."""
    try:
        ds = pydicom.dcmread(
            BytesIO(source) if isinstance(source, bytes) else source,
            stop_before_pixels=True,
            force=True,
            specific_tags=["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"],
        )
    except (InvalidDicomError, ValueError, EOFError, OSError):
        return None
    study = str(ds.get("StudyInstanceUID") or "")
    if not study:
        return None
    series, sop = ds.get("SeriesInstanceUID"), ds.get("SOPInstanceUID")
    return DicomUids(study, str(series) if series else None, str(sop) if sop else None)


def job_facts(job: Job, dicom: dict[int, DicomUids] | None = None) -> JobFacts:
    """Facts of a finished job (model version, model and images loaded).

    Args:
        job: a job with `model_version.model` and `images` loaded.
        dicom: UIDs of its DICOM inputs by image index (read from the stored blobs).
    """
    version = job.model_version
    card = version.card or {}
    dicom = dicom or {}
    return JobFacts(
        job_id=job.id,
        model_name=version.model.name,
        model_version=version.version,
        architecture=version.architecture,
        weights_sha256=version.weights_sha256,
        task=version.model.task,
        positive_label=card.get("positive_label"),
        finished_at=job.finished_at or job.created_at,
        images=[
            ImageFacts(
                index=image.index,
                status=image.status,
                output=image.output if image.status == ImageStatus.SUCCEEDED else None,
                dicom=dicom.get(image.index),
            )
            for image in job.images
        ],
    )


def reidentified(facts: JobFacts, mapping: dict[str, Any] | None) -> JobFacts:
    """Facts with the hospital's original UIDs and patient id (shared.delivery.reidentify map).

    Inputs are stored de-identified; a copy posted to the hospital's own FHIR server must
    reference the study as the PACS knows it, and the patient the report is about.
    """
    if not mapping:
        return facts
    uids: dict[str, str] = mapping.get("uids", {})

    def back(value: str | None) -> str | None:
        return uids.get(value, value) if value else value

    images = [
        replace(
            image,
            dicom=DicomUids(
                back(image.dicom.study) or image.dicom.study,
                back(image.dicom.series),
                back(image.dicom.sop_instance),
            ),
        )
        if image.dicom
        else image
        for image in facts.images
    ]
    patient_id = mapping.get("patient", {}).get("PatientID")
    patient = PatientFacts(str(patient_id)) if patient_id else None
    return replace(facts, images=images, patient=patient)
