"""Async reads of job artifacts; a job of another tenant has no artifacts to see."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from shared.db.models import Artifact
from shared.errors import NotFound


async def list_artifacts(
    *, session: AsyncSession, tenant_id: uuid.UUID, owner_id: uuid.UUID
) -> list[Artifact]:
    rows = await session.scalars(
        select(Artifact)
        .where(Artifact.owner_id == owner_id, Artifact.tenant_id == tenant_id)
        .order_by(Artifact.name)
    )
    return list(rows.all())


async def get_artifact(
    *, session: AsyncSession, tenant_id: uuid.UUID, owner_id: uuid.UUID, name: str
) -> Artifact:
    artifact = await session.scalar(
        select(Artifact).where(
            Artifact.owner_id == owner_id, Artifact.tenant_id == tenant_id, Artifact.name == name
        )
    )
    if artifact is None:
        raise NotFound(f"job {owner_id} has no artifact named {name!r}", artifact=name)
    return artifact
