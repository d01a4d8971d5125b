"""ORM rows of the DICOM side: who may send, how studies are routed, where results go.

Kept apart from shared.db.models (the job core) so the PACS integration reads as one unit.
Result deliveries are not here: they are rows of the callback outbox
(`callback_delivery`, owner_kind ``dicom_result``), see shared.delivery.outbox.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from shared.db import models as _core  # noqa: F401  (tenant/job tables for the foreign keys)
from shared.db.base import Base, CreatedAt, UUIDPrimaryKey, utcnow


class StudySource(StrEnum):
    DIMSE = "dimse"  # pushed to the listener by C-STORE
    DICOMWEB = "dicomweb"  # pulled from a registered PACS by QIDO-RS + WADO-RS


class StudyStatus(StrEnum):
    PENDING = "pending"  # a pull waiting for the gateway
    PULLING = "pulling"
    ROUTED = "routed"  # a job was created
    UNMATCHED = "unmatched"  # no rule matched: recorded, nothing processed
    FAILED = "failed"


class DestinationKind(StrEnum):
    STOW = "stow"  # DICOMweb STOW-RS to a registered PACS endpoint
    CSTORE = "cstore"  # DIMSE C-STORE to an AE
    FHIR = "fhir"  # FHIR R4 transaction Bundle to a FHIR server (shared.fhir_results)


class PacsAuth(StrEnum):
    NONE = "none"
    BASIC = "basic"
    BEARER = "bearer"


def _in(values: type[StrEnum]) -> str:
    return ", ".join(f"'{v.value}'" for v in values)


class DicomCallingAe(UUIDPrimaryKey, CreatedAt, Base):
    """A calling AE title allowed to send to the listener; it names the tenant of its studies."""

    __tablename__ = "dicom_calling_ae"

    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenant.id"), index=True)
    # Globally unique: the listener finds the tenant of an association from it.
    ae_title: Mapped[str] = mapped_column(String(16), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")


class PacsEndpoint(UUIDPrimaryKey, CreatedAt, Base):
    """A DICOMweb server of a tenant: pulled from (QIDO/WADO) and stored to (STOW)."""

    __tablename__ = "pacs_endpoint"
    __table_args__ = (
        UniqueConstraint("tenant_id", "name"),
        CheckConstraint(f"auth IN ({_in(PacsAuth)})", name="auth"),
    )

    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenant.id"))
    name: Mapped[str] = mapped_column(String(64))
    base_url: Mapped[str] = mapped_column(Text)
    auth: Mapped[str] = mapped_column(String(16), default=PacsAuth.NONE)
    username: Mapped[str | None] = mapped_column(String(255))
    # Password or bearer token: used by the gateway, never returned by the API.
    secret: Mapped[str | None] = mapped_column(Text)
    verify_tls: Mapped[bool] = mapped_column(Boolean, default=True)


class DicomDestination(UUIDPrimaryKey, CreatedAt, Base):
    """Where a tenant's results go: a PACS endpoint by STOW-RS, an AE by C-STORE, or a FHIR
    server (the job's FHIR Bundle posted as a transaction)."""

    __tablename__ = "dicom_destination"
    __table_args__ = (
        UniqueConstraint("tenant_id", "name"),
        CheckConstraint(f"kind IN ({_in(DestinationKind)})", name="kind"),
        CheckConstraint(f"auth IS NULL OR auth IN ({_in(PacsAuth)})", name="auth"),
    )

    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenant.id"))
    name: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))
    pacs_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("pacs_endpoint.id"))
    ae_title: Mapped[str | None] = mapped_column(String(16))
    host: Mapped[str | None] = mapped_column(String(255))
    port: Mapped[int | None] = mapped_column(Integer)
    # kind `fhir`: the server's base URL, credentials (never returned) and TLS verification.
    base_url: Mapped[str | None] = mapped_column(Text)
    auth: Mapped[str | None] = mapped_column(String(16))
    username: Mapped[str | None] = mapped_column(String(255))
    secret: Mapped[str | None] = mapped_column(Text)
    verify_tls: Mapped[bool] = mapped_column(Boolean, default=True, server_default="true")


class RoutingRule(UUIDPrimaryKey, CreatedAt, Base):
    """Match on a study's header attributes -> model, job parameters and destinations.

    Rules of a tenant are tried in `position` order; the first that matches a series wins.
    `match` keys: modality, body_part, sop_class_uid, calling_ae (lists, any of, exact,
    case-insensitive) and study_description, series_description (bounded RE2 patterns).
    """

    __tablename__ = "dicom_routing_rule"
    __table_args__ = (UniqueConstraint("tenant_id", "name"), Index(None, "tenant_id", "position"))

    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenant.id"))
    name: Mapped[str] = mapped_column(String(64))
    position: Mapped[int] = mapped_column(Integer, default=100)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    match: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    model_ref: Mapped[str] = mapped_column(String(160))
    # JobParams (threshold or target_sensitivity, detection options).
    params: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    priority: Mapped[str] = mapped_column(String(16), default="routine")
    destination_ids: Mapped[list[str]] = mapped_column(JSONB, default=list)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), default=utcnow
    )


class DicomStudy(UUIDPrimaryKey, CreatedAt, Base):
    """A study that arrived (C-STORE) or was requested (pull), and what became of it."""

    __tablename__ = "dicom_study"
    __table_args__ = (
        CheckConstraint(f"status IN ({_in(StudyStatus)})", name="status"),
        CheckConstraint(f"source IN ({_in(StudySource)})", name="source"),
        Index(None, "tenant_id", "status", "created_at"),
        Index(None, "status", "created_at"),
    )

    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenant.id"))
    source: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    calling_ae: Mapped[str | None] = mapped_column(String(16))
    pacs_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("pacs_endpoint.id"))
    # The study as the PACS knows it (a pull needs it); never the de-identified one.
    study_instance_uid: Mapped[str] = mapped_column(String(64))
    # Pull requests: series to take (None: all) and an explicit model that bypasses the rules.
    requested: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    # Modality, body part, SOP classes, descriptions, counts: why it routed as it did.
    summary: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    rule_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("dicom_routing_rule.id"))
    job_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("job.id"))
    reason: Mapped[str | None] = mapped_column(Text)
    error_type: Mapped[str | None] = mapped_column(String(64))
    # Original UIDs and patient module of the study, so results sent back land in the
    # hospital's study (re-identified); PHI kept server-side only, removed by retention.
    reidentify: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), default=utcnow
    )
