"""Model registry: immutable model versions in Postgres, weights in the blob store."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from shared.db.models import Model, ModelVersion
from shared.errors import InvalidRequest
from shared.schemas.models import ModelCard
from shared.storage import BlobStore, sha256_file

_REF = re.compile(r"^(?P<name>[a-z0-9][a-z0-9-]*[a-z0-9])(?::(?P<version>\d+))?$")
WEIGHTS_FILE = "weights.pt"
CARD_FILE = "card.json"


@dataclass(frozen=True)
class ModelRef:
    name: str
    version: int | None = None

    def __str__(self) -> str:
        return self.name if self.version is None else f"{self.name}:{self.version}"


def parse_model_ref(ref: str) -> ModelRef:
    """Parse ``name`` or ``name:version``.

    Raises:
        InvalidRequest: the reference is malformed.
    """
    match = _REF.match(ref.strip())
    if not match:
        raise InvalidRequest(
            f"model reference {ref!r} is not of the form 'name' or 'name:version' "
            "(lower-case letters, digits and '-')"
        )
    version = match["version"]
    return ModelRef(match["name"], int(version) if version else None)


def read_package_card(folder: Path) -> ModelCard:
    return ModelCard.model_validate(json.loads((folder / CARD_FILE).read_text()))


def register_package(session: Session, store: BlobStore, folder: Path) -> ModelVersion:
    """Register a model package folder (card.json + weights.pt) as a model version.

    Idempotent: a package whose weights are already registered under the same name
    returns the existing version instead of creating a new one.

    Returns:
        The (new or existing) model version. The caller commits.
    """
    card = read_package_card(folder)
    weights = folder / WEIGHTS_FILE
    digest = sha256_file(weights)
    model = session.scalar(select(Model).where(Model.name == card.name))
    if model is None:
        model = Model(name=card.name, task=card.task, description=card.description)
        session.add(model)
        session.flush()
    existing = session.scalar(
        select(ModelVersion).where(
            ModelVersion.model_id == model.id, ModelVersion.weights_sha256 == digest
        )
    )
    if existing is not None:
        return existing
    key, _ = store.put_file(weights, prefix="models", suffix=".pt")
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
    )
    session.add(version)
    session.flush()
    return version


def register_bundled(session: Session, store: BlobStore, root: Path) -> list[ModelVersion]:
    """Register every package folder under ``root`` (the repo's ``models/``)."""
    if not root.is_dir():
        return []
    return [
        register_package(session, store, folder)
        for folder in sorted(root.iterdir())
        if (folder / CARD_FILE).is_file() and (folder / WEIGHTS_FILE).is_file()
    ]
