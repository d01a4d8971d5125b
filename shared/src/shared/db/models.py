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
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column, relationship

from shared.db.base import Base, CreatedAt, UUIDPrimaryKey


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


def _in(values: type[StrEnum]) -> str:
    return ", ".join(f"'{v.value}'" for v in values)


DEFAULT_TENANT_ID = uuid.UUID("00000000-0000-4000-8000-000000000001")


class Tenant(UUIDPrimaryKey, CreatedAt, Base):
    """A hospital, department or project: the unit of data isolation."""

    __tablename__ = "tenant"

    name: Mapped[str] = mapped_column(String(100), unique=True)


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

    tenant: Mapped[Tenant] = relationship()


class Model(UUIDPrimaryKey, CreatedAt, Base):
    __tablename__ = "model"

    name: Mapped[str] = mapped_column(String(100), unique=True)
    # None: a shared model every tenant may use (the bundled ones); else private to a tenant.
    tenant_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("tenant.id"))
    task: Mapped[str] = mapped_column(String(32))
    description: Mapped[str] = mapped_column(Text, default="")

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

    model: Mapped[Model] = relationship(back_populates="versions")

    @property
    def ref(self) -> str:
        return f"{self.model.name}:{self.version}"


class Job(UUIDPrimaryKey, CreatedAt, Base):
    __tablename__ = "job"
    __table_args__ = (
        CheckConstraint(f"status IN ({_in(JobStatus)})", name="status"),
        CheckConstraint(f"priority IN ({_in(Priority)})", name="priority"),
        Index("ix_job_created_at_id", "created_at", "id"),
        Index("ix_job_tenant_id_created_at", "tenant_id", "created_at"),
        Index("ix_job_status_created_at", "status", "created_at"),
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

    job: Mapped[Job] = relationship(back_populates="images")


class IdempotencyRecord(UUIDPrimaryKey, CreatedAt, Base):
    """The first response to an `Idempotency-Key`, replayed to retries of the same request.

    `owner` is the SHA-256 of the caller's Authorization header: keys are per API key.
    """

    __tablename__ = "idempotency_record"
    __table_args__ = (UniqueConstraint("owner", "key"),)

    owner: Mapped[str] = mapped_column(String(64))
    key: Mapped[str] = mapped_column(String(255))
    fingerprint: Mapped[str] = mapped_column(String(64))
    response_status: Mapped[int | None] = mapped_column(Integer)
    response_headers: Mapped[dict[str, str] | None] = mapped_column(JSONB)
    response_body: Mapped[bytes | None] = mapped_column(LargeBinary)
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
