"""Build a finished job's DICOM result objects: the SR, then SCs (detection) or SEGs.

Reads the job, its model version and artifacts from Postgres (`load_job_inputs`, a plain
snapshot), then builds from that snapshot and the blob store (`build_objects`), so the API
can read in its session and build in a worker thread. `planned_objects` lists the objects
(kind and UIDs) without building them, for the job view.

Sources are the job's stored, de-identified instances: results reference the de-identified
study, and the gateway maps them back at delivery (shared.delivery.reidentify).
"""

from __future__ import annotations

import io
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import pydicom
from PIL import Image
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from shared.db.models import Artifact, ImageStatus, Job, JobStatus, ModelVersion
from shared.dicom_results import ResultKind, ResultObject
from shared.dicom_results.errors import NoDicomInput, ResultsNotReady
from shared.dicom_results.sr import ModelInfo, SourceResult, build_sr, complete_type2
from shared.dicom_results.uids import result_uid, series_uid
from shared.errors import JobNotFound

if TYPE_CHECKING:
    from shared.storage import BlobStore

SR_CLASS = "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR Storage
SC_CLASS = "1.2.840.10008.5.1.4.1.1.7"  # Secondary Capture Image Storage
SEG_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"  # Segmentation Storage
_CLASSES: dict[str, str] = {"sr": SR_CLASS, "sc": SC_CLASS, "seg": SEG_CLASS}
DEFAULT_MAX_PIXELS = 50_000_000


@dataclass(frozen=True)
class InputImage:
    index: int
    storage_key: str
    output: dict[str, Any]
    mask_key: str | None  # segmentation: the label-map PNG artifact


@dataclass(frozen=True)
class JobInputs:
    job_id: uuid.UUID
    model: ModelInfo
    finished_at: datetime
    images: list[InputImage]  # the DICOM inputs with a result, in index order


@dataclass(frozen=True)
class PlannedObject:
    kind: ResultKind
    index: int
    sop_class_uid: str
    sop_instance_uid: str
    series_instance_uid: str


def load_job_inputs(session: Session, job_id: uuid.UUID) -> JobInputs:
    """What building needs, read in one go.

    Raises:
        JobNotFound: no such job.
        ResultsNotReady: the job has not succeeded (still running, failed or cancelled).
        NoDicomInput: none of its inputs is a DICOM image with a result.
    """
    job = session.scalar(
        select(Job)
        .where(Job.id == job_id)
        .options(
            selectinload(Job.images),
            selectinload(Job.model_version).selectinload(ModelVersion.model),
        )
    )
    if job is None:
        raise JobNotFound(f"no job with id {job_id}", job_id=str(job_id))
    if job.status != JobStatus.SUCCEEDED:
        raise ResultsNotReady(
            f"job {job_id} is {job.status}: DICOM results exist once it has succeeded",
            job_status=str(job.status),
        )
    version = job.model_version
    card = version.card or {}
    model = ModelInfo(
        name=version.model.name,
        version=version.version,
        task=str(card.get("task", "classification")),
        labels=list(version.labels),
        positive_label=card.get("positive_label"),
    )
    masks = {
        a.name: a.storage_key
        for a in session.scalars(
            select(Artifact).where(Artifact.owner_id == job.id, Artifact.name.like("mask-%"))
        )
    }
    images = [
        InputImage(
            index=im.index,
            storage_key=im.storage_key,
            output=dict(im.output or {}),
            mask_key=masks.get(f"mask-{im.index}.png"),
        )
        for im in job.images
        if im.format == "dicom" and im.status == ImageStatus.SUCCEEDED and im.output
    ]
    if not images:
        raise NoDicomInput(
            f"job {job_id} has no DICOM input with a result: DICOM results are made for DICOM "
            "inputs only"
        )
    return JobInputs(job.id, model, job.finished_at or job.created_at, images)


def planned_objects(inputs: JobInputs) -> list[PlannedObject]:
    """The objects `build_objects` makes (SR first), with their UIDs, without building them."""
    ref = inputs.model.ref
    plan: list[tuple[ResultKind, int]] = [("sr", 0)]
    for image in inputs.images:
        if inputs.model.task == "detection":
            plan.append(("sc", image.index))
        elif inputs.model.task == "segmentation" and _has_seg(image):
            plan.append(("seg", image.index))
    return [
        PlannedObject(
            kind,
            index,
            _CLASSES[kind],
            result_uid(inputs.job_id, ref, kind, index),
            series_uid(inputs.job_id, ref, kind),
        )
        for kind, index in plan
    ]


def _has_seg(image: InputImage) -> bool:
    return image.mask_key is not None and "seg_error" not in image.output


def build_objects(
    inputs: JobInputs,
    store: BlobStore,
    *,
    kinds: tuple[ResultKind, ...] = ("sr", "sc", "seg"),
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> list[ResultObject]:
    """Build the planned objects of the wanted kinds (CPU and blob reads: not on a loop)."""
    raw = {im.index: store.get(im.storage_key) for im in inputs.images}
    sources = [
        SourceResult(
            im.index, complete_type2(pydicom.dcmread(io.BytesIO(raw[im.index]))), im.output
        )
        for im in inputs.images
    ]
    by_index = {s.index: s for s in sources}
    images = {im.index: im for im in inputs.images}
    objects: list[ResultObject] = []
    for planned in planned_objects(inputs):
        if planned.kind not in kinds:
            continue
        if planned.kind == "sr":
            ds: pydicom.Dataset = build_sr(inputs.job_id, inputs.model, sources, inputs.finished_at)
        elif planned.kind == "sc":
            from shared.dicom_results.sc import build_overlay

            ds = build_overlay(
                inputs.job_id,
                inputs.model,
                by_index[planned.index],
                raw[planned.index],
                when=inputs.finished_at,
                max_pixels=max_pixels,
            )
        else:
            ds = _seg(inputs, images[planned.index], by_index[planned.index], store)
        objects.append(
            ResultObject(
                kind=planned.kind,
                sop_class_uid=str(ds.SOPClassUID),
                sop_instance_uid=str(ds.SOPInstanceUID),
                series_instance_uid=str(ds.SeriesInstanceUID),
                study_instance_uid=str(ds.StudyInstanceUID),
                dataset=ds,
            )
        )
    return objects


def _seg(
    inputs: JobInputs, image: InputImage, src: SourceResult, store: BlobStore
) -> pydicom.Dataset:
    """The SEG rebuilt from the stored label map: the same UIDs as the worker's artifact."""
    from importlib.metadata import version as package_version

    from shared.dicom_results.seg import seg_dataset
    from shared.dicom_results.sr import stamp

    assert image.mask_key is not None
    mask = np.asarray(Image.open(io.BytesIO(store.get(image.mask_key))))
    seg = seg_dataset(
        src.dataset,
        mask,
        inputs.model.labels,
        model_ref=inputs.model.ref,
        software_version=package_version("medimg-shared"),
        job_id=inputs.job_id,
        index=image.index,
    )
    stamp(seg, inputs.finished_at)
    return seg


def build_job_objects(
    session: Session, *, job_id: uuid.UUID, store: BlobStore
) -> list[ResultObject]:
    """Every result object of a finished job on DICOM input (SR first); see the package."""
    return build_objects(load_job_inputs(session, job_id), store)
