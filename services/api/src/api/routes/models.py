"""Registered models and their cards."""

from __future__ import annotations

from fastapi import APIRouter

from api import views
from api.auth import JobsRead
from api.crud import models as crud
from api.deps import SessionDep
from shared.schemas.models import ModelPublic, ModelsPublic, ModelVersionPublic

router = APIRouter(prefix="/models", tags=["models"])


@router.get("", response_model=ModelsPublic)
async def read_models(principal: JobsRead, session: SessionDep) -> ModelsPublic:
    """Registered models with task, labels, input spec and latest version."""
    return ModelsPublic(
        items=[
            views.model_public(m)
            for m in await crud.list_models(session=session, tenant_id=principal.tenant_id)
        ]
    )


@router.get("/{name}", response_model=ModelPublic, responses={404: {}})
async def read_model(name: str, principal: JobsRead, session: SessionDep) -> ModelPublic:
    """One model, its latest version's card and the list of its versions."""
    return views.model_public(
        await crud.get_model(session=session, tenant_id=principal.tenant_id, name=name)
    )


@router.get("/{name}/versions/{version}", response_model=ModelVersionPublic, responses={404: {}})
async def read_model_version(
    name: str, version: int, principal: JobsRead, session: SessionDep
) -> ModelVersionPublic:
    """One exact model version and its full model card."""
    model = await crud.get_model(session=session, tenant_id=principal.tenant_id, name=name)
    return views.model_version_public(crud.pick_version(model, version), model)
