"""Epoch checkpoints in the blob store: everything needed to continue as if never stopped.

A checkpoint holds the model, optimiser, LR scheduler and AMP scaler states, the epoch
reached, the best weights so far with their score, the early-stopping counter and every
random number generator, so a resumed job draws the same shuffles and augmentations.
"""

from __future__ import annotations

import io
import random
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from shared.storage import BlobStore


@dataclass
class FitState:
    """Progress of a fit that survives a restart."""

    epoch: int = 0  # last finished epoch
    best_value: float | None = None
    best_epoch: int = 0
    best_state: dict[str, torch.Tensor] | None = None
    stale: int = 0  # epochs since the monitored metric last improved
    history: list[dict[str, Any]] = field(default_factory=list)
    # Job-level position beyond this fit (cross-validation: the fold and the finished folds).
    meta: dict[str, Any] = field(default_factory=dict)


def _rng_state(generator: torch.Generator) -> dict[str, Any]:
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": [kind, keys.tolist(), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
        "loader": generator.get_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _restore_rng(state: dict[str, Any], generator: torch.Generator) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    generator.set_state(state["loader"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    store: BlobStore,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: torch.amp.GradScaler | None,
    state: FitState,
    generator: torch.Generator,
) -> str:
    """Serialise everything to the store; returns the blob key."""
    payload = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "fit": {
            "epoch": state.epoch,
            "best_value": state.best_value,
            "best_epoch": state.best_epoch,
            "best_state": state.best_state,
            "stale": state.stale,
            "history": state.history,
            "meta": state.meta,
        },
        "rng": _rng_state(generator),
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    key, _ = store.put(buffer.getvalue(), prefix="checkpoints", suffix=".pt")
    return key


def load_checkpoint(
    store: BlobStore,
    key: str,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: torch.amp.GradScaler | None,
    generator: torch.Generator,
) -> FitState:
    """Restore every state saved by `save_checkpoint` in place; returns the fit state."""
    # weights_only: only tensors, numbers, strings and containers; nothing is unpickled.
    payload = torch.load(io.BytesIO(store.get(key)), map_location="cpu", weights_only=True)
    model.load_state_dict(payload["model"])
    optimizer.load_state_dict(payload["optimizer"])
    scheduler.load_state_dict(payload["scheduler"])
    if scaler is not None and payload["scaler"] is not None:
        scaler.load_state_dict(payload["scaler"])
    _restore_rng(payload["rng"], generator)
    return FitState(**payload["fit"])


def checkpoint_meta(store: BlobStore, key: str) -> dict[str, Any]:
    """The job-level position a checkpoint carries (e.g. its cross-validation fold)."""
    payload = torch.load(io.BytesIO(store.get(key)), map_location="cpu", weights_only=True)
    meta: dict[str, Any] = payload["fit"].get("meta") or {}
    return meta


def delete_checkpoint(store: BlobStore, key: str | None) -> None:
    """Drop a superseded checkpoint blob (checkpoints are large and never shared)."""
    if key:
        store.path(key).unlink(missing_ok=True)
