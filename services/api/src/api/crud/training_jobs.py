"""Async training-job queries and request checks. Helpers never commit."""

from __future__ import annotations

import re
import uuid
from datetime import datetime

from sqlalchemy import and_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from api.crud.jobs import decode_cursor, encode_cursor
from shared.db.base import utcnow
from shared.db.models import (
    Dataset,
    DatasetItem,
    DatasetStatus,
    DatasetVersion,
    JobStatus,
    Model,
    ModelVersion,
    Split,
    TrainingJob,
)
from shared.errors import Conflict, DatasetNotFound, InvalidRequest, NotFound
from shared.recipes import Fingerprint, derive
from shared.registry import resolve_model_version
from shared.schemas.training import (
    CLASSIFICATION_ARCHITECTURES,
    DETECTION_ARCHITECTURES,
    MONITORS,
    SEGMENTATION_ARCHITECTURES,
    Hardware,
    TrainingJobCreate,
    missing_imagenet_file,
)


class TrainingJobNotFound(NotFound):
    type = "training-job-not-found"
    title = "Training job not found"


def _parse_dataset_ref(ref: str) -> tuple[str, int | None]:
    name, sep, version = ref.strip().rpartition(":")
    if sep and version.isdigit():
        return name, int(version)
    if sep:
        raise InvalidRequest(f"dataset {ref!r} is not of the form 'name' or 'name:version'")
    return version, None


async def _dataset_version(session: AsyncSession, tenant_id: uuid.UUID, ref: str) -> DatasetVersion:
    """The named version, or the newest ready one, of a dataset of this tenant."""
    name, number = _parse_dataset_ref(ref)
    query = (
        select(DatasetVersion)
        .join(Dataset)
        .where(Dataset.name == name, Dataset.tenant_id == tenant_id)
        .options(selectinload(DatasetVersion.dataset))
    )
    if number is not None:
        query = query.where(DatasetVersion.version == number)
    else:
        query = query.where(DatasetVersion.status == DatasetStatus.READY).order_by(
            DatasetVersion.version.desc()
        )
    version = await session.scalar(query.limit(1))
    if version is None:
        raise DatasetNotFound(f"no ready dataset version {ref!r} in this tenant")
    if version.status != DatasetStatus.READY:
        raise Conflict(
            f"dataset version {ref!r} is {version.status}; only a ready version trains",
            dataset_status=version.status,
        )
    present = set(
        await session.scalars(
            select(DatasetItem.split).where(DatasetItem.dataset_version_id == version.id).distinct()
        )
    )
    missing = [s.value for s in Split if s.value not in present]
    if missing:
        raise InvalidRequest(
            f"dataset version {ref!r} has no {' and no '.join(missing)} images; training needs "
            "all three splits (upload again with other split ratios or more images)"
        )
    return version


def _check_architecture(task: str, architecture: str) -> None:
    known = {
        "classification": CLASSIFICATION_ARCHITECTURES,
        "detection": DETECTION_ARCHITECTURES,
        "segmentation": SEGMENTATION_ARCHITECTURES,
    }[task]
    if architecture not in known:
        raise InvalidRequest(
            f"unknown {task} architecture {architecture!r}; "
            f"available: {', '.join(sorted(known)) or 'none on this platform yet'}"
        )


async def _check_start(
    session: AsyncSession, tenant_id: uuid.UUID, start_from: str, architecture: str
) -> None:
    if start_from == "random":
        return
    if start_from == "imagenet":
        missing = missing_imagenet_file(architecture)
        if missing is not None:
            raise InvalidRequest(
                f"no ImageNet weights for {architecture}: {missing} is missing from the local "
                "weights cache (copy torchvision's checkpoint there, set TORCH_HOME, or use "
                "start_from 'random')",
                missing_file=str(missing),
            )
        return
    version: ModelVersion = await session.run_sync(
        lambda s: resolve_model_version(s, start_from, tenant_id)
    )
    if version.architecture != architecture:
        raise InvalidRequest(
            f"start_from {start_from!r} is a {version.architecture}; continuing needs the same "
            f"architecture as the job ({architecture})"
        )


def _default_model_name(dataset_name: str, architecture: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", f"{dataset_name}-{architecture}".lower()).strip("-")
    return slug[:100].strip("-")


async def _check_model_name(session: AsyncSession, tenant_id: uuid.UUID, name: str) -> None:
    model = await session.scalar(select(Model).where(Model.name == name))
    if model is not None and model.tenant_id != tenant_id:
        raise Conflict(f"the model name {name!r} is taken by another owner; choose another name")


async def create_training_job(
    *,
    session: AsyncSession,
    tenant_id: uuid.UUID,
    request: TrainingJobCreate,
    hardware: Hardware = "cpu",
) -> TrainingJob:
    """Validate the request against the database and add a queued job; what the request
    leaves unset is derived from the dataset version (`shared.recipes`) and fixed here.

    Raises:
        DatasetNotFound, Conflict, InvalidRequest, ModelNotFound: see the messages.
    """
    dataset_version = await _dataset_version(session, tenant_id, request.dataset)
    if dataset_version.dataset.task != request.task:
        raise InvalidRequest(
            f"dataset version {dataset_version.id} is a {dataset_version.dataset.task} dataset; "
            f"it cannot train a {request.task} model"
        )
    if request.architecture is not None:  # before the recipe looks its weights up
        _check_architecture(request.task, request.architecture)
    recipe = derive(
        Fingerprint.from_stats(request.task, dataset_version.stats or {}),
        architecture=request.architecture,
        start_from=request.start_from,
        params=request.params,
        caller_params=request.params.model_fields_set,
        hardware=hardware,
    )
    architecture, start_from = recipe.architecture, recipe.start_from
    _check_architecture(request.task, architecture)
    monitor = request.monitor or MONITORS[request.task][0]
    if monitor not in MONITORS[request.task]:
        raise InvalidRequest(
            f"monitor {monitor!r} is not a {request.task} metric; use one of "
            f"{', '.join(MONITORS[request.task])}"
        )
    await _check_start(session, tenant_id, start_from, architecture)
    model_name = request.model_name or _default_model_name(
        dataset_version.dataset.name, architecture
    )
    await _check_model_name(session, tenant_id, model_name)
    job = TrainingJob(
        id=uuid.uuid4(),
        tenant_id=tenant_id,
        status=JobStatus.QUEUED,
        task=request.task,
        dataset_version_id=dataset_version.id,
        architecture=architecture,
        start_from=start_from,
        params=recipe.params.model_dump(),
        recipe=recipe.public.model_dump(mode="json"),
        monitor=monitor,
        model_name=model_name,
        promote=request.promote,
        progress={"epoch": 0, "epochs": recipe.params.epochs, "phase": "queued"},
        attempts=0,
        created_at=utcnow(),
    )
    session.add(job)
    return job


async def get_training_job(
    *, session: AsyncSession, tenant_id: uuid.UUID, job_id: uuid.UUID
) -> TrainingJob:
    """A training job of this tenant; another tenant's is reported as not found."""
    job = await session.scalar(
        select(TrainingJob)
        .where(TrainingJob.id == job_id, TrainingJob.tenant_id == tenant_id)
        .options(
            selectinload(TrainingJob.epochs),
            selectinload(TrainingJob.dataset_version).selectinload(DatasetVersion.dataset),
        )
        .execution_options(populate_existing=True)
    )
    if job is None:
        raise TrainingJobNotFound(f"no training job with id {job_id}", job_id=str(job_id))
    return job


async def list_training_jobs(
    *,
    session: AsyncSession,
    tenant_id: uuid.UUID,
    statuses: list[JobStatus] | None,
    cursor: str | None,
    limit: int,
    created_after: datetime | None = None,
) -> tuple[list[TrainingJob], str | None]:
    """Newest first, keyset-paginated on (created_at, id)."""
    query = (
        select(TrainingJob)
        .where(TrainingJob.tenant_id == tenant_id)
        .options(selectinload(TrainingJob.dataset_version).selectinload(DatasetVersion.dataset))
        .order_by(TrainingJob.created_at.desc(), TrainingJob.id.desc())
        .limit(limit + 1)
    )
    if statuses:
        query = query.where(TrainingJob.status.in_([s.value for s in statuses]))
    if created_after:
        query = query.where(TrainingJob.created_at >= created_after)
    if cursor:
        at, last_id = decode_cursor(cursor)
        query = query.where(
            or_(
                TrainingJob.created_at < at,
                and_(TrainingJob.created_at == at, TrainingJob.id < last_id),
            )
        )
    jobs = list((await session.scalars(query)).all())
    next_cursor = encode_cursor(jobs[limit - 1]) if len(jobs) > limit else None  # type: ignore[arg-type]
    return jobs[:limit], next_cursor


async def cancel_training_job(
    *, session: AsyncSession, tenant_id: uuid.UUID, job_id: uuid.UUID
) -> None:
    """Cancel a queued or running job; the trainer sees it at its next step and stops."""
    result = await session.execute(
        update(TrainingJob)
        .where(
            TrainingJob.id == job_id,
            TrainingJob.tenant_id == tenant_id,
            TrainingJob.status.in_([JobStatus.QUEUED, JobStatus.RUNNING]),
        )
        .values(status=JobStatus.CANCELLED, finished_at=utcnow(), lease_expires_at=None)
        .returning(TrainingJob.id)
    )
    if result.first() is None:
        job = await get_training_job(session=session, tenant_id=tenant_id, job_id=job_id)
        raise Conflict(
            f"training job {job_id} is already {job.status} and can no longer be cancelled",
            job_id=str(job_id),
            job_status=job.status,
        )


async def version_refs(
    *, session: AsyncSession, version_ids: list[uuid.UUID | None]
) -> dict[uuid.UUID, str]:
    """``name:version`` of registered results, by model version id."""
    ids = [i for i in version_ids if i is not None]
    if not ids:
        return {}
    rows = await session.execute(
        select(ModelVersion.id, Model.name, ModelVersion.version)
        .join(Model)
        .where(ModelVersion.id.in_(ids))
    )
    return {vid: f"{name}:{version}" for vid, name, version in rows.all()}
