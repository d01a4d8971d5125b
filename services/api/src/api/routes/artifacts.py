"""Files a job produced (Grad-CAM overlays, annotated detections): list and download."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Response
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.concurrency import run_in_threadpool

from api.auth import JobsRead
from api.crud import artifacts as crud
from api.crud.jobs import get_job
from api.deps import SessionDep, StoreDep
from shared.errors import NotFound
from shared.schemas.artifacts import ArtifactPublic, ArtifactsPublic
from shared.storage import BlobStore

router = APIRouter(prefix="/jobs", tags=["jobs"])


@router.get("/{job_id}/artifacts", response_model=ArtifactsPublic, responses={404: {}})
async def read_job_artifacts(
    job_id: uuid.UUID, principal: JobsRead, session: SessionDep
) -> ArtifactsPublic:
    """The artifacts a job has produced so far, by name."""
    await get_job(session=session, tenant_id=principal.tenant_id, job_id=job_id, with_images=False)
    rows = await crud.list_artifacts(
        session=session, tenant_id=principal.tenant_id, owner_id=job_id
    )
    return ArtifactsPublic(
        items=[
            ArtifactPublic(
                name=a.name,
                content_type=a.content_type,
                size_bytes=a.size_bytes,
                created_at=a.created_at,
                url=f"/v1/jobs/{job_id}/artifacts/{a.name}",
            )
            for a in rows
        ]
    )


@router.get(
    "/{job_id}/artifacts/{name}",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}, 404: {}},
)
async def download_job_artifact(
    job_id: uuid.UUID, name: str, principal: JobsRead, session: SessionDep, store: StoreDep
) -> Response:
    """Download one artifact of a job with its content type."""
    await get_job(session=session, tenant_id=principal.tenant_id, job_id=job_id, with_images=False)
    return await artifact_response(session, store, principal.tenant_id, job_id, name)


async def artifact_response(
    session: AsyncSession, store: BlobStore, tenant_id: uuid.UUID, owner_id: uuid.UUID, name: str
) -> Response:
    """An artifact of a job or training job the caller may see, as a download."""
    artifact = await crud.get_artifact(
        session=session, tenant_id=tenant_id, owner_id=owner_id, name=name
    )
    try:
        data = await run_in_threadpool(store.get, artifact.storage_key)
    except FileNotFoundError:
        raise NotFound(f"artifact {name!r} of {owner_id} is missing from the store") from None
    return Response(
        content=data,
        media_type=artifact.content_type,
        headers={"Content-Disposition": f'attachment; filename="{artifact.name}"'},
    )
