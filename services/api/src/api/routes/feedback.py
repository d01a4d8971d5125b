"""Reviewers confirm or correct a job image's result; corrections are versioned (issue 17)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Response, status

from api import audit
from api.auth import JobsRead, require
from api.authn_gate import Principal
from api.crud import feedback as crud
from api.crud.jobs import get_job
from api.deps import SessionDep, SettingsDep
from shared.auth import Scope
from shared.schemas.learning import FeedbackCreate, FeedbackPublic

router = APIRouter(prefix="/jobs", tags=["feedback"])
Reviewer = Annotated[Principal, Depends(require(Scope.REVIEW))]


@router.post(
    "/{job_id}/images/{index}/feedback",
    status_code=status.HTTP_201_CREATED,
    response_model=FeedbackPublic,
    responses={401: {}, 403: {}, 404: {}, 409: {}, 422: {}},
)
async def create_feedback(
    job_id: uuid.UUID,
    index: int,
    body: FeedbackCreate,
    principal: Reviewer,
    response: Response,
    session: SessionDep,
    settings: SettingsDep,
) -> FeedbackPublic:
    """Confirm or correct one image's result; a later review adds a revision, never overwrites."""
    row = await crud.add_feedback(
        session=session,
        principal=principal,
        job_id=job_id,
        index=index,
        body=body,
        secret=settings.uid_salt(),
    )
    await audit.record(
        session,
        principal,
        "feedback.create",
        "job",
        str(job_id),
        {"image": index, "revision": row.revision, "kind": row.kind},
    )
    await session.commit()
    response.headers["Location"] = f"/v1/jobs/{job_id}/feedback"
    items = await crud.list_feedback(session=session, job_id=job_id)
    return next(i for i in items if i.id == row.id)


@router.get("/{job_id}/feedback", response_model=list[FeedbackPublic], responses={404: {}})
async def read_feedback(
    job_id: uuid.UUID, principal: JobsRead, session: SessionDep
) -> list[FeedbackPublic]:
    """Every review of the job's images, all revisions, oldest first."""
    await get_job(session=session, tenant_id=principal.tenant_id, job_id=job_id, with_images=False)
    return await crud.list_feedback(session=session, job_id=job_id)
