"""Ensembles, aliases removal, deprecation and deletion: registry changes after upload.

Nothing here rewrites a version: deprecation and deletion only stamp ``*_at`` columns, so
jobs that ran a version keep their exact ``name:version`` and its card. Deletion refuses
(409) while a live ensemble pins the version or an alias points at it, so neither ever
dangles; move or drop those first.
"""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.db.base import utcnow
from shared.db.models import Model, ModelAlias, ModelVersion
from shared.errors import AppError, Conflict, InvalidModelCard, NotFound
from shared.model_packages import card_errors, validate_card
from shared.registry import resolve_model_version
from shared.schemas.models import ENSEMBLE_ARCHITECTURE, EnsembleSpec, ModelCard


def build_ensemble(
    session: Session, raw: dict[str, Any], tenant_id: uuid.UUID
) -> tuple[ModelCard, list[dict[str, Any]]]:
    """Resolve an ensemble card's members to exact versions and complete the card.

    Task, architecture, labels, input spec (the first member's; each member still
    preprocesses with its own), queue and a shared positive label default from the members.

    Returns:
        The validated card and the pinned members ``[{version_id, ref, weight}]``.

    Raises:
        InvalidModelCard: bad ensemble spec, unknown/deleted member, a member that is an
            ensemble or not a classifier, duplicate members, or differing labels.
    """
    try:
        spec = EnsembleSpec.model_validate(raw.get("ensemble"))
    except ValidationError as exc:
        raise card_errors(exc, ("ensemble",)) from None
    versions = [_member(session, ref, tenant_id) for ref in spec.members]
    if len({v.id for v in versions}) != len(versions):
        raise _bad("the ensemble lists the same member version twice", "ensemble.members")
    labels = versions[0].labels
    for v in versions[1:]:
        if v.labels != labels:
            raise _bad(
                f"ensemble members must have identical labels: {versions[0].ref} has {labels}, "
                f"{v.ref} has {v.labels}",
                "ensemble.members",
            )
    if "labels" in raw and raw["labels"] != labels:
        raise _bad(f"the card's labels must be the members' labels {labels}", "labels")
    positives = {v.card.get("positive_label") for v in versions}
    defaults: dict[str, Any] = {
        "task": "classification",
        "architecture": ENSEMBLE_ARCHITECTURE,
        "labels": labels,
        "input": versions[0].input_spec,
        "queue": "gpu" if any(v.queue == "gpu" for v in versions) else "cpu",
    }
    if len(positives) == 1 and None not in positives:
        defaults["positive_label"] = positives.pop()
    card = validate_card({**defaults, **raw})
    weights = spec.weights or [1.0] * len(versions)
    members = [
        {"version_id": str(v.id), "ref": v.ref, "weight": w}
        for v, w in zip(versions, weights, strict=True)
    ]
    return card, members


def _member(session: Session, ref: str, tenant_id: uuid.UUID) -> ModelVersion:
    try:
        version = resolve_model_version(session, ref, tenant_id)
    except AppError as exc:  # malformed ref, unknown or deleted model/version/alias
        raise _bad(f"ensemble member {ref!r}: {exc.detail}", "ensemble.members") from None
    if version.kind != "single":
        raise _bad(
            f"member {version.ref} is itself an ensemble; list its members instead",
            "ensemble.members",
        )
    if version.model.task != "classification":
        raise _bad(f"member {version.ref} is not a classifier", "ensemble.members")
    return version


def _bad(detail: str, field: str) -> InvalidModelCard:
    return InvalidModelCard(detail, errors=[{"field": f"card.{field}", "message": detail}])


def remove_alias(session: Session, model: Model, alias: str) -> None:
    """Raises: NotFound: the model has no such alias."""
    row = session.scalar(
        select(ModelAlias).where(ModelAlias.model_id == model.id, ModelAlias.alias == alias)
    )
    if row is None:
        raise NotFound(f"model {model.name!r} has no alias {alias!r}", alias=alias)
    session.delete(row)
    session.flush()


def deprecate(session: Session, target: Model | ModelVersion, reason: str) -> None:
    """Flag a model or version as deprecated: still served, flagged in listings and results."""
    target.deprecated_at = target.deprecated_at or utcnow()
    target.deprecation_reason = reason
    session.flush()


def _pinning_ensembles(session: Session, version_ids: list[uuid.UUID]) -> list[str]:
    """Refs of live ensemble versions that pin any of these versions."""
    ensembles = session.scalars(
        select(ModelVersion)
        .join(Model)
        .where(
            ModelVersion.kind == "ensemble",
            ModelVersion.deleted_at.is_(None),
            Model.deleted_at.is_(None),
        )
    ).all()
    wanted = {str(i) for i in version_ids}
    return [e.ref for e in ensembles if any(m["version_id"] in wanted for m in e.members or [])]


def delete_version(session: Session, version: ModelVersion) -> None:
    """Soft-delete one version: no new jobs; old results keep reading it.

    Raises:
        Conflict: an alias points at it, or a live ensemble pins it.
    """
    aliases = session.scalars(
        select(ModelAlias.alias).where(ModelAlias.model_version_id == version.id)
    ).all()
    if aliases:
        raise Conflict(
            f"{version.ref} is the target of alias(es) {', '.join(sorted(aliases))}; "
            "move or delete them first",
            aliases=sorted(aliases),
        )
    _refuse_if_pinned(session, [version.id], version.ref)
    version.deleted_at = utcnow()
    session.flush()


def delete_model(session: Session, model: Model) -> None:
    """Soft-delete a model and so every version of it (its aliases stop resolving).

    Raises:
        Conflict: a live ensemble of another model pins one of its versions.
    """
    _refuse_if_pinned(session, [v.id for v in model.versions], model.name, exclude=model)
    model.deleted_at = utcnow()
    session.flush()


def _refuse_if_pinned(
    session: Session, ids: list[uuid.UUID], what: str, exclude: Model | None = None
) -> None:
    pinned = _pinning_ensembles(session, ids)
    if exclude is not None:
        pinned = [r for r in pinned if r.rsplit(":", 1)[0] != exclude.name]
    if pinned:
        raise Conflict(
            f"{what} is a member of live ensemble(s) {', '.join(pinned)}; delete them first",
            ensembles=pinned,
        )
