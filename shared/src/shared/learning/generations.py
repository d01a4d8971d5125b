"""A generation's life after its training job: stage, gate, decide, promote, roll back.

A challenger only ever gets the `staging` alias from here; `production` moves only through
`promote` (a passing gate under policy `auto`, or an admin's approval) and `rollback`.
Every move is audited; `set_alias` also records it in `alias_change`, which rollback reads.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from shared.audit import audit_event
from shared.db.base import utcnow
from shared.db.learning_models import (
    AliasChange,
    GenerationStatus,
    ModelGeneration,
    ModelLine,
)
from shared.db.models import JobStatus, Model, ModelVersion, TrainingJob
from shared.errors import Conflict
from shared.learning.gate_rule import GateReport, summary
from shared.registry import PRODUCTION, alias_target, set_alias
from shared.schemas.learning import RetrainingPolicy

STAGING = "staging"


@dataclass(frozen=True)
class Actor:
    """Who decides: an API key, or the policy itself (all None)."""

    tenant_id: uuid.UUID | None = None
    api_key_id: uuid.UUID | None = None
    key_prefix: str | None = None

    @property
    def name(self) -> str:
        return self.key_prefix or "policy"


def _audit(
    session: Session,
    actor: Actor,
    tenant_id: uuid.UUID | None,
    action: str,
    ref: str,
    **detail: object,
) -> None:
    session.add(
        audit_event(
            tenant_id=actor.tenant_id or tenant_id,
            api_key_id=actor.api_key_id,
            key_prefix=actor.key_prefix,
            action=action,
            resource_type="model",
            resource_id=ref,
            detail=dict(detail),
        )
    )


def _version(session: Session, version_id: uuid.UUID | None) -> ModelVersion | None:
    if version_id is None:
        return None
    return session.scalar(
        select(ModelVersion)
        .where(ModelVersion.id == version_id)
        .options(selectinload(ModelVersion.model))
    )


def advance_training(session: Session, generation: ModelGeneration) -> bool:
    """Stage the challenger once its training job succeeded (or fail the generation).

    Returns:
        True when the generation is now waiting for its gate evaluation (send the task).
    """
    job = session.get(TrainingJob, generation.training_job_id)
    if job is None or job.status in (JobStatus.QUEUED, JobStatus.RUNNING):
        return False
    if job.status != JobStatus.SUCCEEDED or job.result_model_version_id is None:
        generation.status = GenerationStatus.FAILED
        generation.reason = f"training job {job.id} {job.status}: {job.error_detail or ''}".strip()
        return False
    challenger = _version(session, job.result_model_version_id)
    assert challenger is not None
    set_alias(session, challenger, STAGING)
    generation.challenger_version_id = challenger.id
    generation.status = GenerationStatus.EVALUATING
    generation.gate_sent_at = utcnow()
    _audit(session, Actor(), generation.tenant_id, "model.stage", challenger.ref,
           generation=str(generation.id), alias=STAGING)  # fmt: skip
    return True


def promote(session: Session, generation: ModelGeneration, actor: Actor, why: str) -> None:
    challenger = _version(session, generation.challenger_version_id)
    assert challenger is not None
    set_alias(session, challenger, PRODUCTION)
    generation.status = GenerationStatus.PROMOTED
    generation.decided_by, generation.decided_at = actor.name, utcnow()
    _audit(session, actor, generation.tenant_id, "model.promote", challenger.ref,
           generation=str(generation.id), reason=why)  # fmt: skip


def record_gate(
    session: Session, generation_id: uuid.UUID, report: GateReport | None, reason: str | None
) -> ModelGeneration | None:
    """Store the trainer's gate report and apply the line's promotion policy.

    `report` None: the evaluation failed (`reason` says why). Returns None when the
    generation is no longer waiting for its gate (a duplicate task delivery).
    """
    generation = session.get(ModelGeneration, generation_id, with_for_update=True)
    if generation is None or generation.status != GenerationStatus.EVALUATING:
        return None
    line = session.get(ModelLine, generation.model_line_id)
    assert line is not None
    policy = RetrainingPolicy.model_validate(line.policy)
    if report is None:
        generation.status, generation.reason = GenerationStatus.FAILED, reason
        return generation
    generation.gate = report.model_dump(mode="json")
    generation.passed = report.passed
    generation.reason = summary(report)
    d = report.discrimination
    _audit(session, Actor(), generation.tenant_id, "model.gate", report.challenger,
           generation=str(generation.id), passed=report.passed, difference=d.difference,
           ci95=d.ci95)  # fmt: skip
    if not report.passed:
        generation.status = GenerationStatus.REFUSED
        generation.decided_by, generation.decided_at = "gate", utcnow()
    elif policy.promotion == "auto":
        promote(session, generation, Actor(), "passed the gate; policy promotes automatically")
    else:
        generation.status = GenerationStatus.AWAITING_APPROVAL
    return generation


def decide(
    session: Session, generation: ModelGeneration, actor: Actor, approve: bool, why: str = ""
) -> None:
    """An admin approves (promotes) or rejects a challenger that passed the gate.

    Raises:
        Conflict: the generation is not awaiting a decision (a refused challenger can never
            be approved: the gate is not advisory).
    """
    if generation.status != GenerationStatus.AWAITING_APPROVAL:
        raise Conflict(
            f"generation {generation.id} is {generation.status}; only one awaiting approval "
            "can be approved or rejected",
            generation_status=generation.status,
        )
    if approve:
        challenger = _version(session, generation.challenger_version_id)
        assert challenger is not None
        current = alias_target(session, challenger.model, PRODUCTION)
        if current is None or current.id != generation.champion_version_id:
            raise Conflict(
                "production has moved since this challenger was gated against "
                f"{generation.champion_version_id}; start a new generation instead",
                generation_status=generation.status,
            )
        promote(session, generation, actor, why or "approved by an admin")
        return
    generation.status = GenerationStatus.REJECTED
    generation.decided_by, generation.decided_at = actor.name, utcnow()
    challenger = _version(session, generation.challenger_version_id)
    ref = challenger.ref if challenger else ""
    _audit(session, actor, generation.tenant_id, "model.reject", ref,
           generation=str(generation.id), reason=why)  # fmt: skip


def rollback(session: Session, model: Model, actor: Actor) -> tuple[ModelVersion, ModelVersion]:
    """Point `production` back at the version it pointed at before its last move.

    Returns:
        (the version production points at now, the one it left).

    Raises:
        Conflict: production never moved, or the previous version was deleted since.
    """
    current = alias_target(session, model, PRODUCTION)
    last = session.scalar(
        select(AliasChange)
        .where(AliasChange.model_id == model.id, AliasChange.alias == PRODUCTION)
        .order_by(AliasChange.created_at.desc(), AliasChange.id.desc())
        .limit(1)
    )
    if current is None or last is None or last.from_version_id is None:
        raise Conflict(f"model {model.name!r} has no earlier production version to return to")
    previous = _version(session, last.from_version_id)
    if previous is None or previous.deleted_at is not None:
        raise Conflict(f"the previous production version of {model.name!r} was deleted")
    set_alias(session, previous, PRODUCTION)
    _audit(session, actor, model.tenant_id, "model.rollback", previous.ref, left=current.ref)
    return previous, current


def active(session: Session, line: ModelLine) -> ModelGeneration | None:
    """The line's generation still training or being evaluated, if any."""
    return session.scalar(
        select(ModelGeneration).where(
            ModelGeneration.model_line_id == line.id,
            ModelGeneration.status.in_(
                [GenerationStatus.TRAINING.value, GenerationStatus.EVALUATING.value]
            ),
        )
    )
