"""Model registry: immutable model versions in Postgres, weights in the blob store.

References name a version three ways: ``name:version`` (exact), ``name@alias`` (whatever
the alias points at now) and ``name`` (the ``production`` alias when set, else the newest
live version). Versions never change once registered; deprecation flags them, deletion
hides them from new jobs, and neither touches the rows old jobs point at.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session, selectinload

from shared.db.base import utcnow
from shared.db.learning_models import AliasChange
from shared.db.models import Model, ModelAlias, ModelVersion
from shared.errors import Conflict, InvalidRequest, ModelNotFound
from shared.schemas.models import ModelCard
from shared.storage import BlobStore, sha256_file

_NAME = r"[a-z0-9][a-z0-9-]*[a-z0-9]"
_ALIAS = r"[a-z][a-z0-9_-]{0,63}"
_REF = re.compile(
    rf"^(?P<name>{_NAME})(?::(?P<version>\d+)|@(?P<alias>{_ALIAS}))?$",
)
ALIAS_PATTERN = re.compile(rf"^{_ALIAS}$")
WEIGHTS_FILE = "weights.pt"
CARD_FILE = "card.json"
# Optional validation images for the runtime-plan accuracy guard (npz: images, labels).
CALIBRATION_FILE = "calibration.npz"
PRODUCTION = "production"


@dataclass(frozen=True)
class ModelRef:
    name: str
    version: int | None = None
    alias: str | None = None

    def __str__(self) -> str:
        if self.version is not None:
            return f"{self.name}:{self.version}"
        return self.name if self.alias is None else f"{self.name}@{self.alias}"


def parse_model_ref(ref: str) -> ModelRef:
    """Parse ``name``, ``name:version`` or ``name@alias``.

    Raises:
        InvalidRequest: the reference is malformed.
    """
    match = _REF.match(ref.strip())
    if not match:
        raise InvalidRequest(
            f"model reference {ref!r} is not of the form 'name', 'name:version' or "
            "'name@alias' (lower-case letters, digits and '-')"
        )
    version = match["version"]
    return ModelRef(match["name"], int(version) if version else None, match["alias"])


def visible_to(tenant_id: uuid.UUID | None) -> Any:
    """Shared models plus the tenant's own; other tenants' models do not exist for it."""
    if tenant_id is None:
        return Model.tenant_id.is_(None)
    return or_(Model.tenant_id.is_(None), Model.tenant_id == tenant_id)


def _not_found(ref: object, detail: str) -> ModelNotFound:
    return ModelNotFound(detail, model=str(ref))


def resolve_model_version(session: Session, ref: str, tenant_id: uuid.UUID) -> ModelVersion:
    """The version a new job on ``ref`` runs. Deprecated versions still resolve.

    Args:
        session: sync session (the async API calls this through ``run_sync``).
        ref: ``name``, ``name:version`` or ``name@alias``.
        tenant_id: the caller's tenant; only shared models and its own are visible.

    Raises:
        InvalidRequest: malformed reference.
        ModelNotFound: unknown or deleted model, version or alias.
    """
    parsed = parse_model_ref(ref)
    model = session.scalar(select(Model).where(Model.name == parsed.name, visible_to(tenant_id)))
    if model is None:
        names = select(Model.name).where(visible_to(tenant_id), Model.deleted_at.is_(None))
        known = ", ".join(session.scalars(names.order_by(Model.name)).all())
        raise _not_found(parsed, f"no model named {parsed.name!r} (models: {known or 'none'})")
    if model.deleted_at is not None:
        raise _not_found(parsed, f"model {model.name!r} was deleted; it runs no new jobs")
    version = _pick(session, model, parsed)
    if version.deleted_at is not None:
        raise _not_found(parsed, f"{version.ref} was deleted; it runs no new jobs")
    return version


def _pick(session: Session, model: Model, ref: ModelRef) -> ModelVersion:
    if ref.version is not None:
        version = session.scalar(
            select(ModelVersion)
            .where(ModelVersion.model_id == model.id, ModelVersion.version == ref.version)
            .options(selectinload(ModelVersion.model))
        )
        if version is None:
            raise _not_found(ref, f"model {model.name!r} has no version {ref.version}")
        return version
    if ref.alias is not None:
        target = alias_target(session, model, ref.alias)
        if target is None:
            raise _not_found(ref, f"model {model.name!r} has no alias {ref.alias!r}")
        return target
    production = alias_target(session, model, PRODUCTION)
    if production is not None and production.deleted_at is None:
        return production
    # Newest live version, preferring ones not deprecated.
    newest = session.scalar(
        select(ModelVersion)
        .where(ModelVersion.model_id == model.id, ModelVersion.deleted_at.is_(None))
        .order_by(ModelVersion.deprecated_at.is_not(None), ModelVersion.version.desc())
        .limit(1)
        .options(selectinload(ModelVersion.model))
    )
    if newest is None:
        raise _not_found(ref, f"model {model.name!r} has no live versions")
    return newest


def alias_target(session: Session, model: Model, alias: str) -> ModelVersion | None:
    """The version ``alias`` points at now, or None."""
    return session.scalar(
        select(ModelVersion)
        .join(ModelAlias, ModelAlias.model_version_id == ModelVersion.id)
        .where(ModelAlias.model_id == model.id, ModelAlias.alias == alias)
        .options(selectinload(ModelVersion.model))
    )


def set_alias(session: Session, version: ModelVersion, alias: str) -> None:
    """Point ``alias`` at ``version`` (creating or moving it). The caller commits.

    Raises:
        InvalidRequest: malformed alias name.
        Conflict: the version is deleted.
    """
    if not ALIAS_PATTERN.match(alias):
        raise InvalidRequest(
            f"alias {alias!r} must start with a letter and use lower-case letters, digits, "
            "'-' or '_' (at most 64 characters)"
        )
    if version.deleted_at is not None:
        raise Conflict(f"{version.ref} is deleted; an alias cannot point at it", alias=alias)
    row = session.scalar(
        select(ModelAlias)
        .where(ModelAlias.model_id == version.model_id, ModelAlias.alias == alias)
        .with_for_update()
    )
    previous = None if row is None else row.model_version_id
    if row is None:
        session.add(ModelAlias(model_id=version.model_id, alias=alias, model_version=version))
    else:
        row.model_version = version
        row.updated_at = utcnow()
    if previous != version.id:  # the history rollback reads (shared.learning.promotion)
        session.add(
            AliasChange(
                model_id=version.model_id,
                alias=alias,
                from_version_id=previous,
                to_version_id=version.id,
            )
        )
    session.flush()


@dataclass(frozen=True)
class Registration:
    version: ModelVersion
    created: bool


def _owned_model(session: Session, card: ModelCard, tenant_id: uuid.UUID | None) -> Model:
    """The model row to add a version to, locked so version numbers never collide.

    `tenant_id` is the registering party (None: the platform itself, for shared models),
    never the existing model's owner: a version goes only into its owner's own model, so
    a plain name never resolves to weights another tenant added.
    """
    model = session.scalar(select(Model).where(Model.name == card.name).with_for_update())
    if model is None:
        model = Model(
            name=card.name, task=card.task, description=card.description, tenant_id=tenant_id
        )
        session.add(model)
        session.flush()
        return model
    if model.tenant_id != tenant_id:
        raise Conflict(
            f"the model name {card.name!r} is taken by another owner; choose another name",
            model=card.name,
        )
    if model.deleted_at is not None:
        raise Conflict(f"model {card.name!r} was deleted; register under a new name")
    if model.task != card.task:
        raise InvalidRequest(
            f"model {card.name!r} is a {model.task} model; a new version cannot be {card.task}"
        )
    return model


def ensure_version(
    session: Session,
    store: BlobStore,
    card: ModelCard,
    weights: Path | None,
    tenant_id: uuid.UUID | None,
    *,
    members: list[dict[str, Any]] | None = None,
) -> Registration:
    """Register a version unless the same weights (or members) already are one.

    Args:
        card: validated model card; ``card.name`` names the model.
        weights: checkpoint file; None only for ensembles.
        tenant_id: owner of a new model; None for a shared one. Adding a version to an
            existing model needs the same owner.
        members: ensemble members pinned to versions, ``[{version_id, ref, weight}]``.

    Returns:
        The version and whether it was created now. The caller commits.

    Raises:
        Conflict: the name belongs to another owner or the model is deleted.
        InvalidRequest: the card's task differs from the model's, or weights/members
            do not fit the card's kind.
    """
    if (card.kind == "ensemble") != (members is not None) or (members is None) == (weights is None):
        raise InvalidRequest("a single model needs weights; an ensemble needs members instead")
    model = _owned_model(session, card, tenant_id)
    digest = sha256_file(weights) if weights is not None else _members_digest(card, members)
    existing = session.scalar(
        select(ModelVersion)
        .where(ModelVersion.model_id == model.id, ModelVersion.weights_sha256 == digest)
        .options(selectinload(ModelVersion.model))
    )
    if existing is not None:
        return Registration(existing, created=False)
    key = store.put_file(weights, prefix="models", suffix=".pt")[0] if weights else ""
    latest = session.scalar(
        select(func.max(ModelVersion.version)).where(ModelVersion.model_id == model.id)
    )
    version = ModelVersion(
        model=model,
        version=(latest or 0) + 1,
        architecture=card.architecture,
        labels=card.labels,
        input_spec=card.input.model_dump(),
        card=card.model_dump(mode="json"),
        weights_key=key,
        weights_sha256=digest,
        queue=card.queue,
        kind=card.kind,
        members=members,
    )
    session.add(version)
    session.flush()
    return Registration(version, created=True)


def register_version(
    session: Session,
    store: BlobStore,
    card: ModelCard,
    weights: Path | None,
    tenant_id: uuid.UUID | None,
    *,
    members: list[dict[str, Any]] | None = None,
) -> ModelVersion:
    """Register a new version (or return the existing one with the same weights).

    See :func:`ensure_version`; the caller commits.
    """
    return ensure_version(session, store, card, weights, tenant_id, members=members).version


def _members_digest(card: ModelCard, members: list[dict[str, Any]] | None) -> str:
    """An ensemble's identity: its pinned members, weights and vote."""
    spec = card.ensemble
    identity = {
        "vote": spec.vote if spec else None,
        "members": [[str(m["version_id"]), m["weight"]] for m in members or []],
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def read_package_card(folder: Path) -> ModelCard:
    return ModelCard.model_validate(json.loads((folder / CARD_FILE).read_text()))


def register_package(session: Session, store: BlobStore, folder: Path) -> ModelVersion:
    """Register a shared model package folder (card.json + weights.pt) as a model version.

    Idempotent: a package whose weights are already registered under the same name
    returns the existing version instead of creating a new one.

    Returns:
        The (new or existing) model version. The caller commits.
    """
    version = register_version(
        session, store, read_package_card(folder), folder / WEIGHTS_FILE, tenant_id=None
    )
    calibration = folder / CALIBRATION_FILE
    if calibration.is_file() and version.calibration_key is None:
        key, _ = store.put_file(calibration, prefix="calibration", suffix=".npz")
        version.calibration_key = key
    return version


def register_bundled(session: Session, store: BlobStore, root: Path) -> list[ModelVersion]:
    """Register every package folder under ``root`` (the repo's ``models/``).

    Single models first (``card.json`` + ``weights.pt``), then ensembles (a ``card.json`` of
    kind ``ensemble`` and no weights), whose members are bundled packages pinned to the
    exact versions registered from those packages' weights. A bundled model without a
    ``production`` alias gets one on its bundled version, so plain-name jobs keep running it
    when other versions are added later.

    Raises:
        InvalidRequest: a bundled ensemble names a member that is not a bundled package, or
            its card was measured on member weights other than the bundled ones.
    """
    if not root.is_dir():
        return []
    folders = [f for f in sorted(root.iterdir()) if (f / CARD_FILE).is_file()]
    singles = {
        folder.name: register_package(session, store, folder)
        for folder in folders
        if (folder / WEIGHTS_FILE).is_file()
    }
    ensembles = [
        register_bundled_ensemble(session, store, folder, singles)
        for folder in folders
        if not (folder / WEIGHTS_FILE).is_file()
    ]
    versions = [*singles.values(), *ensembles]
    for version in versions:
        if alias_target(session, version.model, PRODUCTION) is None:
            set_alias(session, version, PRODUCTION)
    return versions


def register_bundled_ensemble(
    session: Session, store: BlobStore, folder: Path, bundled: dict[str, ModelVersion]
) -> ModelVersion:
    """Register a bundled ensemble package, its members pinned to the bundled versions.

    The card's ``ensemble.members`` are package names in the same ``models/`` folder; each
    resolves to the version registered from that package's weights (never to whatever
    ``production`` points at), so the ensemble runs exactly what its card was measured on.
    ``metrics.members`` records each member's weights sha256 at measurement time; a package
    whose weights changed since makes registration fail instead of serving stale metrics.
    """
    card = read_package_card(folder)
    if card.ensemble is None:
        raise InvalidRequest(f"bundled package {folder.name!r} has neither weights nor members")
    measured = {m["name"]: m.get("weights_sha256") for m in card.metrics.get("members", [])}
    versions = []
    for ref in card.ensemble.members:
        version = bundled.get(ref)
        if version is None:
            raise InvalidRequest(
                f"bundled ensemble {card.name!r}: member {ref!r} is not a package in "
                f"{folder.parent} (bundled ensembles name bundled packages only)"
            )
        if measured.get(ref) != version.weights_sha256:
            raise InvalidRequest(
                f"bundled ensemble {card.name!r} was measured on other weights of {ref!r} "
                f"(card: {measured.get(ref)}, package: {version.weights_sha256}); "
                "re-measure the ensemble and rewrite its card"
            )
        versions.append(version)
    if any(v.labels != card.labels for v in versions):
        raise InvalidRequest(f"bundled ensemble {card.name!r}: members' labels differ")
    weights = card.ensemble.weights or [1.0] * len(versions)
    members = [
        {"version_id": str(v.id), "ref": v.ref, "weight": w}
        for v, w in zip(versions, weights, strict=True)
    ]
    return register_version(session, store, card, None, tenant_id=None, members=members)
