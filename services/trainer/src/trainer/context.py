"""Per-process trainer state: settings, DB sessions, blob store (created after the fork)."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import torch
from sqlalchemy.orm import Session, sessionmaker

from shared.config import Settings, get_settings
from shared.db.session import make_engine, make_sessionmaker
from shared.ml.device import pick_device as pick_device  # the one implementation
from shared.storage import BlobStore


@dataclass(frozen=True)
class TrainerContext:
    settings: Settings
    sessions: sessionmaker[Session]
    store: BlobStore


@lru_cache(maxsize=1)
def get_context() -> TrainerContext:
    settings = get_settings()
    engine = make_engine(settings.require_database_url(), pool_size=2)
    return TrainerContext(settings, make_sessionmaker(engine), BlobStore(settings.store_path))


def configure_torch(settings: Settings) -> None:
    # One training job per process: it may use every core unless told otherwise.
    torch.set_num_threads(settings.torch_threads or max(1, os.cpu_count() or 1))


def hardware(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    return f"{torch.get_num_threads()}-thread CPU ({os.cpu_count()} cores visible)"


@dataclass(frozen=True)
class JobSpec:
    """A claimed training job's row, detached from its session."""

    id: uuid.UUID
    tenant_id: uuid.UUID
    task: str
    dataset_version_id: uuid.UUID
    architecture: str
    start_from: str
    params: dict[str, Any]
    monitor: str
    model_name: str
    promote: bool
    checkpoint_key: str | None
    attempts: int
    worker: str  # the node that claimed it; every write checks it still holds the job
