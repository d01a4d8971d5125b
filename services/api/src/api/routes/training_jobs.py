"""Training jobs: train a model on a dataset version, watch it, get a registered version."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response, status
from starlette.concurrency import run_in_threadpool

from api import audit
from api.auth import Principal, require
from api.crud import artifacts as artifacts_crud
from api.crud import callback_settings as callback_crud
from api.crud import training_jobs as crud
from api.deps import CeleryDep, SessionDep, SettingsDep, StoreDep
from api.enqueue import submit_training
from api.routes.artifacts import artifact_response
from shared import job_state
from shared.auth import Scope
from shared.callbacks import OwnerKind, enqueue_statement, validate_callback_url
from shared.db.models import Artifact, JobStatus, TrainingJob
from shared.errors import ServiceUnavailable
from shared.schemas.training import (
    ArtifactPublic,
    TrainingEpochPublic,
    TrainingError,
    TrainingJobCreate,
    TrainingJobPublic,
    TrainingJobsPublic,
    TrainingJobSummary,
)

router = APIRouter(prefix="/training-jobs", tags=["training"])
Train = Annotated[Principal, Depends(require(Scope.TRAIN))]


def _summary(job: TrainingJob, refs: dict[uuid.UUID, str]) -> dict[str, object]:
    return {
        "id": job.id,
        "status": job.status,
        "task": job.task,
        "dataset": f"{job.dataset_version.dataset.name}:{job.dataset_version.version}",
        "dataset_version_id": job.dataset_version_id,
        "architecture": job.architecture,
        "start_from": job.start_from,
        "model_name": job.model_name,
        "monitor": job.monitor,
        "progress": job.progress or {},
        "model_version": refs.get(job.result_model_version_id)
        if job.result_model_version_id
        else None,
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "error": TrainingError(type=job.error_type, detail=job.error_detail or "")
        if job.error_type
        else None,
    }


def _public(
    job: TrainingJob, refs: dict[uuid.UUID, str], artifacts: list[Artifact]
) -> TrainingJobPublic:
    return TrainingJobPublic(
        **_summary(job, refs),  # type: ignore[arg-type]
        params=job.params,
        recipe=job.recipe,
        promote=job.promote,
        promoted=job.promoted,
        attempts=job.attempts,
        worker=job.worker,
        epochs=[
            TrainingEpochPublic(
                fold=e.fold or None,
                epoch=e.epoch,
                train_loss=e.train_loss,
                val_loss=e.val_loss,
                val_metrics=e.val_metrics,
                lr=e.lr,
                seconds=e.seconds,
            )
            for e in job.epochs
        ],
        test_metrics=job.test_metrics,
        artifacts=[
            ArtifactPublic(
                name=a.name,
                content_type=a.content_type,
                size_bytes=a.size_bytes,
                url=f"/v1/training-jobs/{job.id}/artifacts/{a.name}",
            )
            for a in artifacts
        ],
    )


async def _read(session: SessionDep, principal: Principal, job_id: uuid.UUID) -> TrainingJobPublic:
    job = await crud.get_training_job(session=session, tenant_id=principal.tenant_id, job_id=job_id)
    refs = await crud.version_refs(session=session, version_ids=[job.result_model_version_id])
    artifacts = await artifacts_crud.list_artifacts(
        session=session, tenant_id=principal.tenant_id, owner_id=job.id
    )
    return _public(job, refs, artifacts)


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=TrainingJobPublic,
    responses={401: {}, 403: {}, 404: {}, 409: {}, 422: {}, 429: {}, 503: {}},
)
async def create_training_job(
    body: TrainingJobCreate,
    principal: Train,
    response: Response,
    session: SessionDep,
    settings: SettingsDep,
    celery: CeleryDep,
) -> TrainingJobPublic:
    """Train a model on a ready dataset version; poll the job, then use its model version."""
    callback_url = None
    if body.callback_url is not None:  # resolves DNS: off the event loop
        hosts = await callback_crud.allowed_hosts(session=session, tenant_id=principal.tenant_id)
        callback_url = await run_in_threadpool(
            validate_callback_url, body.callback_url, settings, hosts
        )
    job = await crud.create_training_job(
        session=session,
        tenant_id=principal.tenant_id,
        request=body,
        hardware=settings.trainer_hardware,
    )
    job.callback_url = callback_url
    await audit.record(
        session,
        principal,
        "training_job.create",
        "training_job",
        str(job.id),
        {"dataset_version_id": str(job.dataset_version_id), "model_name": job.model_name},
    )
    await session.commit()
    try:
        await submit_training(celery, training_job_id=job.id, queue=job.queue)
    except ServiceUnavailable as exc:
        await job_state.fail_async(session, TrainingJob, exc, TrainingJob.id == job.id)
        await session.commit()
        raise
    response.headers["Location"] = f"/v1/training-jobs/{job.id}"
    return await _read(session, principal, job.id)


@router.get("/{job_id}", response_model=TrainingJobPublic, responses={404: {}})
async def read_training_job(
    job_id: uuid.UUID, principal: Train, session: SessionDep
) -> TrainingJobPublic:
    """Status, progress, per-epoch metrics, test metrics, artifacts and the model version."""
    return await _read(session, principal, job_id)


@router.get("", response_model=TrainingJobsPublic)
async def read_training_jobs(
    principal: Train,
    session: SessionDep,
    status: Annotated[list[JobStatus] | None, Query()] = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> TrainingJobsPublic:
    """List training jobs, newest first."""
    jobs, next_cursor = await crud.list_training_jobs(
        session=session,
        tenant_id=principal.tenant_id,
        statuses=status,
        cursor=cursor,
        limit=limit,
    )
    refs = await crud.version_refs(
        session=session, version_ids=[j.result_model_version_id for j in jobs]
    )
    items = [TrainingJobSummary(**_summary(j, refs)) for j in jobs]  # type: ignore[arg-type]
    return TrainingJobsPublic(items=items, next_cursor=next_cursor)


@router.post("/{job_id}/cancel", response_model=TrainingJobPublic, responses={404: {}, 409: {}})
async def cancel_training_job(
    job_id: uuid.UUID, principal: Train, session: SessionDep
) -> TrainingJobPublic:
    """Cancel a queued or running training job; it never turns succeeded afterwards."""
    await crud.cancel_training_job(session=session, tenant_id=principal.tenant_id, job_id=job_id)
    await audit.record(session, principal, "training_job.cancel", "training_job", str(job_id))
    await session.execute(enqueue_statement(OwnerKind.TRAINING_JOB, [job_id]))
    await session.commit()
    return await _read(session, principal, job_id)


@router.get(
    "/{job_id}/artifacts/{name}",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}, 404: {}},
)
async def download_training_artifact(
    job_id: uuid.UUID, name: str, principal: Train, session: SessionDep, store: StoreDep
) -> Response:
    """Download an artifact of a training job (curves.png, TensorBoard events, model card)."""
    await crud.get_training_job(session=session, tenant_id=principal.tenant_id, job_id=job_id)
    return await artifact_response(session, store, principal.tenant_id, job_id, name)
