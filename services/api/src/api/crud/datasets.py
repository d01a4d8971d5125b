"""Async queries for datasets; every read is scoped to the caller's tenant."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from shared.db.models import Dataset, DatasetItem, DatasetVersion
from shared.errors import Conflict, DatasetNotFound, InvalidRequest


async def create_version(
    *,
    session: AsyncSession,
    tenant_id: uuid.UUID,
    name: str,
    task: str,
    description: str,
    source_format: str,
    upload_key: str,
    upload_sha256: str,
    split_spec: dict[str, Any],
) -> tuple[Dataset, DatasetVersion]:
    """A new immutable version of the tenant's dataset `name` (created on first upload)."""
    await session.execute(
        pg_insert(Dataset)
        .values(id=uuid.uuid4(), tenant_id=tenant_id, name=name, task=task, description=description)
        .on_conflict_do_nothing(index_elements=["tenant_id", "name"])
    )
    # The row lock serialises concurrent uploads to one name: version numbers never collide.
    dataset = await session.scalar(
        select(Dataset)
        .where(Dataset.tenant_id == tenant_id, Dataset.name == name)
        .with_for_update()
    )
    assert dataset is not None
    if dataset.task != task:
        raise Conflict(f"dataset {name!r} is a {dataset.task} dataset; this upload is {task}")
    latest = await session.scalar(
        select(func.max(DatasetVersion.version)).where(DatasetVersion.dataset_id == dataset.id)
    )
    version = DatasetVersion(
        dataset_id=dataset.id,
        version=(latest or 0) + 1,
        source_format=source_format,
        upload_key=upload_key,
        upload_sha256=upload_sha256,
        split_spec=split_spec,
        progress={"phase": "queued", "done": 0, "total": 0},
    )
    session.add(version)
    await session.flush()
    return dataset, version


async def get_dataset(
    *, session: AsyncSession, tenant_id: uuid.UUID, dataset_id: uuid.UUID
) -> Dataset:
    """The tenant's dataset with its versions; another tenant's id is not found."""
    dataset = await session.scalar(
        select(Dataset)
        .where(Dataset.id == dataset_id, Dataset.tenant_id == tenant_id)
        .options(selectinload(Dataset.versions))
    )
    if dataset is None:
        raise DatasetNotFound(f"no dataset {dataset_id}")
    return dataset


async def find_dataset(*, session: AsyncSession, tenant_id: uuid.UUID, ref: str) -> Dataset:
    """The tenant's dataset named ``ref`` (as models are found by name), or with id ``ref``.

    Names are unique per tenant; an id still resolves, so the `url` of a version (which
    carries the id) and links made before names were accepted keep working.
    """
    try:
        by = Dataset.id == uuid.UUID(ref)
    except ValueError:
        by = Dataset.name == ref
    dataset = await session.scalar(
        select(Dataset)
        .where(by, Dataset.tenant_id == tenant_id)
        .options(selectinload(Dataset.versions))
    )
    if dataset is None:
        raise DatasetNotFound(f"no dataset {ref!r}")
    return dataset


async def list_datasets(*, session: AsyncSession, tenant_id: uuid.UUID) -> list[Dataset]:
    rows = await session.scalars(
        select(Dataset)
        .where(Dataset.tenant_id == tenant_id)
        .order_by(Dataset.name)
        .options(selectinload(Dataset.versions))
    )
    return list(rows)


def find_version(dataset: Dataset, version: int) -> DatasetVersion:
    for v in dataset.versions:
        if v.version == version:
            return v
    raise DatasetNotFound(f"dataset {dataset.name!r} has no version {version}")


async def list_items(
    *,
    session: AsyncSession,
    version_id: uuid.UUID,
    split: str | None,
    cursor: str | None,
    limit: int,
) -> tuple[list[DatasetItem], str | None]:
    """Items by id (keyset pagination: the cursor is the last id of the previous page)."""
    query = select(DatasetItem).where(DatasetItem.dataset_version_id == version_id)
    if split is not None:
        query = query.where(DatasetItem.split == split)
    if cursor:
        try:
            after = uuid.UUID(cursor)
        except ValueError:
            raise InvalidRequest(f"cursor {cursor!r} is not a cursor this API returned") from None
        query = query.where(DatasetItem.id > after)
    items = list(await session.scalars(query.order_by(DatasetItem.id).limit(limit + 1)))
    next_cursor = str(items[limit - 1].id) if len(items) > limit else None
    return items[:limit], next_cursor
