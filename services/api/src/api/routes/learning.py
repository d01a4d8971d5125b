"""A model line's learning loop over REST: policy, generations, approval, rollback (issue 17)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Response, status

from api import audit, learning_scheduler
from api.auth import Admin, JobsRead, require
from api.authn_gate import Principal
from api.crud import learning as crud
from api.crud.models import get_model
from api.deps import CeleryDep, SessionDep, SettingsDep
from shared.auth import Scope
from shared.learning import generations, lines
from shared.learning.generations import Actor
from shared.schemas.learning import (
    DecisionCreate,
    GenerationCreate,
    GenerationPublic,
    GenerationsPublic,
    ModelLinePublic,
    RetrainingPolicy,
    RollbackPublic,
)

router = APIRouter(prefix="/models", tags=["learning"])
ModelsAdmin = Annotated[Principal, Depends(require(Scope.MODELS_ADMIN))]
_ERRORS: dict[int | str, dict[str, str]] = {403: {}, 404: {}, 409: {}, 422: {}}


def _actor(principal: Principal) -> Actor:
    return Actor(principal.tenant_id, principal.key_id, principal.key_prefix)


@router.put("/{name}/learning-policy", response_model=ModelLinePublic, responses=_ERRORS)
async def put_policy(
    name: str, body: RetrainingPolicy, principal: Admin, response: Response, session: SessionDep
) -> ModelLinePublic:
    """Start the model's learning loop (locking its test set) or change its policy."""
    model = await crud.writable_model(session, principal, name)
    line, created = await session.run_sync(lines.put_line, model, body)
    await audit.record(
        session, principal, "model.learning_policy", "model", name,
        {"policy": body.model_dump(mode="json"), "created": created},
    )  # fmt: skip
    await session.commit()
    if created:
        response.status_code = status.HTTP_201_CREATED
    return await crud.line_public(session, model, line)


@router.get("/{name}/learning", response_model=ModelLinePublic, responses={404: {}})
async def read_line(name: str, principal: JobsRead, session: SessionDep) -> ModelLinePublic:
    """The locked test set, recipe, policy, aliases and reviews waiting for a generation."""
    model = await get_model(session=session, tenant_id=principal.tenant_id, name=name)
    return await crud.line_public(session, model, await crud.get_line(session, model))


@router.post(
    "/{name}/generations",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=GenerationPublic,
    responses=_ERRORS,
)
async def create_generation(
    name: str,
    body: GenerationCreate,
    principal: Admin,
    session: SessionDep,
    settings: SettingsDep,
    celery: CeleryDep,
) -> GenerationPublic:
    """Retrain now: feedback to data, a challenger from production, then the gate."""
    model = await crud.writable_model(session, principal, name)
    line = await crud.get_line(session, model)
    generation = await learning_scheduler.start_generation(
        session, settings=settings, line=line, model=model, trigger="manual",
        actor=_actor(principal), params=body.params,
    )  # fmt: skip
    await session.commit()
    await learning_scheduler.send_training(celery, generation.training_job_id)
    return (await crud.generations_public(session, model, [generation]))[0]


@router.get("/{name}/generations", response_model=GenerationsPublic, responses={404: {}})
async def read_generations(
    name: str, principal: JobsRead, session: SessionDep
) -> GenerationsPublic:
    """The line's generations, newest first, with their gate numbers and decisions."""
    model = await get_model(session=session, tenant_id=principal.tenant_id, name=name)
    line = await crud.get_line(session, model)
    items = await crud.list_generations(session, line)
    return GenerationsPublic(items=await crud.generations_public(session, model, items))


@router.get(
    "/{name}/generations/{generation_id}", response_model=GenerationPublic, responses={404: {}}
)
async def read_generation(
    name: str, generation_id: uuid.UUID, principal: JobsRead, session: SessionDep
) -> GenerationPublic:
    model = await get_model(session=session, tenant_id=principal.tenant_id, name=name)
    line = await crud.get_line(session, model)
    generation = await crud.get_generation(session, line, generation_id)
    return (await crud.generations_public(session, model, [generation]))[0]


async def _decide(
    name: str,
    generation_id: uuid.UUID,
    principal: Principal,
    session: SessionDep,
    approve: bool,
    why: str,
) -> GenerationPublic:
    model = await crud.writable_model(session, principal, name)
    line = await crud.get_line(session, model)
    generation = await crud.get_generation(session, line, generation_id, lock=True)
    await session.run_sync(generations.decide, generation, _actor(principal), approve, why)
    await session.commit()
    return (await crud.generations_public(session, model, [generation]))[0]


@router.post(
    "/{name}/generations/{generation_id}/approve",
    response_model=GenerationPublic,
    responses=_ERRORS,
)
async def approve_generation(
    name: str, generation_id: uuid.UUID, body: DecisionCreate, principal: Admin, session: SessionDep
) -> GenerationPublic:
    """Promote a challenger that passed the gate (policy `approval`); audited."""
    return await _decide(name, generation_id, principal, session, True, body.reason)


@router.post(
    "/{name}/generations/{generation_id}/reject",
    response_model=GenerationPublic,
    responses=_ERRORS,
)
async def reject_generation(
    name: str, generation_id: uuid.UUID, body: DecisionCreate, principal: Admin, session: SessionDep
) -> GenerationPublic:
    """Keep the champion although the challenger passed; audited."""
    return await _decide(name, generation_id, principal, session, False, body.reason)


@router.post("/{name}/rollback", response_model=RollbackPublic, responses=_ERRORS)
async def rollback(name: str, principal: ModelsAdmin, session: SessionDep) -> RollbackPublic:
    """Point `production` back at the version it pointed at before its last move."""
    model = await crud.writable_model(session, principal, name)
    now, left = await session.run_sync(generations.rollback, model, _actor(principal))
    await session.commit()
    return RollbackPublic(model=name, production=now.ref, previous=left.ref)
