"""ORM models: the platform's source of truth.

Redis only carries work; every job, per-image result and model version lives here.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    FetchedValue,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    Uuid,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column, relationship

from shared.db.base import Base, CreatedAt, UUIDPrimaryKey, utcnow


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class ImageStatus(StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class Priority(StrEnum):
    STAT = "stat"
    ROUTINE = "routine"


class DatasetStatus(StrEnum):
    IMPORTING = "importing"
    READY = "ready"
    FAILED = "failed"


class Split(StrEnum):
    TRAIN = "train"
    VALIDATION = "validation"
    TEST = "test"


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


def _in(values: type[StrEnum]) -> str:
    return ", ".join(f"'{v.value}'" for v in values)


DEFAULT_TENANT_ID = uuid.UUID("00000000-0000-4000-8000-000000000001")


class Tenant(UUIDPrimaryKey, CreatedAt, Base):
    """A hospital, department or project: the unit of data isolation."""

    __tablename__ = "tenant"
    __table_args__ = (
        CheckConstraint("retention_days IS NULL OR retention_days >= 1", name="retention_days"),
    )

    name: Mapped[str] = mapped_column(String(100), unique=True)
    # Final jobs older than this many days are deleted by housekeeping; None: kept.
    retention_days: Mapped[int | None] = mapped_column(Integer)
    # Inference jobs queued or running at once, and stat ones (shared.job_quota); None: the
    # settings' defaults, 0: unlimited. Set by a platform operator.
    max_active_jobs: Mapped[int | None] = mapped_column(Integer)
    max_active_stat_jobs: Mapped[int | None] = mapped_column(Integer)


class ApiKey(UUIDPrimaryKey, CreatedAt, Base):
    """An API key, stored only as its SHA-256 (see shared.auth)."""

    __tablename__ = "api_key"

    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenant.id"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    prefix: Mapped[str] = mapped_column(String(16), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64))
    scopes: Mapped[list[str]] = mapped_column(JSONB)
    # Requests per minute for this key; None: the platform default (MEDIMG_RATE_LIMIT_PER_MINUTE).
    rate_limit_per_minute: Mapped[int | None] = mapped_column(Integer)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # None: never

    tenant: Mapped[Tenant] = relationship()


class Model(UUIDPrimaryKey, CreatedAt, Base):
    __tablename__ = "model"

    name: Mapped[str] = mapped_column(String(100), unique=True)
    # None: a shared model every tenant may use (the bundled ones); else private to a tenant.
    tenant_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("tenant.id"))
    task: Mapped[str] = mapped_column(String(32))
    description: Mapped[str] = mapped_column(Text, default="")
    # Deprecated: still served and readable, flagged in listings and job results.
    deprecated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Deleted: hidden and no longer servable; rows stay so old results keep their model.
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    deprecation_reason: Mapped[str | None] = mapped_column(Text)

    versions: Mapped[list[ModelVersion]] = relationship(
        back_populates="model", order_by="ModelVersion.version"
    )


class ModelVersion(UUIDPrimaryKey, CreatedAt, Base):
    """An immutable, loadable model: architecture + weights blob + model card."""

    __tablename__ = "model_version"
    __table_args__ = (UniqueConstraint("model_id", "version"),)

    model_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("model.id"))
    version: Mapped[int] = mapped_column(Integer)
    architecture: Mapped[str] = mapped_column(String(64))
    labels: Mapped[list[str]] = mapped_column(JSONB)
    input_spec: Mapped[dict[str, Any]] = mapped_column(JSONB)
    card: Mapped[dict[str, Any]] = mapped_column(JSONB)
    weights_key: Mapped[str] = mapped_column(String(255))
    weights_sha256: Mapped[str] = mapped_column(String(64))
    queue: Mapped[str] = mapped_column(String(16), default="cpu")
    # "single" (one network) or "ensemble" (members voting; weights_key then names no blob).
    kind: Mapped[str] = mapped_column(String(16), default="single", server_default="single")
    # Ensemble members pinned to exact versions: [{"version_id", "ref", "weight"}].
    members: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONB)
    deprecated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    deprecation_reason: Mapped[str | None] = mapped_column(Text)
    # Accuracy-guarded runtime plans per hardware class (shared.runtime_plans.HardwarePlans).
    runtime_plans: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    # Validation images kept with the version for the guard (npz: images, labels).
    calibration_key: Mapped[str | None] = mapped_column(String(255))

    model: Mapped[Model] = relationship(back_populates="versions")

    @property
    def ref(self) -> str:
        return f"{self.model.name}:{self.version}"


class ModelAlias(UUIDPrimaryKey, CreatedAt, Base):
    """A movable name (`production`, `staging`, ...) for one version of a model."""

    __tablename__ = "model_alias"
    __table_args__ = (UniqueConstraint("model_id", "alias"),)

    model_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("model.id"))
    alias: Mapped[str] = mapped_column(String(64))
    model_version_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("model_version.id"))
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), default=utcnow
    )

    model_version: Mapped[ModelVersion] = relationship()


class Job(UUIDPrimaryKey, CreatedAt, Base):
    __tablename__ = "job"
    __table_args__ = (
        CheckConstraint(f"status IN ({_in(JobStatus)})", name="status"),
        CheckConstraint(f"priority IN ({_in(Priority)})", name="priority"),
        Index("ix_job_created_at_id", "created_at", "id"),
        Index("ix_job_tenant_id_created_at", "tenant_id", "created_at"),
        Index("ix_job_status_created_at", "status", "created_at"),
        # Tenant quotas count only active jobs (shared.job_quota): a small partial index.
        Index(
            "ix_job_active_tenant_priority",
            "tenant_id",
            "priority",
            postgresql_where=text("status IN ('queued', 'running')"),
        ),
    )

    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenant.id"))
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.QUEUED)
    model_name: Mapped[str] = mapped_column(String(100), index=True)
    model_version_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("model_version.id"))
    params: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    priority: Mapped[str] = mapped_column(String(16), default=Priority.ROUTINE)
    queue: Mapped[str] = mapped_column(String(16))
    image_count: Mapped[int] = mapped_column(Integer)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # Celery node (e.g. cpu@host-3) that last claimed the job: which machine ran what.
    worker: Mapped[str | None] = mapped_column(String(255))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    error_type: Mapped[str | None] = mapped_column(String(64))
    error_detail: Mapped[str | None] = mapped_column(Text)
    # The worker that claimed the job holds it until then; an expired lease means it died.
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    callback_url: Mapped[str | None] = mapped_column(Text)

    model_version: Mapped[ModelVersion] = relationship()
    images: Mapped[list[JobImage]] = relationship(back_populates="job", order_by="JobImage.index")


class JobImage(UUIDPrimaryKey, Base):
    """One input image of a job and, once processed, its result.

    (job_id, index) is unique, so however often a task runs, an image has one result.
    """

    __tablename__ = "job_image"
    __table_args__ = (
        UniqueConstraint("job_id", "index"),
        CheckConstraint(f"status IN ({_in(ImageStatus)})", name="status"),
    )

    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("job.id", ondelete="CASCADE"))
    index: Mapped[int] = mapped_column(Integer)
    filename: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str | None] = mapped_column(String(100))
    format: Mapped[str] = mapped_column(String(16))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    storage_key: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16), default=ImageStatus.PENDING)
    output: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    error_type: Mapped[str | None] = mapped_column(String(64))
    error_detail: Mapped[str | None] = mapped_column(Text)
    latency_ms: Mapped[float | None] = mapped_column(Float)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # DICOM BurnedInAnnotation = YES: text (perhaps names) may remain in the pixels.
    burned_in_annotation: Mapped[bool] = mapped_column(Boolean, default=False)

    job: Mapped[Job] = relationship(back_populates="images")


class IdempotencyRecord(UUIDPrimaryKey, CreatedAt, Base):
    """The first response to an `Idempotency-Key`, replayed to retries of the same request.

    `owner` is the SHA-256 of the caller's Authorization header: keys are per API key.
    """

    __tablename__ = "idempotency_record"
    __table_args__ = (UniqueConstraint("owner", "key"), Index(None, "created_at"))

    owner: Mapped[str] = mapped_column(String(64))
    key: Mapped[str] = mapped_column(String(255))
    fingerprint: Mapped[str] = mapped_column(String(64))
    response_status: Mapped[int | None] = mapped_column(Integer)
    response_headers: Mapped[dict[str, str] | None] = mapped_column(JSONB)
    response_body: Mapped[bytes | None] = mapped_column(LargeBinary)
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Artifact(UUIDPrimaryKey, CreatedAt, Base):
    """A file produced by a job (heatmap, annotated image, training curves, ...).

    `owner_id` is an inference job or a training job id; the blob lives in the store.
    """

    __tablename__ = "artifact"
    __table_args__ = (UniqueConstraint("owner_id", "name"),)

    owner_kind: Mapped[str] = mapped_column(String(16))  # "job" | "training_job"
    owner_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenant.id"))
    name: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(100))
    storage_key: Mapped[str] = mapped_column(String(255))
    size_bytes: Mapped[int] = mapped_column(BigInteger)


class Dataset(UUIDPrimaryKey, CreatedAt, Base):
    __tablename__ = "dataset"
    __table_args__ = (UniqueConstraint("tenant_id", "name"),)

    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenant.id"))
    name: Mapped[str] = mapped_column(String(100))
    task: Mapped[str] = mapped_column(String(32))  # classification | detection | segmentation
    description: Mapped[str] = mapped_column(Text, default="")

    versions: Mapped[list[DatasetVersion]] = relationship(
        back_populates="dataset", order_by="DatasetVersion.version"
    )


class DatasetVersion(UUIDPrimaryKey, CreatedAt, Base):
    """An immutable snapshot: items, labels and a stored, seeded split."""

    __tablename__ = "dataset_version"
    __table_args__ = (
        UniqueConstraint("dataset_id", "version"),
        CheckConstraint(f"status IN ({_in(DatasetStatus)})", name="status"),
    )

    dataset_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("dataset.id"))
    version: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default=DatasetStatus.IMPORTING)
    source_format: Mapped[str] = mapped_column(String(32))  # folders, voc, coco, rsna, labelstudio
    upload_key: Mapped[str] = mapped_column(String(255))  # the uploaded archive in the store
    upload_sha256: Mapped[str] = mapped_column(String(64))
    labels: Mapped[list[str]] = mapped_column(JSONB, default=list)
    # How the split was made: {"seed", "ratios", "group_by", "stratified"}.
    split_spec: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    # Counts per class and split, image-size statistics, problems found on import.
    stats: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    progress: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    error_type: Mapped[str | None] = mapped_column(String(64))
    error_detail: Mapped[str | None] = mapped_column(Text)
    # Specific validation problems: [{"file", "problem"}].
    errors: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONB)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The import's lease (shared.leases), as on jobs: the reconciler re-sends a lost import.
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    worker: Mapped[str | None] = mapped_column(String(255))
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    dataset: Mapped[Dataset] = relationship(back_populates="versions")


class DatasetItem(UUIDPrimaryKey, Base):
    """One image of a dataset version with its label (classification) or boxes (detection)."""

    __tablename__ = "dataset_item"
    __table_args__ = (
        UniqueConstraint("dataset_version_id", "sha256"),
        CheckConstraint(f"split IN ({_in(Split)})", name="split"),
        Index(None, "dataset_version_id", "split"),
    )

    dataset_version_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("dataset_version.id", ondelete="CASCADE")
    )
    split: Mapped[str] = mapped_column(String(16))
    path: Mapped[str] = mapped_column(Text)  # path inside the upload, for error messages
    storage_key: Mapped[str] = mapped_column(String(255))
    sha256: Mapped[str] = mapped_column(String(64))
    format: Mapped[str] = mapped_column(String(16))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    label: Mapped[str | None] = mapped_column(String(100))
    # Detection: [{"label": str, "box": [x1, y1, x2, y2]}] in pixel coordinates.
    boxes: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONB)
    # Patient or study the image belongs to: no group spans two splits.
    group_id: Mapped[str | None] = mapped_column(String(128))
    # Segmentation: blob key of the label map (8-bit PNG, pixel = class id, 0 = background).
    mask_key: Mapped[str | None] = mapped_column(String(255))
    # DICOM BurnedInAnnotation = YES: text (perhaps names) may remain in the pixels.
    burned_in_annotation: Mapped[bool] = mapped_column(Boolean, default=False)


class TrainingJob(UUIDPrimaryKey, CreatedAt, Base):
    __tablename__ = "training_job"
    __table_args__ = (
        CheckConstraint(f"status IN ({_in(JobStatus)})", name="status"),
        Index(None, "tenant_id", "created_at"),
    )

    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenant.id"))
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.QUEUED)
    task: Mapped[str] = mapped_column(String(32))
    dataset_version_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("dataset_version.id"))
    architecture: Mapped[str] = mapped_column(String(64))
    # "imagenet", "random" or a model reference to continue from.
    start_from: Mapped[str] = mapped_column(String(160))
    params: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    # shared.schemas.training.RecipePublic: which values the caller set, which were derived.
    recipe: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    monitor: Mapped[str] = mapped_column(String(32))
    model_name: Mapped[str] = mapped_column(String(100))
    promote: Mapped[bool] = mapped_column(default=False)
    queue: Mapped[str] = mapped_column(String(16), default="train")
    # {"epoch", "epochs", "step", "steps", "best", "best_epoch"}
    progress: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    checkpoint_key: Mapped[str | None] = mapped_column(String(255))
    test_metrics: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    result_model_version_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("model_version.id")
    )
    promoted: Mapped[bool | None] = mapped_column()
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    worker: Mapped[str | None] = mapped_column(String(255))
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    callback_url: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    error_type: Mapped[str | None] = mapped_column(String(64))
    error_detail: Mapped[str | None] = mapped_column(Text)

    dataset_version: Mapped[DatasetVersion] = relationship()
    epochs: Mapped[list[TrainingEpoch]] = relationship(
        order_by="(TrainingEpoch.fold, TrainingEpoch.epoch)"
    )


class TrainingEpoch(UUIDPrimaryKey, CreatedAt, Base):
    """One finished epoch: losses, validation metrics, learning rate, time."""

    __tablename__ = "training_epoch"
    __table_args__ = (UniqueConstraint("training_job_id", "fold", "epoch"),)

    training_job_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("training_job.id", ondelete="CASCADE")
    )
    # Cross-validation fold (1-based); 0 for a job without folds.
    fold: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    epoch: Mapped[int] = mapped_column(Integer)
    train_loss: Mapped[float] = mapped_column(Float)
    val_loss: Mapped[float | None] = mapped_column(Float)
    val_metrics: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    lr: Mapped[float] = mapped_column(Float)
    seconds: Mapped[float] = mapped_column(Float)


class CallbackDelivery(UUIDPrimaryKey, CreatedAt, Base):
    """Outbox row for a job-completion callback; delivered by a loop outside the workers."""

    __tablename__ = "callback_delivery"
    __table_args__ = (
        CheckConstraint(f"status IN ({_in(DeliveryStatus)})", name="status"),
        Index(None, "status", "next_attempt_at"),
    )

    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenant.id"))
    owner_kind: Mapped[str] = mapped_column(String(16))  # "job" | "training_job"
    owner_id: Mapped[uuid.UUID] = mapped_column(Uuid, index=True)
    url: Mapped[str] = mapped_column(Text)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    status: Mapped[str] = mapped_column(String(16), default=DeliveryStatus.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), default=utcnow
    )
    last_error: Mapped[str | None] = mapped_column(Text)
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class AuditEvent(UUIDPrimaryKey, CreatedAt, Base):
    """Who (key, tenant) did what to which job, model or dataset. Append-only."""

    __tablename__ = "audit_event"
    __table_args__ = (Index(None, "tenant_id", "created_at"),)

    # No foreign keys: audit rows outlive the tenants and keys they name (PHI deletion).
    tenant_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    api_key_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    key_prefix: Mapped[str | None] = mapped_column(String(16))
    action: Mapped[str] = mapped_column(String(64))  # e.g. "job.create", "model.deprecate"
    resource_type: Mapped[str] = mapped_column(String(32))
    resource_id: Mapped[str | None] = mapped_column(String(160))
    request_id: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    # What the client sent as X-Request-ID; request_id is always the server's own.
    client_request_id: Mapped[str | None] = mapped_column(String(64))
    # Hash chain, set by the database's insert trigger (shared.audit_chain); never by Python.
    seq: Mapped[int] = mapped_column(BigInteger, unique=True, server_default=FetchedValue())
    prev_hash: Mapped[str | None] = mapped_column(String(64), server_default=FetchedValue())
    row_hash: Mapped[str] = mapped_column(String(64), server_default=FetchedValue())
