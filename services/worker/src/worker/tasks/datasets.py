"""worker.import_dataset: a thin wrapper around shared.datasets.importer (no torch needed)."""

from __future__ import annotations

import logging
import uuid

from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from shared import job_state
from shared.datasets.importer import run_import
from shared.db.models import DatasetVersion
from shared.errors import AppError, TimeLimitExceeded
from worker.context import get_context

log = logging.getLogger(__name__)


def _fail_unexpectedly(
    sessions: sessionmaker[Session],
    version_id: uuid.UUID,
    error: AppError | None = None,
) -> None:
    error = error or AppError("the worker failed while importing; it has been logged")
    with sessions() as session:
        job_state.fail_one(session, DatasetVersion, version_id, error)
        session.commit()


def import_dataset_version(version_id: str, worker: str = "unknown") -> None:
    ctx = get_context()
    vid = uuid.UUID(version_id)
    try:
        run_import(
            vid, sessions=ctx.sessions, store=ctx.store, settings=ctx.settings, worker=worker
        )
    except OperationalError:
        raise  # database hiccup: the task retries; the version is still importing
    except SoftTimeLimitExceeded:
        log.warning("dataset import exceeded its soft time limit")
        limit = ctx.settings.import_soft_time_limit
        detail = f"the import ran longer than its {limit:g} s time limit; split the dataset"
        _fail_unexpectedly(ctx.sessions, vid, TimeLimitExceeded(detail))
    except Exception:
        # A bug must not leave the version "importing" forever; the trace goes to the log.
        log.exception("dataset import failed unexpectedly")
        _fail_unexpectedly(ctx.sessions, vid)
