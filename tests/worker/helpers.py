"""Helpers for worker tests: the stack's store and settings, real derived models."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path

import torch
from sqlalchemy.orm import Session, sessionmaker

from cli.stack import Stack
from shared.config import REPO_ROOT
from shared.ml.architectures import load_state_dict
from shared.registry import CARD_FILE, WEIGHTS_FILE, register_version
from shared.schemas.models import ModelCard
from shared.storage import BlobStore
from tests.factories import stack_settings

BUNDLED = REPO_ROOT / "models" / "pneumonia-resnet18"


def derive_member(
    stack: Stack,
    db: sessionmaker[Session],
    folder: Path,
    name: str,
    change: Callable[[dict[str, torch.Tensor]], None],
) -> tuple[str, uuid.UUID]:
    """Register a real classifier derived from the bundled one (its fc layer changed).

    Returns:
        The version's ref (name:version) and id.
    """
    card = json.loads((BUNDLED / CARD_FILE).read_text())
    card.update(name=name, operating_point=None, validation_roc=None)
    state = load_state_dict(str(BUNDLED / WEIGHTS_FILE))
    change(state)
    folder.mkdir(parents=True)
    torch.save(state, folder / WEIGHTS_FILE)
    store = BlobStore(stack_settings(stack).store_path)
    with db() as s:
        version = register_version(
            s, store, ModelCard.model_validate(card), folder / WEIGHTS_FILE, tenant_id=None
        )
        s.commit()
        return version.ref, version.id


def register_ensemble(
    stack: Stack,
    db: sessionmaker[Session],
    name: str,
    members: list[tuple[str, uuid.UUID]],
    vote: str,
    weights: list[float],
) -> str:
    """An ensemble version over pinned members, as the registry stores it."""
    base = json.loads((BUNDLED / CARD_FILE).read_text())
    card = ModelCard.model_validate(
        {
            "name": name,
            "task": "classification",
            "architecture": "ensemble",
            "labels": base["labels"],
            "positive_label": base["positive_label"],
            "input": base["input"],
            "kind": "ensemble",
            "ensemble": {"members": [r for r, _ in members], "vote": vote, "weights": weights},
        }
    )
    pinned = [
        {"version_id": str(vid), "ref": ref, "weight": w}
        for (ref, vid), w in zip(members, weights, strict=True)
    ]
    store = BlobStore(stack_settings(stack).store_path)
    with db() as s:
        version = register_version(s, store, card, None, tenant_id=None, members=pinned)
        s.commit()
        return version.ref
