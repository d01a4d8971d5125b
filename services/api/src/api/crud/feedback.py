"""Reviewers' feedback on job results (issue 17). Helpers never commit."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from api.authn_gate import Principal
from shared.db.learning_models import FeedbackKind, ResultFeedback
from shared.db.models import ImageStatus, Job, JobImage, Model, ModelVersion
from shared.errors import Conflict, InvalidRequest, NotFound
from shared.pseudonyms import pseudonym
from shared.schemas.learning import FeedbackCreate, FeedbackPublic


class ImageNotFound(NotFound):
    type = "image-not-found"
    title = "Job image not found"


async def _image(
    session: AsyncSession, tenant_id: uuid.UUID, job_id: uuid.UUID, index: int
) -> tuple[JobImage, ModelVersion]:
    """The job image, locked so concurrent reviews get consecutive revisions."""
    row = (
        await session.execute(
            select(JobImage, Job.model_version_id)
            .join(Job, Job.id == JobImage.job_id)
            .where(Job.id == job_id, Job.tenant_id == tenant_id, JobImage.index == index)
            .with_for_update(of=JobImage)
        )
    ).first()
    if row is None:
        raise ImageNotFound(f"job {job_id} has no image {index}", job_id=str(job_id))
    version = await session.scalar(
        select(ModelVersion)
        .where(ModelVersion.id == row[1])
        .options(selectinload(ModelVersion.model))
    )
    assert version is not None  # jobs keep their version row (soft deletion only)
    return row[0], version


def _truth(body: FeedbackCreate, image: JobImage, version: ModelVersion) -> dict[str, Any]:
    """The reviewed label or boxes, checked against the model's labels and task."""
    task, labels = version.model.task, list(version.labels)
    if task not in ("classification", "detection"):
        raise InvalidRequest(f"feedback on {task} results is not supported yet (masks)")
    if body.kind == FeedbackKind.CONFIRM:
        if image.status != ImageStatus.SUCCEEDED or image.output is None:
            raise Conflict(
                f"image {image.index} has no result to confirm ({image.status}); send a "
                "correction instead",
                image_status=image.status,
            )
        if task == "classification":
            return {"label": image.output.get("label"), "boxes": None}
        found = image.output.get("detections") or []
        return {"label": None, "boxes": [{"label": d["label"], "box": d["box"]} for d in found]}
    if task == "classification":
        if body.boxes is not None or body.label not in labels:
            raise InvalidRequest(
                f"a classification correction needs `label`, one of {labels}",
                errors=[{"field": "label", "message": f"one of {labels}"}],
            )
        return {"label": body.label, "boxes": None}
    if body.label is not None or body.boxes is None:
        raise InvalidRequest("a detection correction needs `boxes` (and no `label`)")
    unknown = sorted({b.label for b in body.boxes} - set(labels))
    if unknown:
        raise InvalidRequest(f"box labels {unknown} are not among the model's labels {labels}")
    return {"label": None, "boxes": [b.model_dump() for b in body.boxes]}


async def add_feedback(
    *,
    session: AsyncSession,
    principal: Principal,
    job_id: uuid.UUID,
    index: int,
    body: FeedbackCreate,
    secret: bytes,
) -> ResultFeedback:
    """Append the next revision of an image's feedback (earlier ones are kept).

    Raises:
        ImageNotFound, Conflict, InvalidRequest: see the messages.
    """
    image, version = await _image(session, principal.tenant_id, job_id, index)
    truth = _truth(body, image, version)
    latest = await session.scalar(
        select(func.max(ResultFeedback.revision)).where(ResultFeedback.job_image_id == image.id)
    )
    row = ResultFeedback(
        id=uuid.uuid4(),
        tenant_id=principal.tenant_id,
        job_id=job_id,
        job_image_id=image.id,
        image_index=index,
        revision=(latest or 0) + 1,
        model_id=version.model_id,
        model_version_id=version.id,
        kind=body.kind.value,
        comment=body.comment,
        group_id=pseudonym("group", body.patient_id, secret) if body.patient_id else None,
        api_key_id=principal.key_id,
        key_prefix=principal.key_prefix,
        **truth,
    )
    session.add(row)
    await session.flush()
    return row


async def list_feedback(*, session: AsyncSession, job_id: uuid.UUID) -> list[FeedbackPublic]:
    """Every revision of every image of a job, oldest first; `current` marks the newest."""
    rows = (
        await session.execute(
            select(ResultFeedback, Model.name, ModelVersion.version)
            .join(ModelVersion, ModelVersion.id == ResultFeedback.model_version_id)
            .join(Model, Model.id == ModelVersion.model_id)
            .where(ResultFeedback.job_id == job_id)
            .order_by(ResultFeedback.image_index, ResultFeedback.revision)
        )
    ).all()
    newest: dict[int, int] = {}
    for fb, _, _ in rows:
        newest[fb.image_index] = max(newest.get(fb.image_index, 0), fb.revision)
    return [
        FeedbackPublic(
            id=fb.id,
            job_id=fb.job_id,
            image_index=fb.image_index,
            revision=fb.revision,
            current=fb.revision == newest[fb.image_index],
            kind=FeedbackKind(fb.kind),
            label=fb.label,
            boxes=fb.boxes,
            comment=fb.comment,
            model_version=f"{name}:{number}",
            reviewer=fb.key_prefix,
            created_at=fb.created_at,
        )
        for fb, name, number in rows
    ]
