"""Feedback becomes data: immutable dataset versions built from reviewed job images.

Each generation writes two new versions (nothing is ever edited):

- ``<model>-feedback``: every reviewed image of the model, with its current (newest)
  review, from the job's stored (already de-identified) input. Images of locked-test
  patients (or the locked images themselves) go to its test split or are left out.
- ``<model>-learning``: what the challenger trains on. Train/validation are the original
  training set's (policy ``append``; a correction replaces the same image's label) plus the
  feedback's; test is exactly the locked test set, so the trainer's own test report is on it.

Splits follow patient groups: a feedback image of a patient already in the original set
takes that patient's split; a new patient is placed by a keyed hash of its group, so no
patient is in two splits. Images without a patient id are grouped by their job.
"""

from __future__ import annotations

import hashlib
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.db.base import utcnow
from shared.db.learning_models import ModelLine, ResultFeedback
from shared.db.models import (
    Dataset,
    DatasetItem,
    DatasetStatus,
    DatasetVersion,
    JobImage,
    Model,
    Split,
)
from shared.imaging.decode import decode_image
from shared.learning.lines import LockedSet, locked_set
from shared.schemas.learning import RetrainingPolicy
from shared.storage import BlobStore

VALIDATION_SHARE = 0.2
_ITEM_COLUMNS = (
    "split", "path", "storage_key", "sha256", "format", "width", "height", "label", "boxes",
    "group_id", "mask_key", "burned_in_annotation",
)  # fmt: skip


@dataclass
class Built:
    """The versions a generation trains on, and what went into them."""

    training_ref: str
    training_version_id: uuid.UUID
    feedback_version_id: uuid.UUID | None
    watermark: datetime | None
    summary: dict[str, Any] = field(default_factory=dict)


def _current_feedback(session: Session, line: ModelLine) -> list[tuple[ResultFeedback, JobImage]]:
    """The newest review of every reviewed image of the line's model."""
    rows = session.execute(
        select(ResultFeedback, JobImage)
        .join(JobImage, JobImage.id == ResultFeedback.job_image_id)
        .where(ResultFeedback.model_id == line.model_id, ResultFeedback.tenant_id == line.tenant_id)
        .order_by(ResultFeedback.job_image_id, ResultFeedback.revision.desc())
        .distinct(ResultFeedback.job_image_id)
    ).all()
    return [(fb, image) for fb, image in rows]


def _split_of(group: str, known: dict[str, str]) -> str:
    if group in known:
        return known[group]
    fraction = int(hashlib.sha256(group.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return Split.VALIDATION if fraction < VALIDATION_SHARE else Split.TRAIN


def _new_version(
    session: Session, line: ModelLine, model: Model, name: str, spec: dict[str, Any]
) -> DatasetVersion:
    dataset = session.scalar(
        select(Dataset)
        .where(Dataset.tenant_id == line.tenant_id, Dataset.name == name)
        .with_for_update()
    )
    if dataset is None:
        dataset = Dataset(
            tenant_id=line.tenant_id,
            name=name,
            task=model.task,
            description=f"Built by the learning loop of model {model.name!r} (issue 17)",
        )
        session.add(dataset)
        session.flush()
    number = 1 + max((v.version for v in dataset.versions), default=0)
    version = DatasetVersion(
        dataset=dataset,
        version=number,
        status=DatasetStatus.READY,
        source_format="feedback" if name.endswith("-feedback") else "learning",
        upload_key="",
        upload_sha256="",
        labels=list(model.versions[-1].labels),
        split_spec=spec,
        finished_at=utcnow(),
    )
    session.add(version)
    session.flush()
    return version


def _add_items(session: Session, version: DatasetVersion, items: list[dict[str, Any]]) -> None:
    """Add one row per image (the first occurrence wins: feedback is listed first)."""
    unique = list({i["sha256"]: i for i in reversed(items)}.values())
    counts: dict[str, Counter[str]] = {s.value: Counter() for s in Split}
    for item in unique:
        session.add(DatasetItem(dataset_version_id=version.id, **item))
        labels = [item["label"]] if item["label"] else [b["label"] for b in item["boxes"] or []]
        counts[item["split"]].update(labels)
    version.stats = {
        "counts": {s: dict(c) for s, c in counts.items()},
        "images_per_split": {s.value: sum(i["split"] == s for i in unique) for s in Split},
        "groups": len({i["group_id"] for i in unique if i["group_id"]}),
    }
    version.upload_sha256 = hashlib.sha256(
        "\n".join(sorted(f"{i['split']}:{i['sha256']}:{i['label']}" for i in unique)).encode()
    ).hexdigest()
    session.flush()


def _feedback_items(
    session: Session,
    store: BlobStore,
    line: ModelLine,
    locked: LockedSet,
    known: dict[str, str],
    max_pixels: int,
) -> tuple[list[dict[str, Any]], dict[str, int], datetime | None]:
    policy = RetrainingPolicy.model_validate(line.policy)
    items, tally, watermark = [], Counter[str](), None
    for fb, image in _current_feedback(session, line):
        watermark = max(watermark or fb.created_at, fb.created_at)
        group = fb.group_id or f"job-{image.job_id}"
        if image.sha256 in locked.shas or group in locked.groups:
            tally["locked_patient_items"] += 1
            if policy.locked_patients == "exclude":
                continue
            split = Split.TEST.value
        else:
            split = _split_of(group, known)
        decoded = decode_image(store.get(image.storage_key), max_pixels=max_pixels)
        items.append(
            {
                "split": split,
                "path": f"job/{image.job_id}/{image.index}",
                "storage_key": image.storage_key,
                "sha256": image.sha256,
                "format": image.format,
                "width": decoded.original_width,
                "height": decoded.original_height,
                "label": fb.label,
                "boxes": fb.boxes,
                "group_id": group[:128],
                "mask_key": None,
                "burned_in_annotation": image.burned_in_annotation,
            }
        )
        tally[f"feedback_{split}"] += 1
        tally["corrections" if fb.kind == "correct" else "confirmations"] += 1
    return items, dict(tally), watermark


def _rows(session: Session, version_id: uuid.UUID, splits: tuple[str, ...]) -> list[dict[str, Any]]:
    rows = session.scalars(
        select(DatasetItem)
        .where(DatasetItem.dataset_version_id == version_id, DatasetItem.split.in_(splits))
        .order_by(DatasetItem.sha256)
    ).all()
    return [{c: getattr(r, c) for c in _ITEM_COLUMNS} for r in rows]


def build(
    session: Session, store: BlobStore, line: ModelLine, model: Model, *, max_pixels: int
) -> Built:
    """Write the feedback and training dataset versions of a new generation (not committed)."""
    policy = RetrainingPolicy.model_validate(line.policy)
    locked = locked_set(session, line)
    base = _rows(session, line.base_dataset_version_id, (Split.TRAIN, Split.VALIDATION))
    known = {r["group_id"]: r["split"] for r in base if r["group_id"]}
    feedback, tally, watermark = _feedback_items(session, store, line, locked, known, max_pixels)
    spec = {
        "source": "learning loop",
        "group_by": "patient pseudonym from the review, else the job",
        "validation_share": VALIDATION_SHARE,
        "locked_patients": policy.locked_patients,
        "merge": policy.merge,
    }
    feedback_version = None
    if feedback:
        feedback_version = _new_version(session, line, model, f"{model.name[:90]}-feedback", spec)
        _add_items(session, feedback_version, feedback)
        line.feedback_dataset_id = feedback_version.dataset_id
    trainable = [i for i in feedback if i["split"] != Split.TEST]
    corrected = {i["sha256"] for i in trainable}
    kept_base = [r for r in base if r["sha256"] not in corrected and r["sha256"] not in locked.shas]
    merged = trainable + (kept_base if policy.merge == "append" else [])
    test = _rows(session, line.locked_dataset_version_id, (Split.TEST,))
    training = _new_version(session, line, model, f"{model.name[:90]}-learning", spec)
    _add_items(session, training, merged + test)
    never = {r["sha256"] for r in merged} & locked.shas
    never_groups = {r["group_id"] for r in merged if r["group_id"]} & locked.groups
    assert not never and not never_groups, "a locked-test patient reached the training data"
    summary = {
        **tally,
        "feedback_images": len(feedback),
        "base_images": len(kept_base) if policy.merge == "append" else 0,
        "train_images": sum(r["split"] == Split.TRAIN for r in merged),
        "validation_images": sum(r["split"] == Split.VALIDATION for r in merged),
        "locked_test_images": len(test),
        "locked_test_sha256": locked.fingerprint,
    }
    return Built(
        training_ref=f"{training.dataset.name}:{training.version}",
        training_version_id=training.id,
        feedback_version_id=None if feedback_version is None else feedback_version.id,
        watermark=watermark,
        summary=summary,
    )
