"""PNG previews of stored images, so a browser can show DICOM without a DICOM decoder.

Job images need `jobs:read` and the job's tenant; dataset items need what reading the
dataset needs. Previews are patient pictures: never cached by the browser or a proxy.
"""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Response
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from api.auth import JobsRead
from api.crud import datasets as dataset_crud
from api.crud.jobs import get_job
from api.deps import SessionDep, SettingsDep, StoreDep
from api.routes.datasets import DatasetsRead
from shared.db.models import DatasetItem
from shared.errors import NotFound
from shared.imaging.preview import render_preview_png
from shared.storage import BlobStore

router = APIRouter(tags=["previews"])
_PNG = {200: {"content": {"image/png": {}}}, 404: {}, 422: {}}


async def _png(store: BlobStore, storage_key: str, what: str, max_pixels: int) -> Response:
    try:
        data = await run_in_threadpool(store.get, storage_key)
    except FileNotFoundError:
        raise NotFound(f"{what} is missing from the store") from None
    png = await run_in_threadpool(render_preview_png, data, max_pixels=max_pixels)
    return Response(content=png, media_type="image/png", headers={"Cache-Control": "no-store"})


@router.get("/jobs/{job_id}/images/{index}/preview.png", response_class=Response, responses=_PNG)
async def read_job_image_preview(
    job_id: uuid.UUID,
    index: int,
    principal: JobsRead,
    session: SessionDep,
    settings: SettingsDep,
    store: StoreDep,
) -> Response:
    """An uploaded image of a job as PNG (DICOM windowed as the model saw it), ≤1600 px."""
    job = await get_job(session=session, tenant_id=principal.tenant_id, job_id=job_id)
    image = next((i for i in job.images if i.index == index), None)
    if image is None:
        raise NotFound(f"job {job_id} has no image {index} (it has {len(job.images)})")
    return await _png(
        store, image.storage_key, f"image {index} of job {job_id}", settings.max_image_pixels
    )


@router.get(
    "/datasets/{dataset_id}/versions/{version}/items/{item_id}/preview.png",
    response_class=Response,
    responses=_PNG,
)
async def read_dataset_item_preview(
    dataset_id: uuid.UUID,
    version: int,
    item_id: uuid.UUID,
    principal: DatasetsRead,
    session: SessionDep,
    settings: SettingsDep,
    store: StoreDep,
) -> Response:
    """A dataset image as PNG (DICOM windowed), ≤1600 px: for sample grids."""
    dataset = await dataset_crud.get_dataset(
        session=session, tenant_id=principal.tenant_id, dataset_id=dataset_id
    )
    found = dataset_crud.find_version(dataset, version)
    item = await session.scalar(
        select(DatasetItem).where(
            DatasetItem.id == item_id, DatasetItem.dataset_version_id == found.id
        )
    )
    if item is None:
        raise NotFound(f"version {version} of dataset {dataset.name!r} has no item {item_id}")
    return await _png(store, item.storage_key, f"item {item.path!r}", settings.max_image_pixels)
