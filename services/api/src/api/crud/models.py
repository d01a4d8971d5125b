"""Async reads of the model registry."""

from __future__ import annotations

import uuid

from sqlalchemy import ColumnElement, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from shared.db.models import Model, ModelVersion
from shared.errors import ModelNotFound
from shared.registry import ModelRef


def _visible_to(tenant_id: uuid.UUID) -> ColumnElement[bool]:
    """Shared models plus the tenant's own; other tenants' models do not exist for it."""
    return or_(Model.tenant_id.is_(None), Model.tenant_id == tenant_id)


async def resolve_version(
    *, session: AsyncSession, tenant_id: uuid.UUID, ref: ModelRef
) -> ModelVersion:
    """The version a reference names: ``name`` means the newest version."""
    query = (
        select(ModelVersion)
        .join(Model)
        .where(Model.name == ref.name, _visible_to(tenant_id))
        .options(selectinload(ModelVersion.model))
    )
    if ref.version is not None:
        query = query.where(ModelVersion.version == ref.version)
    else:
        query = query.order_by(ModelVersion.version.desc()).limit(1)
    version = await session.scalar(query)
    if version is None:
        names = select(Model.name).where(_visible_to(tenant_id)).order_by(Model.name)
        known = ", ".join((await session.scalars(names)).all())
        raise ModelNotFound(
            f"no model version {str(ref)!r} is registered (models: {known or 'none'})",
            model=str(ref),
        )
    return version


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
