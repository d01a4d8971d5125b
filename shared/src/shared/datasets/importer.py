"""Import one uploaded dataset version: vet, parse, decode, check, split, then write at once.

Items are written in the same transaction that marks the version `ready`, so a failed or
interrupted import leaves nothing usable behind (image blobs are content-addressed and
harmless). A redelivered task finds the version no longer `importing` and stops.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Collection
from typing import Any

from sqlalchemy import func, insert, literal, select, update
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Session, sessionmaker

from shared import job_state, leases
from shared.config import Settings
from shared.datasets import records as rec
from shared.datasets import splits
from shared.datasets.formats import PARSERS, SourceFormat, Task
from shared.datasets.formats import segmentation_masks as seg_masks
from shared.datasets.safezip import SafeArchive, ZipLimits, open_archive
from shared.db.base import utcnow
from shared.db.models import Dataset, DatasetItem, DatasetStatus, DatasetVersion
from shared.errors import AppError, AttemptsExceeded, InvalidDataset
from shared.imaging.deid import Deidentified, deidentify
from shared.imaging.formats import STORED_SUFFIX
from shared.imaging.strip_metadata import strip_metadata
from shared.pseudonyms import pseudonym
from shared.storage import BlobStore

log = logging.getLogger(__name__)
BURNED_IN = "burned_in_annotation"  # Record.extra key: DICOM declaring text in its pixels
MAX_STORED_PROBLEMS = 1000
_PROGRESS_EVERY_S = 0.5


class _Progress:
    """Throttled progress writes in their own short transactions."""

    def __init__(self, sessions: sessionmaker[Session], version_id: uuid.UUID) -> None:
        self.sessions, self.version_id, self.last = sessions, version_id, 0.0

    def __call__(self, phase: str, done: int, total: int, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last < _PROGRESS_EVERY_S:
            return
        self.last = now
        with self.sessions() as session:
            session.execute(
                update(DatasetVersion)
                .where(DatasetVersion.id == self.version_id)
                .values(progress={"phase": phase, "done": done, "total": total})
            )
            session.commit()


def _fail(
    sessions: sessionmaker[Session],
    version_id: uuid.UUID,
    error: AppError,
    problems: list[dict[str, str]] | None = None,
) -> None:
    empty, failed = literal({}, JSONB), literal({"phase": "failed"}, JSONB)
    phase = func.coalesce(DatasetVersion.progress, empty).op("||")(failed)
    with sessions() as session:
        job_state.fail_one(
            session,
            DatasetVersion,
            version_id,
            error,
            errors=(problems or [])[:MAX_STORED_PROBLEMS],
            progress=phase,
        )
        session.commit()


def _invalid(problems: list[dict[str, str]]) -> InvalidDataset:
    shown = "; ".join(f"{p['file']}: {p['problem']}" for p in problems[:5])
    more = f" (and {len(problems) - 5} more, see `errors`)" if len(problems) > 5 else ""
    return InvalidDataset(f"{len(problems)} problem(s) in the dataset: {shown}{more}")


def _read_all(
    archive: SafeArchive,
    parsed: Any,
    store: BlobStore,
    settings: Settings,
    progress: _Progress,
    problems: list[dict[str, str]],
) -> list[rec.Record]:
    records: list[rec.Record] = []
    total = len(parsed.entries)
    for done, entry in enumerate(parsed.entries):
        progress("reading", done, total)
        data = archive.read(entry.path)
        record = rec.read_entry(
            entry,
            data,
            max_pixels=settings.max_image_pixels,
            problems=problems,
            secret=settings.uid_salt(),
        )
        if record is not None and entry.mask is not None:
            record.mask = _read_mask(archive, entry.path, entry.mask, record, parsed, store,
                                     settings, problems)  # fmt: skip
            if record.mask is None:
                continue
        if record is not None:
            if record.format == "dicom" and settings.deidentify_uploads:
                # Stored like a job upload: PS3.15 profile applied, pixels unchanged. The
                # item's sha256 is the stored file's; duplicates still match, since the
                # same file always de-identifies to the same bytes.
                cleaned = _deidentified(data, settings, entry.path, problems)
                if cleaned is None:
                    continue
                data = cleaned.data
                if cleaned.burned_in and settings.deidentify_burned_in == "flag":
                    record.extra[BURNED_IN] = "YES"
            elif settings.deidentify_uploads:  # EXIF / PNG text chunks; pixels as they are
                try:
                    data = strip_metadata(data, record.format)
                except AppError as exc:
                    problems.append({"file": entry.path, "problem": exc.detail})
                    continue
            record.storage_key, record.sha256 = store.put(
                data, prefix="images", suffix=STORED_SUFFIX.get(record.format, "")
            )
            records.append(record)
    progress("reading", total, total, force=True)
    return records


def _deidentified(
    data: bytes, settings: Settings, path: str, problems: list[dict[str, str]]
) -> Deidentified | None:
    try:
        return deidentify(
            data, uid_salt=settings.uid_salt(), burned_in_policy=settings.deidentify_burned_in
        )
    except AppError as exc:  # refused by policy (burned-in annotation)
        problems.append({"file": path, "problem": exc.detail})
    except Exception as exc:  # noqa: BLE001  (pydicom cannot rewrite a header it read)
        problems.append({"file": path, "problem": f"cannot be de-identified: {exc}"})
    return None


def opaque_path(path: str, secret: bytes, keep: Collection[str] = ()) -> str:
    """A member path (whose folders and file names may carry MRNs) with every component
    replaced by a stable HMAC pseudonym, except the class labels in `keep`; the file
    extension is kept.

    The same component and secret always give the same name, so items of two versions
    line up and folder structure survives; names cannot be turned back without the secret.
    """
    *folders, name = path.split("/")
    stem, dot, ext = name.rpartition(".")
    if not stem:  # no extension (or a dot-file): the whole name is the stem
        stem, dot, ext = name, "", ""
    parts = [f if f in keep else pseudonym("dir", f, secret)[4:20] for f in folders]
    return "/".join([*parts, pseudonym("file", stem, secret) + dot + ext.lower()[:15]])


def _opaque_problems(
    entries: list[dict[str, Any]], paths: list[str], secret: bytes, keep: Collection[str]
) -> list[dict[str, Any]]:
    """Notes and dropped duplicates of a ready version, with member paths made opaque."""
    longest_first = sorted(set(paths), key=len, reverse=True)
    out = []
    for entry in entries:
        cleaned = {}
        for key, value in entry.items():
            if isinstance(value, str):
                for path in longest_first:
                    value = value.replace(path, opaque_path(path, secret, keep))
            cleaned[key] = value
        out.append(cleaned)
    return out


def _drop_upload(sessions: sessionmaker[Session], store: BlobStore, version_id: uuid.UUID) -> None:
    """Delete the raw upload once its version is final: only de-identified blobs remain.

    The zip holds the members as sent (names, ids, un-de-identified DICOM). A version that is
    ready or failed never reads it again (a redelivered task stops at the status check), so
    it goes now; a re-import means uploading again. Blobs are content-addressed, so another
    version still importing the same bytes keeps it (that import deletes it when it ends).
    """
    with sessions() as session:
        key = session.scalar(
            select(DatasetVersion.upload_key).where(DatasetVersion.id == version_id)
        )
        busy = session.scalar(
            select(DatasetVersion.id)
            .where(
                DatasetVersion.upload_key == key,
                DatasetVersion.status == DatasetStatus.IMPORTING,
                DatasetVersion.id != version_id,
            )
            .limit(1)
        )
    if key and busy is None:
        store.path(key).unlink(missing_ok=True)


def _read_mask(
    archive: SafeArchive,
    path: str,
    mask_path: str,
    record: rec.Record,
    parsed: Any,
    store: BlobStore,
    settings: Settings,
    problems: list[dict[str, str]],
) -> seg_masks.MaskInfo | None:
    """Check an image's mask and store it normalised (8-bit PNG of class ids)."""
    labels = seg_masks.read_mask(
        archive.read(mask_path),
        path=path,
        mask_path=mask_path,
        width=record.width,
        height=record.height,
        declared=parsed.labels if parsed.labels_declared else None,
        max_pixels=settings.max_image_pixels,
        problems=problems,
    )
    if labels is None:
        return None
    key, _ = store.put(seg_masks.encode_png(labels), prefix="masks", suffix=".png")
    return seg_masks.MaskInfo(key, seg_masks.pixel_counts(labels), int(labels.size))


def _stratum(r: rec.Record, counts: dict[str, int]) -> str:
    """Split strata: the label; a detection image's rarest class; a mask's rarest class."""
    if r.label is not None:
        return r.label
    if r.mask is not None:
        present = [f"class {v}" for v, n in r.mask.pixels.items() if v and n]
        return min(present, key=lambda s: (counts.get(s, 0), s)) if present else "(empty mask)"
    labels = {b["label"] for b in r.boxes or []}
    return min(labels, key=lambda s: (counts[s], s)) if labels else "(no objects)"


def _split(
    records: list[rec.Record], spec: dict[str, Any], parsed: Any, problems: list[dict[str, str]]
) -> list[str]:
    presplit = [r.split for r in records]
    if any(presplit):
        missing = [r.path for r in records if not r.split]
        problems.extend(
            {"file": p, "problem": "not in any train/validation/test list"} for p in missing
        )
        leaks = splits.groups_across_splits(
            [r.group for r in records], [r.split or "" for r in records]
        )
        for group, where in sorted(leaks.items()):
            problems.append(
                {"file": f"group {group}", "problem": f"in several splits: {sorted(where)}"}
            )
        spec["presplit"] = True
        return [r.split or "" for r in records]
    ratios = splits.normalize_ratios(spec.get("ratios") or parsed.ratios)
    spec["ratios"], spec["presplit"], spec["stratified"] = ratios, False, True
    counts: dict[str, int] = {}
    for r in records:
        for b in r.boxes or []:
            counts[b["label"]] = counts.get(b["label"], 0) + 1
        for v, n in (r.mask.pixels if r.mask else {}).items():
            if v and n:
                counts[f"class {v}"] = counts.get(f"class {v}", 0) + 1
    items = [splits.SplitItem(_stratum(r, counts), r.group) for r in records]
    return splits.assign_splits(items, ratios, int(spec.get("seed", 0)))


def _build(
    archive: SafeArchive,
    version: DatasetVersion,
    task: Task,
    store: BlobStore,
    settings: Settings,
    progress: _Progress,
) -> tuple[list[rec.Record], list[str], dict[str, Any], list[str], dict[str, Any]]:
    spec = dict(version.split_spec)
    parsed = PARSERS[SourceFormat(version.source_format)](archive)
    problems = list(parsed.problems)
    if parsed.task != task:
        problems.append(
            {"file": "(archive)", "problem": f"holds a {parsed.task} dataset, not {task}"}
        )
    if problems:
        raise _Failed(problems)
    records = _read_all(archive, parsed, store, settings, progress, problems)
    records, dropped = rec.drop_duplicates(
        records, drop=spec.get("on_duplicate") == "drop", problems=problems
    )
    if task == Task.SEGMENTATION:
        labels = seg_masks.finish(parsed, [r.mask for r in records], problems)
    else:
        rec.check_labels(records, parsed, problems)
        labels = parsed.labels
    spec["group_by"] = rec.resolve_groups(
        records,
        spec.get("group_by") or "auto",
        spec.get("group_pattern") or parsed.group_pattern,
        problems,
        secret=settings.uid_salt(),
    )
    progress("splitting", len(records), len(records), force=True)
    assigned = _split(records, spec, parsed, problems) if records else []
    if problems:
        raise _Failed(problems)
    stats = rec.compute_stats(records, assigned, task, labels)
    paths = [e.path for e in parsed.entries]
    secret = settings.uid_salt()
    notes, dropped = parsed.notes[:MAX_STORED_PROBLEMS], dropped[:MAX_STORED_PROBLEMS]
    stats["notes"] = _opaque_problems(notes, paths, secret, labels)
    stats["dropped_duplicates"] = _opaque_problems(dropped, paths, secret, labels)
    return records, assigned, spec, labels, stats


class _Failed(Exception):
    def __init__(self, problems: list[dict[str, str]]) -> None:
        super().__init__(f"{len(problems)} problems")
        self.problems = problems


def _write(
    sessions: sessionmaker[Session],
    version_id: uuid.UUID,
    records: list[rec.Record],
    assigned: list[str],
    spec: dict[str, Any],
    labels: list[str],
    stats: dict[str, Any],
    *,
    secret: bytes,
) -> None:
    rows = [
        {
            "dataset_version_id": version_id,
            "split": split,
            "path": opaque_path(r.path, secret, labels),
            "storage_key": r.storage_key,
            "sha256": r.sha256,
            "format": r.format,
            "width": r.width,
            "height": r.height,
            "label": r.label,
            "boxes": r.boxes,
            "mask_key": r.mask.key if r.mask else None,
            "group_id": r.group[:128] if r.group else None,
            "burned_in_annotation": r.extra.get(BURNED_IN) == "YES",
        }
        for r, split in zip(records, assigned, strict=True)
    ]
    with sessions() as session:
        version = session.get(DatasetVersion, version_id, with_for_update=True)
        if version is None or version.status != DatasetStatus.IMPORTING:
            return
        for start in range(0, len(rows), 1000):
            session.execute(insert(DatasetItem), rows[start : start + 1000])
        version.status, version.finished_at = DatasetStatus.READY, utcnow()
        version.lease_expires_at = None
        version.split_spec, version.labels, version.stats = spec, labels, stats
        version.errors = []
        version.progress = {"phase": "done", "done": len(rows), "total": len(rows)}
        session.commit()


def _claim(
    sessions: sessionmaker[Session], version_id: uuid.UUID, worker: str, settings: Settings
) -> tuple[DatasetVersion, Task] | None:
    """Lease the version (shared.leases); None when finished, held elsewhere or exhausted."""
    with sessions() as session:
        version = session.scalar(
            leases.claim_statement(DatasetVersion, version_id, worker, settings.job_lease_seconds)
        )
        session.commit()
        if version is None:
            log.info("dataset version %s is not importing or held elsewhere", version_id)
            return None
        if version.attempts > settings.max_attempts:
            log.warning("import of %s claimed %d times; failing it", version_id, version.attempts)
            job_state.fail_one(
                session, DatasetVersion, version_id, AttemptsExceeded(settings.max_attempts)
            )
            session.commit()
            return None
        name = session.scalar(select(Dataset.task).where(Dataset.id == version.dataset_id))
        assert name is not None  # a version's dataset exists (foreign key)
        session.expunge(version)
    return version, Task(name)


def run_import(
    version_id: uuid.UUID,
    *,
    sessions: sessionmaker[Session],
    store: BlobStore,
    settings: Settings,
    worker: str = "importer",
) -> None:
    """Import a dataset version uploaded by the API; idempotent under redelivery.

    The import holds a lease like a job (renewed from a thread while it runs): a second
    delivery while a live worker imports stops at once; one after that worker died takes
    over, and the API's reconciler re-sends an import whose message was lost.

    Args:
        version_id: a DatasetVersion in status `importing`.
        sessions: sync sessions on the platform database.
        store: the blob store holding the upload; images are stored there too.
        settings: limits (zip, pixels), lease length and attempts.
        worker: the claiming worker node (a redelivery on the same node takes over).
    """
    claimed = _claim(sessions, version_id, worker, settings)
    if claimed is None:
        return
    version, task = claimed
    with leases.kept_alive(
        sessions, DatasetVersion, version_id, settings.job_lease_seconds, worker
    ):
        _import(version, task, sessions=sessions, store=store, settings=settings)


def _import(
    version: DatasetVersion,
    task: Task,
    *,
    sessions: sessionmaker[Session],
    store: BlobStore,
    settings: Settings,
) -> None:
    version_id = version.id
    progress = _Progress(sessions, version_id)
    progress("checking", 0, 0, force=True)
    try:
        with store.path(version.upload_key).open("rb") as fh:
            with open_archive(fh, ZipLimits.from_settings(settings)) as archive:
                built = _build(archive, version, task, store, settings, progress)
    except _Failed as failed:
        log.info("dataset import failed validation", extra={"problems": len(failed.problems)})
        _fail(sessions, version_id, _invalid(failed.problems), failed.problems)
        _drop_upload(sessions, store, version_id)
        return
    except AppError as exc:
        _fail(sessions, version_id, exc, [{"file": "(archive)", "problem": exc.detail}])
        _drop_upload(sessions, store, version_id)
        return
    progress("writing", len(built[0]), len(built[0]), force=True)
    _write(sessions, version_id, *built, secret=settings.uid_salt())
    _drop_upload(sessions, store, version_id)
