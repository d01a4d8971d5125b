"""Deleting patient data: jobs, dataset versions, training artifacts, tenants. The work is
shared.deletion's; handlers commit, then remove blobs.

Scopes: a job needs `jobs:write`; datasets and training artifacts `train`; a whole tenant
the platform operator (`platform:admin`). Retention periods: api.routes.tenants.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Query, Request
from sqlalchemy.orm import Session

from api.auth import JobsWrite, PlatformOperator, Principal
from api.deps import SessionDep, SettingsDep, StoreDep
from api.routes.datasets import DatasetsWrite
from api.routes.training_jobs import Train
from shared import deletion
from shared.schemas.deletion import DeletionPublic

router = APIRouter(tags=["deletion"])
_ERRORS: dict[int | str, dict[str, object]] = {401: {}, 403: {}, 404: {}, 409: {}}
Force = Annotated[
    bool,
    Query(
        description="Delete even though model versions were trained on this data: the "
        "versions stay servable, their cards' provenance then names deleted data"
    ),
]


def _actor(principal: Principal) -> deletion.Actor:
    return deletion.Actor(principal.tenant_id, principal.key_id, principal.key_prefix)


async def _delete(
    session: SessionDep,
    settings: SettingsDep,
    store: StoreDep,
    resource: tuple[str, str],
    rows: Callable[[Session], deletion.Deleted],
) -> DeletionPublic:
    """Rows in one transaction (with the audit event), then the unreferenced blobs."""
    deleted = await session.run_sync(rows)
    await session.commit()
    blobs = await deletion.remove_blobs_async(
        session, store, deleted.blob_keys, grace=deletion.grace_seconds(settings)
    )
    return DeletionPublic(
        resource_type=resource[0],
        resource_id=resource[1],
        rows=deleted.rows,
        blobs_removed=blobs.removed,
        blobs_still_referenced=blobs.still_referenced,
        blobs_deferred=blobs.deferred,
    )


@router.delete("/jobs/{job_id}", response_model=DeletionPublic, responses=_ERRORS)
async def delete_job(
    job_id: uuid.UUID,
    principal: JobsWrite,
    session: SessionDep,
    settings: SettingsDep,
    store: StoreDep,
) -> DeletionPublic:
    """Delete a finished job: its images, results, artifacts and deliveries (409 if not final)."""
    return await _delete(
        session, settings, store, ("job", str(job_id)),
        lambda s: deletion.delete_job(
            s, tenant_id=principal.tenant_id, job_id=job_id, actor=_actor(principal)
        ),
    )  # fmt: skip


@router.delete("/datasets/{dataset_id}", response_model=DeletionPublic, responses=_ERRORS)
async def delete_dataset(
    dataset_id: uuid.UUID,
    principal: DatasetsWrite,
    session: SessionDep,
    settings: SettingsDep,
    store: StoreDep,
    force: Force = False,
) -> DeletionPublic:
    """Delete a dataset with all its versions (see deleting one version)."""
    return await _delete(
        session, settings, store, ("dataset", str(dataset_id)),
        lambda s: deletion.delete_dataset(
            s, tenant_id=principal.tenant_id, dataset_id=dataset_id, version=None,
            actor=_actor(principal), force=force,
        ),
    )  # fmt: skip


@router.delete(
    "/datasets/{dataset_id}/versions/{version}", response_model=DeletionPublic, responses=_ERRORS
)
async def delete_dataset_version(
    dataset_id: uuid.UUID,
    version: int,
    principal: DatasetsWrite,
    session: SessionDep,
    settings: SettingsDep,
    store: StoreDep,
    force: Force = False,
) -> DeletionPublic:
    """Delete a dataset version: items, masks, stats, upload and training jobs run on it.

    409 while it imports, while a training job on it runs, or (without `force`) when a
    model version that is not deleted was trained on it.
    """
    return await _delete(
        session, settings, store, ("dataset_version", f"{dataset_id}:{version}"),
        lambda s: deletion.delete_dataset(
            s, tenant_id=principal.tenant_id, dataset_id=dataset_id, version=version,
            actor=_actor(principal), force=force,
        ),
    )  # fmt: skip


@router.delete(
    "/training-jobs/{job_id}/artifacts", response_model=DeletionPublic, responses=_ERRORS
)
async def delete_training_artifacts(
    job_id: uuid.UUID,
    principal: Train,
    session: SessionDep,
    settings: SettingsDep,
    store: StoreDep,
) -> DeletionPublic:
    """Delete a finished training job's artifacts and checkpoint; its metrics stay."""
    return await _delete(
        session, settings, store, ("training_job", str(job_id)),
        lambda s: deletion.delete_training_artifacts(
            s, tenant_id=principal.tenant_id, training_job_id=job_id, actor=_actor(principal)
        ),
    )  # fmt: skip


@router.delete("/tenants/{tenant_id}", response_model=DeletionPublic, responses=_ERRORS)
async def delete_tenant(
    tenant_id: uuid.UUID,
    principal: PlatformOperator,
    session: SessionDep,
    settings: SettingsDep,
    store: StoreDep,
    request: Request,
    background: BackgroundTasks,
    force: Annotated[
        bool, Query(description="Delete even while the tenant's jobs are queued or running")
    ] = False,
) -> DeletionPublic:
    """Delete a tenant and all it owns (keys, jobs, datasets, models, DICOM nodes, rules);
    audit events stay. Rows go in one transaction; blobs are removed in the background."""
    deleted = await session.run_sync(
        lambda s: deletion.delete_tenant(
            s, tenant_id=tenant_id, actor=_actor(principal), force=force
        )
    )
    await session.commit()

    async def remove_blobs() -> None:  # own session: the request's is closed by then
        async with request.app.state.sessionmaker() as own:
            await deletion.remove_blobs_async(
                own, store, deleted.blob_keys, grace=deletion.grace_seconds(settings)
            )

    background.add_task(remove_blobs)
    return DeletionPublic(
        resource_type="tenant",
        resource_id=str(tenant_id),
        rows=deleted.rows,
        blobs_removed=0,
        blobs_still_referenced=0,
        blobs_deferred=len(deleted.blob_keys),
    )
