"""Per-process worker state: DB engine, blob store and model cache.

Created lazily in the process that uses it, so prefork children never share a
connection pool or a model across a fork.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from functools import lru_cache

import torch
from sqlalchemy.orm import Session, sessionmaker

from shared.config import Settings, get_settings
from shared.db.session import make_engine, make_sessionmaker
from shared.storage import BlobStore
from worker.inference.runner import ModelCache

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerContext:
    settings: Settings
    sessions: sessionmaker[Session]
    store: BlobStore
    models: ModelCache


def configure_torch(settings: Settings) -> None:
    # Several single-threaded processes beat one multi-threaded one on CPU throughput
    # (PERF_BASELINES.md), so each child gets its share of the cores.
    threads = settings.torch_threads or max(1, (os.cpu_count() or 1) // _concurrency())
    torch.set_num_threads(threads)
    log.info("torch threads per process: %d", threads)


def _concurrency() -> int:
    return int(os.environ.get("MEDIMG_WORKER_CONCURRENCY", "1"))


@lru_cache(maxsize=1)
def get_context() -> WorkerContext:
    return make_context(get_settings())


def make_context(settings: Settings) -> WorkerContext:
    engine = make_engine(settings.require_database_url(), pool_size=2)
    store = BlobStore(settings.store_path)
    return WorkerContext(settings, make_sessionmaker(engine), store, ModelCache(store))
