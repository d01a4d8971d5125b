"""Deleting patient data: jobs, dataset versions, training artifacts, whole tenants; retention.

A deletion has two phases, so a crash never leaves half a job:

1. Rows. One transaction deletes the resource's rows and every row that references them
   (found from the foreign keys on `Base.metadata`, children first, so tables added later
   are covered), the rows that name them without a foreign key (`owner_id` of artifacts and
   callback deliveries, replayable idempotency responses), and adds the audit event. It
   returns the blob keys the deleted rows held; the caller commits.
2. Blobs. After the commit, each of those keys that no row references any more is removed
   from the store. Blobs are content-addressed and shared between tenants: a key is
   counted as referenced if any `*_key` column of any table still holds it.

A blob written or re-used (`BlobStore.put` refreshes the mtime) within the grace period may
belong to a row that is not committed yet, so phase 2 leaves it, and `sweep_orphan_blobs`
(housekeeping) removes it once it is older and still unreferenced; the sweep also removes
the blobs of a deletion that crashed between its commit and phase 2.

Audit rows survive every deletion: they have no foreign keys and hold ids and counts only.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import pkgutil
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Column, ColumnElement, String, Table, delete, func, literal, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

import shared.db
from shared.apikeys import REVOKED_CHANNEL
from shared.audit import record_sync
from shared.config import Settings
from shared.db.base import Base
from shared.db.models import (
    ApiKey,
    DatasetStatus,
    DatasetVersion,
    IdempotencyRecord,
    Job,
    JobStatus,
    ModelVersion,
    Tenant,
    TrainingJob,
)
from shared.errors import Conflict, DatasetNotFound, JobNotFound, NotFound
from shared.storage import BlobStore

# Every table module under shared.db, so the reference count and the foreign-key walk see
# all tables (the DICOM ones and any added later), not only those a caller happened to import.
for _module in pkgutil.iter_modules(shared.db.__path__):
    if _module.name.endswith("models"):
        importlib.import_module(f"shared.db.{_module.name}")

FINAL = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)
_BATCH = 500
# Polymorphic links without a foreign key: rows of these columns name a job or training job.
_OWNER_COLUMN = "owner_id"
# Tables whose ids a replayed POST response (idempotency record) can carry.
_RESPONSE_IDS = ("job", "training_job", "dataset", "dataset_version", "api_key")
_NEVER_DELETED = ("audit_event",)


@dataclass(frozen=True)
class Actor:
    """Who deletes: an API key, or the platform itself (retention: all None)."""

    tenant_id: uuid.UUID | None = None
    api_key_id: uuid.UUID | None = None
    key_prefix: str | None = None


@dataclass
class Deleted:
    """What phase 1 removed: rows per table, and the blob keys those rows held."""

    rows: dict[str, int] = field(default_factory=dict)
    blob_keys: set[str] = field(default_factory=set)
    ids: dict[str, set[uuid.UUID]] = field(default_factory=dict)

    def merge(self, other: Deleted) -> None:
        for name, n in other.rows.items():
            self.rows[name] = self.rows.get(name, 0) + n
        self.blob_keys |= other.blob_keys
        for name, ids in other.ids.items():
            self.ids.setdefault(name, set()).update(ids)


@dataclass
class BlobOutcome:
    removed: int = 0
    still_referenced: int = 0  # another row (perhaps another tenant's) holds the same blob
    deferred: int = 0  # written or re-used within the grace period: left to the sweep
    missing: int = 0


def grace_seconds(settings: Settings) -> float:
    """The blob grace period: never shorter than the longest task that writes blobs first
    and commits their rows at the end (a dataset import), plus a minute."""
    longest = max(settings.import_hard_time_limit, settings.infer_hard_time_limit)
    return max(settings.blob_grace_seconds, longest + 60)


# ---------------------------------------------------------------- reference counting


def blob_key_columns() -> list[Column[Any]]:
    """Every column holding a blob key: string columns named ``*_key``, in every table."""
    return [
        c
        for t in Base.metadata.sorted_tables
        for c in t.columns
        if c.name.endswith("_key") and isinstance(c.type, String)
    ]


def referenced(session: Session, keys: Iterable[str]) -> set[str]:
    """The subset of `keys` that some row still references."""
    wanted, found = list(set(keys)), set[str]()
    columns = blob_key_columns()
    for start in range(0, len(wanted), _BATCH):
        batch = wanted[start : start + _BATCH]
        for column in columns:
            found.update(session.scalars(select(column).where(column.in_(batch)).distinct()))
    return found


# ---------------------------------------------------------------- phase 1: rows


def _children(table: Table) -> Iterator[tuple[Table, Column[Any], Column[Any]]]:
    """(child table, its foreign-key column, the referenced column) for each FK into table."""
    for child in Base.metadata.sorted_tables:
        for fk in child.foreign_keys:
            if fk.column.table is table and child is not table:
                yield child, fk.parent, fk.column


def _delete_tree(
    session: Session, table: Table, where: ColumnElement[bool], path: tuple[Table, ...] = ()
) -> Deleted:
    """Delete the rows of `table` matching `where` and, first, every row referencing them."""
    out = Deleted()
    for child, fk_column, parent_column in _children(table):
        if child in path or child.name in _NEVER_DELETED:
            continue
        child_where = fk_column.in_(select(parent_column).where(where))
        out.merge(_delete_tree(session, child, child_where, (*path, table)))
    key_columns = [c for c in blob_key_columns() if c.table is table]
    pk = list(table.primary_key.columns)
    result = session.execute(delete(table).where(where).returning(*pk, *key_columns))
    n = 0
    for row in result:
        n += 1
        if len(pk) == 1 and isinstance(row[0], uuid.UUID):
            out.ids.setdefault(table.name, set()).add(row[0])
        out.blob_keys.update(k for k in row[len(pk) :] if k)
    if n:
        out.rows[table.name] = out.rows.get(table.name, 0) + n
    return out


def _delete_unlinked(session: Session, deleted: Deleted) -> None:
    """Rows naming deleted jobs/training jobs without a foreign key, and replayable
    responses (idempotency records) that carry a deleted id."""
    owners = sorted(deleted.ids.get("job", set()) | deleted.ids.get("training_job", set()))
    for table in Base.metadata.sorted_tables:
        owner = table.columns.get(_OWNER_COLUMN)
        if owner is None or table.name in _NEVER_DELETED:
            continue
        for start in range(0, len(owners), _BATCH):
            deleted.merge(_delete_tree(session, table, owner.in_(owners[start : start + _BATCH])))
    ids = sorted(str(i) for name in _RESPONSE_IDS for i in deleted.ids.get(name, set()))
    body = func.encode(IdempotencyRecord.response_body, literal("escape"))
    for start in range(0, len(ids), _BATCH):
        patterns = [f"%{i}%" for i in ids[start : start + _BATCH]]
        deleted.merge(
            _delete_tree(
                session,
                IdempotencyRecord.__table__,  # type: ignore[arg-type]
                or_(*(body.like(p) for p in patterns)),
            )
        )


def _audit(
    session: Session,
    actor: Actor,
    action: str,
    resource_type: str,
    resource_id: str,
    deleted: Deleted,
    **detail: Any,
) -> None:
    record_sync(
        session,
        action=action,
        resource_type=resource_type,
        resource_id=resource_id,
        tenant_id=actor.tenant_id,
        api_key_id=actor.api_key_id,
        key_prefix=actor.key_prefix,
        detail={"rows": deleted.rows, "blobs": len(deleted.blob_keys), **detail},
    )


def _job_conflict(job: Job) -> Conflict | None:
    if job.status not in FINAL:
        return Conflict(
            f"job {job.id} is {job.status}: cancel it first (POST /v1/jobs/{job.id}/cancel), "
            "then delete it",
            job_id=str(job.id),
            job_status=job.status,
        )
    return None


def delete_jobs(
    session: Session, job_ids: list[uuid.UUID], *, actor: Actor, **detail: Any
) -> Deleted:
    """Delete final jobs with their images, results, artifacts, deliveries and studies.

    Args:
        session: sync session; the caller commits, then calls `remove_blobs`.
        job_ids: the jobs, already checked to be final and the caller's.
        actor: who deletes; each job gets a ``job.delete`` audit event of the job's tenant
            when `actor` has none (retention).
        **detail: added to each audit event, e.g. ``reason="retention"``.

    Returns:
        The rows and blob keys removed.
    """
    total = Deleted()
    tenants = dict(session.execute(select(Job.id, Job.tenant_id).where(Job.id.in_(job_ids))).all())
    for job_id in job_ids:
        one = _delete_tree(session, Job.__table__, Job.__table__.c.id == job_id)  # type: ignore[arg-type]
        _delete_unlinked(session, one)
        who = actor if actor.tenant_id is not None else Actor(tenant_id=tenants.get(job_id))
        _audit(session, who, "job.delete", "job", str(job_id), one, **detail)
        total.merge(one)
    return total


def delete_job(
    session: Session, *, tenant_id: uuid.UUID, job_id: uuid.UUID, actor: Actor
) -> Deleted:
    """Delete one final job of `tenant_id` (see `delete_jobs`).

    Raises:
        JobNotFound: no such job in this tenant.
        Conflict: the job is queued or running (cancel it first), or it was cancelled
            while a worker still holds its lease (that worker may still write results).
    """
    job = session.scalar(
        select(Job).where(Job.id == job_id, Job.tenant_id == tenant_id).with_for_update()
    )
    if job is None:
        raise JobNotFound(f"no job with id {job_id}", job_id=str(job_id))
    if (conflict := _job_conflict(job)) is not None:
        raise conflict
    now = session.execute(select(func.now())).scalar_one()
    if job.status == JobStatus.CANCELLED and job.lease_expires_at and job.lease_expires_at > now:
        wait = max(1, int((job.lease_expires_at - now).total_seconds()) + 1)
        raise Conflict(
            f"job {job_id} was cancelled while running; its worker may still be writing "
            f"results until its lease ends: retry in {wait} s",
            headers={"Retry-After": str(wait)},
            job_id=str(job_id),
        )
    return delete_jobs(session, [job_id], actor=actor)


def _dataset_conflicts(session: Session, version_ids: list[uuid.UUID], force: bool) -> None:
    importing = session.scalars(
        select(DatasetVersion.version).where(
            DatasetVersion.id.in_(version_ids), DatasetVersion.status == DatasetStatus.IMPORTING
        )
    ).all()
    if importing:
        raise Conflict(f"version(s) {sorted(importing)} are still importing: wait for them")
    running = session.scalars(
        select(TrainingJob.id).where(
            TrainingJob.dataset_version_id.in_(version_ids), TrainingJob.status.not_in(FINAL)
        )
    ).all()
    if running:
        raise Conflict(
            f"training job(s) {', '.join(map(str, running))} still use this data: cancel "
            "them first",
            training_job_ids=[str(i) for i in running],
        )
    trained = (
        session.execute(
            select(ModelVersion)
            .join(TrainingJob, TrainingJob.result_model_version_id == ModelVersion.id)
            .where(
                TrainingJob.dataset_version_id.in_(version_ids), ModelVersion.deleted_at.is_(None)
            )
        )
        .scalars()
        .all()
    )
    if trained and not force:
        refs = sorted(v.ref for v in trained)
        raise Conflict(
            f"model version(s) {', '.join(refs)} were trained on this data and their cards "
            "cite it as provenance: delete those versions first, or send ?force=true to "
            "delete the data anyway (the versions stay servable; their provenance then "
            "names data that no longer exists)",
            model_versions=refs,
        )


def delete_dataset(
    session: Session,
    *,
    tenant_id: uuid.UUID,
    dataset_id: uuid.UUID,
    version: int | None,
    actor: Actor,
    force: bool = False,
) -> Deleted:
    """Delete one version of a dataset (its items, masks, stats, upload and the training jobs
    run on it), or with `version` None the whole dataset.

    Raises:
        DatasetNotFound: no such dataset or version in this tenant.
        Conflict: a version is importing, a training job on it is not final, or (unless
            `force`) a model version that is not deleted was trained on it.
    """
    from shared.db.models import Dataset

    dataset = session.scalar(
        select(Dataset)
        .where(Dataset.id == dataset_id, Dataset.tenant_id == tenant_id)
        .with_for_update()
    )
    if dataset is None:
        raise DatasetNotFound(f"no dataset {dataset_id}")
    query = select(DatasetVersion.id).where(DatasetVersion.dataset_id == dataset_id)
    if version is not None:
        query = query.where(DatasetVersion.version == version)
    version_ids = list(session.scalars(query))
    if version is not None and not version_ids:
        raise DatasetNotFound(f"dataset {dataset.name!r} has no version {version}")
    _dataset_conflicts(session, version_ids, force)
    if version is None:
        table: Table = Dataset.__table__  # type: ignore[assignment]
        deleted = _delete_tree(session, table, table.c.id == dataset_id)
        resource, action = str(dataset_id), "dataset.delete"
    else:
        table = DatasetVersion.__table__  # type: ignore[assignment]
        deleted = _delete_tree(session, table, table.c.id.in_(version_ids))
        resource, action = f"{dataset_id}:{version}", "dataset_version.delete"
    _delete_unlinked(session, deleted)
    _audit(session, actor, action, "dataset", resource, deleted, force=force)
    return deleted


def delete_training_artifacts(
    session: Session, *, tenant_id: uuid.UUID, training_job_id: uuid.UUID, actor: Actor
) -> Deleted:
    """Delete a final training job's artifacts (curves, events, card) and its checkpoint.

    The job row and its per-epoch metrics stay: numbers only, no patient data.

    Raises:
        NotFound: no such training job in this tenant.
        Conflict: the job is queued or running (it would write new ones).
    """
    job = session.scalar(
        select(TrainingJob)
        .where(TrainingJob.id == training_job_id, TrainingJob.tenant_id == tenant_id)
        .with_for_update()
    )
    if job is None:
        raise NotFound(f"no training job with id {training_job_id}")
    if job.status not in FINAL:
        raise Conflict(
            f"training job {job.id} is {job.status}: cancel it first, then delete its artifacts",
            job_status=job.status,
        )
    from shared.db.models import Artifact

    table: Table = Artifact.__table__  # type: ignore[assignment]
    deleted = _delete_tree(session, table, table.c.owner_id == job.id)
    if job.checkpoint_key:
        deleted.blob_keys.add(job.checkpoint_key)
        deleted.rows["training_job.checkpoint_key"] = 1
        job.checkpoint_key = None
    session.flush()
    _audit(session, actor, "training_job.artifacts.delete", "training_job", str(job.id), deleted)
    return deleted


def delete_tenant(
    session: Session, *, tenant_id: uuid.UUID, actor: Actor, force: bool = False
) -> Deleted:
    """Delete a tenant and everything it owns: API keys, jobs, datasets, training jobs,
    private models, DICOM nodes and rules, studies, deliveries (audit rows stay).

    Raises:
        NotFound: no such tenant.
        Conflict: the actor's own tenant, or (unless `force`) work still queued or running.
    """
    tenant = session.get(Tenant, tenant_id, with_for_update=True)
    if tenant is None:
        raise NotFound(f"no tenant with id {tenant_id}")
    if actor.tenant_id == tenant_id:
        raise Conflict("a key cannot delete its own tenant: use an operator key of another one")
    busy: dict[str, Any] = {
        "jobs": session.scalar(
            select(func.count()).where(Job.tenant_id == tenant_id, Job.status.not_in(FINAL))
        ),
        "training_jobs": session.scalar(
            select(func.count()).where(
                TrainingJob.tenant_id == tenant_id, TrainingJob.status.not_in(FINAL)
            )
        ),
    }
    if any(busy.values()) and not force:
        raise Conflict(
            f"tenant {tenant.name!r} still has work queued or running ({busy}): cancel it, "
            "or send ?force=true (its workers then find their rows gone)",
            **busy,
        )
    # API processes cache valid keys for a few seconds: tell them, as a revocation does.
    prefixes = session.scalars(select(ApiKey.prefix).where(ApiKey.tenant_id == tenant_id)).all()
    table: Table = Tenant.__table__  # type: ignore[assignment]
    deleted = _delete_tree(session, table, table.c.id == tenant_id)
    _delete_unlinked(session, deleted)
    for prefix in prefixes:  # delivered on commit
        session.execute(select(func.pg_notify(REVOKED_CHANNEL, prefix)))
    _audit(session, actor, "tenant.delete", "tenant", str(tenant_id), deleted, force=force)
    return deleted


# ---------------------------------------------------------------- retention


def expired_jobs(session: Session, *, limit: int) -> list[uuid.UUID]:
    """Final jobs older than their tenant's retention period (finished_at, else created_at),
    leaving cancelled jobs whose worker still holds the lease for a later round."""
    age = func.coalesce(Job.finished_at, Job.created_at)
    cutoff = func.now() - func.make_interval(0, 0, 0, Tenant.retention_days)
    return list(
        session.scalars(
            select(Job.id)
            .join(Tenant, Tenant.id == Job.tenant_id)
            .where(
                Tenant.retention_days.is_not(None),
                Job.status.in_(FINAL),
                age < cutoff,
                or_(
                    Job.lease_expires_at.is_(None),
                    Job.lease_expires_at < func.now(),
                    Job.status != JobStatus.CANCELLED,
                ),
            )
            .order_by(age)
            .limit(limit)
            # Several API replicas run housekeeping: each job is deleted (and audited) once.
            .with_for_update(of=Job, skip_locked=True)
        )
    )


def expire_studies(session: Session) -> Deleted:
    """DICOM studies that made no job (unmatched, failed) past their tenant's retention:
    they hold the study's original identifiers for re-identification."""
    from shared.db.dicom_models import DicomStudy, StudyStatus

    table: Table = DicomStudy.__table__  # type: ignore[assignment]
    expired = (
        select(DicomStudy.id)
        .join(Tenant, Tenant.id == DicomStudy.tenant_id)
        .where(
            Tenant.retention_days.is_not(None),
            DicomStudy.job_id.is_(None),
            DicomStudy.status.in_([StudyStatus.UNMATCHED, StudyStatus.FAILED]),
            DicomStudy.created_at < func.now() - func.make_interval(0, 0, 0, Tenant.retention_days),
        )
    )
    deleted = _delete_tree(session, table, table.c.id.in_(expired.scalar_subquery()))
    if deleted.rows:
        record_sync(
            session,
            action="dicom_study.delete",
            resource_type="dicom_study",
            resource_id=None,
            detail={"reason": "retention", "rows": deleted.rows},
        )
    return deleted


# ---------------------------------------------------------------- phase 2: blobs


def _unlink_settled(path: Path, cutoff: float) -> str:
    """Remove a blob last written before `cutoff`; "removed", "deferred" or "missing".

    The blob is renamed away first, so a concurrent `put` of the same bytes either touched
    it before (seen in the mtime of the renamed file: put back) or writes a fresh copy.
    """
    try:
        if path.stat().st_mtime > cutoff:
            return "deferred"
        tomb = path.with_name(f".del-{uuid.uuid4().hex}")
        os.rename(path, tomb)
    except FileNotFoundError:
        return "missing"
    if tomb.stat().st_mtime > cutoff:  # re-used between the stat and the rename
        try:
            os.link(tomb, path)
        except FileExistsError:  # a fresh copy was written meanwhile: same bytes
            pass
        tomb.unlink()
        return "deferred"
    tomb.unlink()
    return "removed"


def unlink_blobs(store: BlobStore, keys: Iterable[str], *, grace: float) -> BlobOutcome:
    """Remove unreferenced blobs older than `grace` seconds (filesystem only: no DB check)."""
    outcome, cutoff = BlobOutcome(), time.time() - grace
    for key in keys:
        result = _unlink_settled(store.path(key), cutoff)
        setattr(outcome, result, getattr(outcome, result) + 1)
    return outcome


def remove_blobs(
    session: Session, store: BlobStore, keys: Iterable[str], *, grace: float
) -> BlobOutcome:
    """Phase 2, after the rows' commit: remove each key no row references any more.

    Args:
        session: any session; only reads (the reference count).
        store: the blob store.
        keys: `Deleted.blob_keys` of the committed deletion.
        grace: seconds; younger blobs are left to `sweep_orphan_blobs`.

    Returns:
        Counts of removed, still referenced (shared), deferred and missing blobs.
    """
    keys = set(keys)
    still = referenced(session, keys)
    outcome = unlink_blobs(store, sorted(keys - still), grace=grace)
    outcome.still_referenced = len(still)
    return outcome


def sweep_orphan_blobs(session: Session, store: BlobStore, *, grace: float) -> int:
    """Remove every blob older than `grace` that no row references, and leftovers of
    interrupted writes or deletions (``.tmp-*``, ``.del-*``); returns how many files went."""
    cutoff, removed, batch = time.time() - grace, 0, list[str]()

    def flush() -> int:
        if not batch:
            return 0
        orphans = sorted(set(batch) - referenced(session, batch))
        batch.clear()
        return unlink_blobs(store, orphans, grace=grace).removed

    root = store.root.resolve()
    for folder, _dirs, files in os.walk(root):
        for name in files:
            path = Path(folder) / name
            try:
                if path.stat().st_mtime > cutoff:
                    continue
            except FileNotFoundError:
                continue
            if name.startswith((".tmp-", ".del-")):
                path.unlink(missing_ok=True)
                removed += 1
                continue
            batch.append(path.relative_to(root).as_posix())
            if len(batch) >= _BATCH:
                removed += flush()
    return removed + flush()


async def remove_blobs_async(
    session: AsyncSession, store: BlobStore, keys: Iterable[str], *, grace: float
) -> BlobOutcome:
    """`remove_blobs` for the API: the count on the event loop, the unlinks in a thread."""
    wanted = set(keys)
    still = await session.run_sync(lambda s: referenced(s, wanted))
    await session.commit()  # ends the read-only transaction before the slow part
    outcome = await asyncio.to_thread(unlink_blobs, store, sorted(wanted - still), grace=grace)
    outcome.still_referenced = len(still)
    return outcome
