"""DICOM result objects of a finished job (SR, SC, SEG), built with highdicom.

Torch-free: the API (report.dcm, job view), the worker and the gateway (STOW-RS / C-STORE
delivery) all call `build_job_objects`. UIDs are derived deterministically from the job id,
the model's ``name:version``, the object kind and its index, so building twice (or
re-delivering) yields the same SOP Instance UIDs and a PACS never stores a second copy.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import pydicom
    from sqlalchemy.orm import Session

    from shared.storage import BlobStore

ResultKind = Literal["sr", "sc", "seg"]


@dataclass(frozen=True)
class ResultObject:
    """One DICOM object made from a job's results."""

    kind: ResultKind
    sop_class_uid: str
    sop_instance_uid: str
    series_instance_uid: str
    study_instance_uid: str
    dataset: pydicom.Dataset


def build_job_objects(
    session: Session, *, job_id: uuid.UUID, store: BlobStore
) -> list[ResultObject]:
    """Every DICOM result object of a finished job on DICOM input (SR first).

    Args:
        session: a sync session; only reads.
        job_id: the job.
        store: the blob store holding the job's (de-identified) input instances.

    Returns:
        The SR, then per-task objects (a Secondary Capture with the boxes drawn per
        detection image, a SEG per segmentation image).

    Raises:
        JobNotFound: no such job.
        ResultsNotReady: the job has not finished successfully.
        NoDicomInput: none of the job's inputs is DICOM.
    """
    from shared.dicom_results.builder import build_job_objects as _build

    return _build(session, job_id=job_id, store=store)


__all__ = ["ResultKind", "ResultObject", "build_job_objects"]
