"""Model lines and generations as the API shows them (issue 17). Helpers never commit."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from api.authn_gate import Principal
from api.crud.models import get_model
from shared.auth import Scope
from shared.db.learning_models import GenerationStatus, ModelGeneration, ModelLine
from shared.db.models import Dataset, DatasetVersion, Model, ModelAlias, ModelVersion
from shared.errors import Conflict, Forbidden, NotFound
from shared.learning import lines
from shared.schemas.learning import (
    GenerationPublic,
    LockedTestSet,
    ModelLinePublic,
    RetrainingPolicy,
)


class LineNotFound(NotFound):
    type = "model-line-not-found"
    title = "Model line not found"


class GenerationNotFound(NotFound):
    type = "generation-not-found"
    title = "Generation not found"


async def writable_model(session: AsyncSession, principal: Principal, name: str) -> Model:
    """A model this key may change: its tenant's own, or a shared one for an operator."""
    model = await get_model(session=session, tenant_id=principal.tenant_id, name=name)
    if model.tenant_id is None and not principal.is_operator:
        raise Forbidden(
            f"model {name!r} is shared by every tenant: only a platform operator may change it",
            required_scope=Scope.PLATFORM_ADMIN.value,
        )
    if model.deleted_at is not None:
        raise Conflict(f"model {name!r} is deleted", model=name)
    return model


async def get_line(session: AsyncSession, model: Model) -> ModelLine:
    line = await session.run_sync(lines.get_line, model)
    if line is None:
        raise LineNotFound(
            f"model {model.name!r} has no learning loop yet; PUT its learning-policy first",
            model=model.name,
        )
    return line


async def _dataset_refs(
    session: AsyncSession, ids: Sequence[uuid.UUID | None]
) -> dict[uuid.UUID, str]:
    wanted = [i for i in ids if i is not None]
    rows = await session.execute(
        select(DatasetVersion.id, Dataset.name, DatasetVersion.version)
        .join(Dataset)
        .where(DatasetVersion.id.in_(wanted))
    )
    return {i: f"{name}:{number}" for i, name, number in rows.all()}


async def _version_refs(
    session: AsyncSession, ids: Sequence[uuid.UUID | None]
) -> dict[uuid.UUID, str]:
    wanted = [i for i in ids if i is not None]
    rows = await session.execute(
        select(ModelVersion.id, Model.name, ModelVersion.version)
        .join(Model)
        .where(ModelVersion.id.in_(wanted))
    )
    return {i: f"{name}:{number}" for i, name, number in rows.all()}


async def generations_public(
    session: AsyncSession, model: Model, items: list[ModelGeneration]
) -> list[GenerationPublic]:
    datasets = await _dataset_refs(
        session,
        [g.training_dataset_version_id for g in items]
        + [g.feedback_dataset_version_id for g in items],
    )
    versions = await _version_refs(
        session, [g.champion_version_id for g in items] + [g.challenger_version_id for g in items]
    )
    return [
        GenerationPublic(
            id=g.id,
            model=model.name,
            status=GenerationStatus(g.status),
            trigger=g.trigger,
            training_job_id=g.training_job_id,
            training_dataset=datasets[g.training_dataset_version_id],
            feedback_dataset=datasets.get(g.feedback_dataset_version_id)
            if g.feedback_dataset_version_id
            else None,
            champion=versions.get(g.champion_version_id) if g.champion_version_id else None,
            challenger=versions.get(g.challenger_version_id) if g.challenger_version_id else None,
            margin=g.margin,
            gate=g.gate,
            passed=g.passed,
            reason=g.reason,
            decided_by=g.decided_by,
            decided_at=g.decided_at,
            data_summary=g.data_summary,
            created_at=g.created_at,
        )
        for g in items
    ]


async def list_generations(
    session: AsyncSession, line: ModelLine, limit: int = 50
) -> list[ModelGeneration]:
    rows = await session.scalars(
        select(ModelGeneration)
        .where(ModelGeneration.model_line_id == line.id)
        .order_by(ModelGeneration.created_at.desc())
        .limit(limit)
        .execution_options(populate_existing=True)
    )
    return list(rows.all())


async def get_generation(
    session: AsyncSession, line: ModelLine, generation_id: uuid.UUID, *, lock: bool = False
) -> ModelGeneration:
    query = select(ModelGeneration).where(
        ModelGeneration.id == generation_id, ModelGeneration.model_line_id == line.id
    )
    if lock:
        query = query.with_for_update()
    generation = await session.scalar(query.execution_options(populate_existing=True))
    if generation is None:
        raise GenerationNotFound(f"model line has no generation {generation_id}")
    return generation


async def line_public(session: AsyncSession, model: Model, line: ModelLine) -> ModelLinePublic:
    locked = await session.run_sync(lines.locked_set, line)
    count = len(locked.shas)
    datasets = await _dataset_refs(
        session, [line.locked_dataset_version_id, line.base_dataset_version_id]
    )
    aliases = dict(
        (
            await session.execute(
                select(ModelAlias.alias, ModelAlias.model_version_id).where(
                    ModelAlias.model_id == model.id
                )
            )
        ).all()
    )
    refs = await _version_refs(session, list(aliases.values()))
    feedback = None
    if line.feedback_dataset_id is not None:
        feedback = await session.scalar(
            select(Dataset.name).where(Dataset.id == line.feedback_dataset_id)
        )
    return ModelLinePublic(
        model=model.name,
        locked_test_set=LockedTestSet(
            dataset=datasets[line.locked_dataset_version_id],
            images=count,
            groups=len(locked.groups),
            sha256=locked.fingerprint,
        ),
        base_dataset=datasets[line.base_dataset_version_id],
        recipe=line.recipe,
        policy=RetrainingPolicy.model_validate(line.policy),
        feedback_dataset=feedback,
        production=refs.get(aliases["production"]) if "production" in aliases else None,
        staging=refs.get(aliases["staging"]) if "staging" in aliases else None,
        new_reviews=await session.run_sync(lines.new_reviews, line),
        next_run_at=line.next_run_at,
        created_at=line.created_at,
    )
