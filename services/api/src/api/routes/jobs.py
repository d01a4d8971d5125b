"""Inference jobs: submit images, poll results."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, Query, Request, Response, UploadFile, status
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from api import audit, views
from api.auth import JobsRead, JobsWrite
from api.crud import callback_settings as callback_crud
from api.crud import feedback as feedback_crud
from api.crud import jobs as crud
from api.deps import CeleryDep, SessionDep, SettingsDep, StoreDep
from api.enqueue import submit_inference
from api.job_events import JobEvents
from api.job_options import check_params, merge_form_fields, pick_queue
from api.routes.dicom_nodes import job_deliveries
from api.routes.results import job_result_objects
from api.uploads import store_uploads
from shared import job_state
from shared.callbacks import OwnerKind, enqueue_statement, validate_callback_url
from shared.db.models import Job, JobStatus, Priority
from shared.errors import InvalidRequest, ServiceUnavailable
from shared.job_quota import check_quota
from shared.registry import resolve_model_version
from shared.schemas.jobs import JobParams, JobPublic, JobsPublic

router = APIRouter(prefix="/jobs", tags=["jobs"])
MAX_WAIT_SECONDS = 60
FINAL_STATUSES = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


def _parse_params(raw: str | None) -> JobParams:
    if not raw:
        return JobParams()
    try:
        return JobParams.model_validate(json.loads(raw))
    except (json.JSONDecodeError, ValidationError) as exc:
        raise InvalidRequest(f"`params` must be a JSON object of job parameters: {exc}") from None


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobPublic,
    responses={401: {}, 403: {}, 404: {}, 413: {}, 415: {}, 422: {}, 429: {}, 503: {}},
)
async def create_job(
    principal: JobsWrite,
    response: Response,
    session: SessionDep,
    settings: SettingsDep,
    store: StoreDep,
    celery: CeleryDep,
    files: Annotated[list[UploadFile], File(description="PNG, JPEG or DICOM images")],
    model: Annotated[
        str,
        Form(
            description="`name:version`, `name@alias` or `name` (its `production` alias, "
            "else its newest version)"
        ),
    ],
    params: Annotated[str | None, Form(description='JSON object, e.g. {"threshold": 0.3}')] = None,
    priority: Annotated[Priority, Form()] = Priority.ROUTINE,
    target_sensitivity: Annotated[float | None, Form(gt=0, le=1)] = None,
    explain: Annotated[Literal["gradcam"] | None, Form()] = None,
    score_threshold: Annotated[float | None, Form(ge=0, le=1)] = None,
    nms_iou: Annotated[float | None, Form(gt=0, le=0.9)] = None,
    max_detections: Annotated[int | None, Form(ge=1, le=500)] = None,
    annotate: Annotated[bool | None, Form()] = None,
    threshold: Annotated[float | None, Form(ge=0, le=1)] = None,
    min_area: Annotated[int | None, Form(ge=0, le=100_000_000)] = None,
    queue: Annotated[
        Literal["cpu", "gpu"] | None, Form(description="Default: the model's deployment queue")
    ] = None,
    callback_url: Annotated[
        str | None,
        Form(
            description="POSTed a signed JSON summary when the job finishes; its host must "
            "be in the server's callback allow-list"
        ),
    ] = None,
) -> JobPublic:
    """Submit one or more images to a model; poll the returned job for results."""
    job_params = merge_form_fields(
        _parse_params(params),
        target_sensitivity=target_sensitivity,
        explain=explain,
        score_threshold=score_threshold,
        nms_iou=nms_iou,
        max_detections=max_detections,
        annotate=annotate,
        threshold=threshold,
        min_area=min_area,
    )
    version = await session.run_sync(resolve_model_version, model, principal.tenant_id)
    check_params(version, job_params)
    await session.run_sync(
        lambda s: check_quota(
            s, tenant_id=principal.tenant_id, priority=priority, settings=settings
        )
    )
    if callback_url is not None:  # resolves DNS: off the event loop
        hosts = await callback_crud.allowed_hosts(session=session, tenant_id=principal.tenant_id)
        callback_url = await run_in_threadpool(validate_callback_url, callback_url, settings, hosts)
    images = await store_uploads(files, settings=settings, store=store)
    job = crud.create_job(
        session=session,
        tenant_id=principal.tenant_id,
        version=version,
        params=job_params.model_dump(exclude_none=True),
        priority=priority,
        queue=pick_queue(version, queue),
        images=images,
    )
    job.callback_url = callback_url
    await audit.record(
        session,
        principal,
        "job.create",
        "job",
        str(job.id),
        {"model": version.ref, "images": len(images)},
    )
    await session.commit()
    try:
        await submit_inference(celery, job_id=job.id, queue=job.queue, priority=priority)
    except ServiceUnavailable as exc:
        await job_state.fail_async(session, Job, exc, Job.id == job.id)
        await session.commit()
        raise
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return views.job_public(job)


@router.get("/{job_id}", response_model=JobPublic, responses={404: {}})
async def read_job(
    job_id: uuid.UUID,
    principal: JobsRead,
    session: SessionDep,
    request: Request,
    wait: Annotated[
        float | None,
        Query(
            ge=0,
            le=MAX_WAIT_SECONDS,
            description="Long-poll: answer as soon as the job is final, at most this many s",
        ),
    ] = None,
) -> JobPublic:
    """Status, timings, the exact model version and per-image results of a job."""
    if wait:
        await _wait_until_final(request, session, principal.tenant_id, job_id, wait)
    job = await crud.get_job(session=session, tenant_id=principal.tenant_id, job_id=job_id)
    # Results are patient data: every read of them is audited.
    await audit.record(session, principal, "job.read", "job", str(job.id))
    await session.commit()
    delivery = await crud.callback_delivery(session=session, job_id=job.id)
    public = views.job_public(job, delivery)
    public.dicom_deliveries = await job_deliveries(session, job)
    public.dicom_results = await job_result_objects(session, job)
    public.feedback = await feedback_crud.list_feedback(session=session, job_id=job.id)
    return public


async def _wait_until_final(
    request: Request, session: SessionDep, tenant_id: uuid.UUID, job_id: uuid.UUID, wait: float
) -> None:
    events = getattr(request.app.state, "job_events", None)
    if events is None:
        events = request.app.state.job_events = JobEvents(
            request.app.state.settings.require_database_url()
        )
    async with events.subscription(job_id) as finished:
        job = await crud.get_job(
            session=session, tenant_id=tenant_id, job_id=job_id, with_images=False
        )
        final = job.status in FINAL_STATUSES
        await session.rollback()  # no transaction held open while waiting
        if not final:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(finished.wait(), wait)


@router.get("", response_model=JobsPublic)
async def read_jobs(
    principal: JobsRead,
    session: SessionDep,
    status: Annotated[list[JobStatus] | None, Query()] = None,
    model: Annotated[str | None, Query(description="Model name")] = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> JobsPublic:
    """List jobs, newest first, filtered by status, model and creation time."""
    jobs, next_cursor = await crud.list_jobs(
        session=session,
        tenant_id=principal.tenant_id,
        statuses=status,
        model=model,
        created_after=created_after,
        created_before=created_before,
        cursor=cursor,
        limit=limit,
    )
    counts = await crud.image_counts(session=session, job_ids=[j.id for j in jobs])
    items = [views.job_summary(j, counts.get(j.id, crud.ImageCounts())) for j in jobs]
    return JobsPublic(items=items, next_cursor=next_cursor)


@router.post("/{job_id}/cancel", response_model=JobPublic, responses={404: {}, 409: {}})
async def cancel_job(job_id: uuid.UUID, principal: JobsWrite, session: SessionDep) -> JobPublic:
    """Cancel a queued or running job; finished jobs are left as they are (409)."""
    await crud.cancel_job(session=session, tenant_id=principal.tenant_id, job_id=job_id)
    await audit.record(session, principal, "job.cancel", "job", str(job_id))
    await session.execute(enqueue_statement(OwnerKind.JOB, [job_id]))
    await session.commit()
    job = await crud.get_job(session=session, tenant_id=principal.tenant_id, job_id=job_id)
    return views.job_public(job)
