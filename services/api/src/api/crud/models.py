"""Async reads of the model registry (writes go through shared.registry via run_sync)."""

from __future__ import annotations

import uuid
from collections import defaultdict

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from shared.db.models import Model, ModelAlias, ModelVersion
from shared.errors import ModelNotFound
from shared.registry import visible_to as _visible_to


async def list_models(
    *, session: AsyncSession, tenant_id: uuid.UUID, include_deleted: bool = False
) -> list[Model]:
    query = (
        select(Model)
        .where(_visible_to(tenant_id))
        .options(selectinload(Model.versions))
        .order_by(Model.name)
    )
    if not include_deleted:
        query = query.where(Model.deleted_at.is_(None))
    return list((await session.scalars(query)).all())


async def get_model(*, session: AsyncSession, tenant_id: uuid.UUID, name: str) -> Model:
    """A visible model by name, deleted ones included: old results still name them."""
    model = await session.scalar(
        select(Model)
        .where(Model.name == name, _visible_to(tenant_id))
        .options(selectinload(Model.versions))
    )
    if model is None:
        raise ModelNotFound(f"no model named {name!r} is registered", model=name)
    return model


async def aliases_of(
    *, session: AsyncSession, model_ids: list[uuid.UUID]
) -> dict[uuid.UUID, dict[str, int]]:
    """alias -> version number, per model."""
    rows = await session.execute(
        select(ModelAlias.model_id, ModelAlias.alias, ModelVersion.version)
        .join(ModelVersion, ModelAlias.model_version_id == ModelVersion.id)
        .where(ModelAlias.model_id.in_(model_ids))
        .order_by(ModelAlias.alias)
    )
    aliases: dict[uuid.UUID, dict[str, int]] = defaultdict(dict)
    for model_id, alias, version in rows.all():
        aliases[model_id][alias] = version
    return aliases


def pick_version(model: Model, version: int) -> ModelVersion:
    for v in model.versions:
        if v.version == version:
            return v
    raise ModelNotFound(
        f"model {model.name!r} has no version {version}", model=f"{model.name}:{version}"
    )
