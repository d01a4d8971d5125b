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


def deprecation_note(version: ModelVersion) -> str | None:
    """Why a result's model should no longer be relied on, if it should not."""
    model = version.model
    if version.deleted_at or model.deleted_at:
        when = version.deleted_at or model.deleted_at
        return f"deleted on {when:%Y-%m-%d}: no new jobs run it; this result stays readable"
    for target in (version, model):
        if target.deprecated_at is not None:
            return f"deprecated on {target.deprecated_at:%Y-%m-%d}: {target.deprecation_reason}"
    return None


def model_ref(version: ModelVersion) -> ModelRefPublic:
    return ModelRefPublic(
        name=version.model.name,
        version=version.version,
        ref=version.ref,
        architecture=version.architecture,
        deprecated=deprecation_note(version),
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
        burned_in_annotation=image.burned_in_annotation,
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


def model_version_public(
    version: ModelVersion, model: Model, aliases: list[str] | None = None
) -> ModelVersionPublic:
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
        kind=version.kind,  # type: ignore[arg-type]
        members=version.members,
        aliases=sorted(aliases or []),
        deprecated_at=version.deprecated_at,
        deprecation_reason=version.deprecation_reason,
        deleted_at=version.deleted_at,
        runtime_plans=version.runtime_plans,
    )


def model_public(model: Model, aliases: dict[str, int] | None = None) -> ModelPublic:
    """``latest`` is the newest version not deleted (the newest at all once all are)."""
    aliases = aliases or {}
    live = [v for v in model.versions if v.deleted_at is None] or model.versions
    latest = live[-1]
    return ModelPublic(
        name=model.name,
        task=model.task,  # type: ignore[arg-type]
        description=model.description,
        latest=model_version_public(
            latest, model, [a for a, n in aliases.items() if n == latest.version]
        ),
        versions=[v.version for v in model.versions],
        aliases=aliases,
        deprecated_at=model.deprecated_at,
        deprecation_reason=model.deprecation_reason,
        deleted_at=model.deleted_at,
    )
