"""ORM rows -> public schemas."""

from __future__ import annotations

from api.crud.jobs import ImageCounts
from shared.db.models import (
    CallbackDelivery,
    ImageStatus,
    Job,
    JobImage,
    JobStatus,
    Model,
    ModelVersion,
    Priority,
)
from shared.schemas.jobs import (
    CallbackPublic,
    ImagePublic,
    JobPublic,
    JobSummary,
    ModelRefPublic,
    ProblemRef,
)
from shared.schemas.models import InputSpec, ModelPublic, ModelVersionPublic


def _problem(type_: str | None, detail: str | None) -> ProblemRef | None:
    return ProblemRef(type=type_, detail=detail or "") if type_ else None


def model_ref(version: ModelVersion) -> ModelRefPublic:
    return ModelRefPublic(
        name=version.model.name,
        version=version.version,
        ref=version.ref,
        architecture=version.architecture,
    )


def job_summary(job: Job, counts: ImageCounts) -> JobSummary:
    return JobSummary(
        id=job.id,
        status=JobStatus(job.status),
        model=model_ref(job.model_version),
        priority=Priority(job.priority),
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        image_count=job.image_count,
        images_succeeded=counts.succeeded,
        images_failed=counts.failed,
        error=_problem(job.error_type, job.error_detail),
    )


def image_public(image: JobImage) -> ImagePublic:
    return ImagePublic(
        index=image.index,
        filename=image.filename,
        format=image.format,
        size_bytes=image.size_bytes,
        sha256=image.sha256,
        status=ImageStatus(image.status),
        output=image.output,
        error=_problem(image.error_type, image.error_detail),
        latency_ms=image.latency_ms,
        finished_at=image.finished_at,
    )


def callback_public(job: Job, delivery: CallbackDelivery | None) -> CallbackPublic | None:
    if job.callback_url is None:
        return None
    if delivery is None:
        return CallbackPublic(url=job.callback_url, status="waiting")
    return CallbackPublic(
        url=delivery.url,
        status=delivery.status,
        attempts=delivery.attempts,
        last_error=delivery.last_error,
        next_attempt_at=None if delivery.status != "pending" else delivery.next_attempt_at,
        delivered_at=delivery.delivered_at,
    )


def job_public(job: Job, delivery: CallbackDelivery | None = None) -> JobPublic:
    counts = ImageCounts(
        succeeded=sum(i.status == ImageStatus.SUCCEEDED for i in job.images),
        failed=sum(i.status == ImageStatus.FAILED for i in job.images),
    )
    return JobPublic(
        **job_summary(job, counts).model_dump(),
        params=job.params,
        attempts=job.attempts,
        worker=job.worker,
        images=[image_public(i) for i in job.images],
        callback=callback_public(job, delivery),
    )


def model_version_public(version: ModelVersion, model: Model) -> ModelVersionPublic:
    return ModelVersionPublic(
        name=model.name,
        version=version.version,
        ref=f"{model.name}:{version.version}",
        task=model.task,  # type: ignore[arg-type]
        architecture=version.architecture,
        labels=version.labels,
        input=InputSpec.model_validate(version.input_spec),
        queue=version.queue,
        weights_sha256=version.weights_sha256,
        created_at=version.created_at,
        card=version.card,
    )


def model_public(model: Model) -> ModelPublic:
    latest = model.versions[-1]
    return ModelPublic(
        name=model.name,
        task=model.task,  # type: ignore[arg-type]
        description=model.description,
        latest=model_version_public(latest, model),
        versions=[v.version for v in model.versions],
    )
