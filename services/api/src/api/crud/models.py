"""Async reads of the model registry."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from shared.db.models import Model, ModelVersion
from shared.errors import ModelNotFound
from shared.registry import visible_to as _visible_to


async def list_models(*, session: AsyncSession, tenant_id: uuid.UUID) -> list[Model]:
    result = await session.scalars(
        select(Model)
        .where(_visible_to(tenant_id))
        .options(selectinload(Model.versions))
        .order_by(Model.name)
    )
    return list(result.all())


async def get_model(*, session: AsyncSession, tenant_id: uuid.UUID, name: str) -> Model:
    model = await session.scalar(
        select(Model)
        .where(Model.name == name, _visible_to(tenant_id))
        .options(selectinload(Model.versions))
    )
    if model is None:
        raise ModelNotFound(f"no model named {name!r} is registered", model=name)
    return model


def pick_version(model: Model, version: int) -> ModelVersion:
    for v in model.versions:
        if v.version == version:
            return v
    raise ModelNotFound(
        f"model {model.name!r} has no version {version}", model=f"{model.name}:{version}"
    )
