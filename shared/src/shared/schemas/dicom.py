"""Public schemas of the DICOM integration: calling AEs, PACS, destinations, rules, studies."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

# PS3.5 AE: up to 16 printable ASCII characters, not all spaces, no backslash (the VM separator).
AE_TITLE_PATTERN = r"^[ -\[\]-~]*[!-\[\]-~][ -\[\]-~]*$"
AeTitle = Field(min_length=1, max_length=16, pattern=AE_TITLE_PATTERN)


class CallingAeCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ae_title: str = AeTitle
    description: str = ""


class CallingAePublic(BaseModel):
    id: uuid.UUID
    ae_title: str
    description: str
    created_at: datetime


class PacsCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=64)
    base_url: str = Field(description="DICOMweb root, e.g. https://pacs.local/dicom-web")
    auth: Literal["none", "basic", "bearer"] = "none"
    username: str | None = None
    secret: str | None = Field(None, description="Password or token; stored, never returned")
    verify_tls: bool = True


class PacsPublic(BaseModel):
    id: uuid.UUID
    name: str
    base_url: str
    auth: str
    username: str | None
    has_secret: bool
    verify_tls: bool
    created_at: datetime


class DestinationCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=64)
    kind: Literal["stow", "cstore", "fhir"]
    pacs: str | None = Field(None, description="stow: name of a registered PACS endpoint")
    ae_title: str | None = Field(None, min_length=1, max_length=16, pattern=AE_TITLE_PATTERN)
    host: str | None = Field(None, max_length=255)
    port: int | None = Field(None, ge=1, le=65535)
    base_url: str | None = Field(
        None,
        max_length=2048,
        description="fhir: the FHIR R4 server's base URL (host in MEDIMG_FHIR_ALLOWED_HOSTS)",
    )
    auth: Literal["none", "basic", "bearer"] = Field("none", description="fhir: credentials")
    username: str | None = Field(None, max_length=255)
    secret: str | None = Field(None, description="fhir: password or token; never returned")
    verify_tls: bool = Field(True, description="fhir: verify the server's TLS certificate")


class DestinationPublic(BaseModel):
    id: uuid.UUID
    name: str
    kind: str
    pacs_id: uuid.UUID | None
    ae_title: str | None
    host: str | None
    port: int | None
    base_url: str | None = None
    auth: str | None = None
    has_secret: bool = False
    verify_tls: bool = True
    created_at: datetime


class RuleCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=64)
    position: int = 100
    enabled: bool = True
    match: dict[str, Any] = Field(
        default_factory=dict,
        description="modality, body_part, sop_class_uid, calling_ae (lists); "
        "study_description, series_description (RE2 patterns, case-insensitive)",
    )
    model: str = Field(description="`name`, `name:version` or `name@alias`")
    params: dict[str, Any] = Field(default_factory=dict, description="job parameters")
    priority: Literal["routine", "stat"] = "routine"
    destinations: list[str] = Field(default_factory=list, description="destination names")


class RulePublic(BaseModel):
    id: uuid.UUID
    name: str
    position: int
    enabled: bool
    match: dict[str, Any]
    model: str
    params: dict[str, Any]
    priority: str
    destinations: list[uuid.UUID]
    created_at: datetime


class PullCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    pacs: str = Field(description="name of a registered PACS endpoint")
    study_instance_uid: str = Field(min_length=1, max_length=64, pattern=r"^[0-9.]+$")
    series_instance_uids: list[str] | None = None
    model: str | None = Field(None, description="bypass the routing rules with this model")
    params: dict[str, Any] = Field(default_factory=dict)
    priority: Literal["routine", "stat"] = "routine"
    destinations: list[str] = Field(default_factory=list)


class StudyPublic(BaseModel):
    id: uuid.UUID
    source: str
    status: str
    calling_ae: str | None
    pacs_id: uuid.UUID | None
    study_instance_uid: str
    summary: dict[str, Any]
    rule_id: uuid.UUID | None
    job_id: uuid.UUID | None
    reason: str | None
    created_at: datetime
    updated_at: datetime


class StudiesPublic(BaseModel):
    items: list[StudyPublic]
