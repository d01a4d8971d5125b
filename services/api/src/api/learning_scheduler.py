"""The learning-loop scheduler: one leader for the whole platform (issue 17).

Every `learning_interval_seconds` each API process tries a pass; a transaction-level
advisory lock (like `api.reconciler`, with its own key) lets exactly one of them run it,
the others skip. A pass

- stages the challenger of every generation whose training job succeeded (alias
  `staging`, never `production`) and sends its gate evaluation to the trainer;
- re-sends gate evaluations whose message seems lost (sent more than 30 minutes ago);
- starts a generation for each enabled line whose policy fires: `reviews` after
  `min_new_reviews` newly reviewed images, `schedule` when `next_run_at` has passed.

Messages are sent after the commit; a training job whose message is lost is re-sent by the
reconciler, as any other.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from celery import Celery
from fastapi import FastAPI
from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.concurrency import run_in_threadpool

from api.crud.training_jobs import create_training_job
from shared.audit import audit_event
from shared.config import Settings
from shared.db.base import utcnow
from shared.db.learning_models import GenerationStatus, ModelGeneration, ModelLine
from shared.db.models import Model, Priority
from shared.errors import AppError, Conflict, InvalidRequest
from shared.learning import data, generations, lines
from shared.learning.generations import Actor
from shared.queueing import PRIORITY_VALUE
from shared.registry import PRODUCTION, alias_target
from shared.schemas.learning import RetrainingPolicy
from shared.schemas.training import TrainingJobCreate, TrainingParams
from shared.storage import BlobStore
from shared.tasks import Queue, TaskName

log = logging.getLogger(__name__)

# "medimh": next to the reconciler's "medimg", so the two passes never block each other.
LOCK_KEY = 0x6D6564696D68
GATE_RESEND_AFTER = timedelta(minutes=30)


@dataclass
class PassResult:
    skipped: bool = False
    started: list[uuid.UUID] = field(default_factory=list)  # generations
    gated: list[uuid.UUID] = field(default_factory=list)
    training_jobs: list[uuid.UUID] = field(default_factory=list)


def _training_params(line: ModelLine, policy: RetrainingPolicy, extra: dict[str, Any]) -> Any:
    values = {**line.recipe["params"], **policy.params, **extra}
    # Every recipe value is passed as the caller's, so it stays fixed; a null time budget is
    # left out because the derivation refuses that field set at all outside segmentation.
    if values.get("time_budget_s") is None:
        values.pop("time_budget_s", None)
    try:
        return TrainingParams.model_validate(values)
    except ValidationError as exc:
        raise InvalidRequest(
            f"the training parameters do not validate: {exc.errors()[0]['msg']}",
            errors=[{"field": ".".join(map(str, e["loc"])), "message": e["msg"]}
                    for e in exc.errors()],
        ) from None  # fmt: skip


async def start_generation(
    session: AsyncSession,
    *,
    settings: Settings,
    line: ModelLine,
    model: Model,
    trigger: str,
    actor: Actor,
    params: dict[str, Any] | None = None,
) -> ModelGeneration:
    """Build the data, queue the challenger's training job, add the generation (no commit).

    The caller commits, then sends the training job (`submit_training`).

    Raises:
        Conflict: a generation of the line is still running, or there is no production
            version to continue from.
        InvalidRequest: the parameters do not validate.
    """
    if await session.run_sync(generations.active, line) is not None:
        raise Conflict(f"a generation of {model.name!r} is still training or being evaluated")
    production = await session.run_sync(alias_target, model, PRODUCTION)
    if production is None:
        raise Conflict(f"model {model.name!r} has no production version to continue from")
    policy = RetrainingPolicy.model_validate(line.policy)
    train_params = _training_params(line, policy, params or {})
    store = BlobStore(settings.store_path)
    built = await session.run_sync(
        lambda s: data.build(s, store, line, model, max_pixels=settings.max_image_pixels)
    )
    recipe = line.recipe
    job = await create_training_job(
        session=session,
        tenant_id=line.tenant_id,
        request=TrainingJobCreate(
            task=recipe["task"],
            dataset=built.training_ref,
            architecture=recipe["architecture"],
            start_from=production.ref,
            model_name=model.name,
            monitor=recipe["monitor"],
            promote=False,  # the gate decides, never the trainer
            callback_url=None,
            params=train_params,
        ),
        hardware=settings.trainer_hardware,
    )
    await session.flush()  # the job row first: the generation's foreign key points at it
    generation = ModelGeneration(
        id=uuid.uuid4(),
        model_line_id=line.id,
        tenant_id=line.tenant_id,
        trigger=trigger,
        status=GenerationStatus.TRAINING,
        feedback_dataset_version_id=built.feedback_version_id,
        training_dataset_version_id=built.training_version_id,
        training_job_id=job.id,
        champion_version_id=production.id,
        margin=policy.margin,
        data_summary=built.summary,
        created_at=utcnow(),
    )
    session.add(generation)
    if built.watermark is not None:
        line.feedback_watermark = max(line.feedback_watermark or built.watermark, built.watermark)
    line.next_run_at = lines.next_run(policy)
    session.add(
        audit_event(
            tenant_id=line.tenant_id,
            api_key_id=actor.api_key_id,
            key_prefix=actor.key_prefix,
            action="model.retrain",
            resource_type="model",
            resource_id=model.name,
            detail={
                "generation": str(generation.id),
                "trigger": trigger,
                "training_job": str(job.id),
                "dataset": built.training_ref,
                "start_from": production.ref,
            },
        )
    )
    await session.flush()
    return generation


def _send(celery: Celery, task: TaskName, kwargs: dict[str, str], task_id: str) -> None:
    priority = PRIORITY_VALUE.get(Priority.ROUTINE, 0)
    celery.send_task(task, kwargs=kwargs, task_id=task_id, queue=Queue.TRAIN.value,
                     priority=priority)  # fmt: skip


async def send_training(celery: Celery, job_id: uuid.UUID) -> None:
    """Queue a generation's training job; a broker outage leaves it to the reconciler."""
    try:
        await run_in_threadpool(
            _send, celery, TaskName.FINE_TUNE, {"training_job_id": str(job_id)}, str(job_id)
        )
    except Exception as exc:  # the reconciler re-sends queued jobs the broker never got
        log.warning("training job %s not sent (%s); the reconciler will", job_id, exc)


async def send_gate(celery: Celery, generation_id: uuid.UUID) -> None:
    try:
        await run_in_threadpool(
            _send, celery, TaskName.EVALUATE_CHALLENGER,
            {"generation_id": str(generation_id)}, f"gate-{generation_id}",
        )  # fmt: skip
    except Exception as exc:  # re-sent by a later pass after GATE_RESEND_AFTER
        log.warning("gate of generation %s not sent: %s", generation_id, exc)


async def _advance(session: AsyncSession, result: PassResult) -> None:
    training = (
        await session.scalars(
            select(ModelGeneration).where(ModelGeneration.status == GenerationStatus.TRAINING)
        )
    ).all()
    for generation in training:
        if await session.run_sync(generations.advance_training, generation):
            result.gated.append(generation.id)
    stale = (
        await session.scalars(
            select(ModelGeneration).where(
                ModelGeneration.status == GenerationStatus.EVALUATING,
                ModelGeneration.gate_sent_at < func.now() - GATE_RESEND_AFTER,
            )
        )
    ).all()
    for generation in stale:
        generation.gate_sent_at = utcnow()
        result.gated.append(generation.id)


async def _fire(session: AsyncSession, settings: Settings, result: PassResult) -> None:
    for line in (await session.scalars(select(ModelLine).order_by(ModelLine.created_at))).all():
        policy = RetrainingPolicy.model_validate(line.policy)
        if not policy.enabled or policy.trigger == "manual":
            continue
        if policy.trigger == "reviews":
            due = await session.run_sync(lines.new_reviews, line)
            fires = due >= policy.min_new_reviews
        else:
            fires = line.next_run_at is not None and line.next_run_at <= utcnow()
        if not fires:
            continue
        model = await session.get(Model, line.model_id)
        assert model is not None
        try:
            async with session.begin_nested():  # one line's failure leaves the others alone
                generation = await start_generation(
                    session, settings=settings, line=line, model=model,
                    trigger=policy.trigger, actor=Actor(),
                )  # fmt: skip
        except AppError as exc:  # e.g. a generation still running, no production version
            log.info("retraining of %s not started: %s", model.name, exc.detail)
            continue
        except Exception:  # e.g. a reviewed image's blob is unreadable: the others go on
            log.exception("retraining of %s failed to start", model.name)
            continue
        result.started.append(generation.id)
        result.training_jobs.append(generation.training_job_id)


async def schedule_once(
    *, sessionmaker: async_sessionmaker[AsyncSession], celery: Celery, settings: Settings
) -> PassResult:
    """One pass; see the module docstring."""
    result = PassResult()
    async with sessionmaker() as session:
        if not await session.scalar(select(func.pg_try_advisory_xact_lock(LOCK_KEY))):
            result.skipped = True
            return result
        await _advance(session, result)
        await _fire(session, settings, result)
        await session.commit()
    for job_id in result.training_jobs:
        await send_training(celery, job_id)
    for generation_id in result.gated:
        await send_gate(celery, generation_id)
    return result


async def run_forever(
    *, sessionmaker: async_sessionmaker[AsyncSession], celery: Celery, settings: Settings
) -> None:
    while True:
        await asyncio.sleep(settings.learning_interval_seconds)
        try:
            result = await schedule_once(
                sessionmaker=sessionmaker, celery=celery, settings=settings
            )
        except Exception as exc:  # database or broker down: the next pass tries again
            log.warning("learning pass failed: %s: %s", type(exc).__name__, exc)
            continue
        if result.started or result.gated:
            log.info("learning pass", extra={"started": len(result.started),
                                             "gated": len(result.gated)})  # fmt: skip


def start(app: FastAPI) -> asyncio.Task[None]:
    state = app.state
    return asyncio.create_task(
        run_forever(sessionmaker=state.sessionmaker, celery=state.celery, settings=state.settings),
        name="learning-scheduler",
    )


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
