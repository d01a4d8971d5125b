"""Audit log schemas: GET /v1/audit."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field


class AuditEventPublic(BaseModel):
    id: uuid.UUID
    created_at: datetime
    tenant: str | None = Field(description="Acting tenant; null for operator (CLI) actions")
    key_prefix: str | None = Field(description="Public prefix of the acting API key")
    action: str = Field(description="`<resource>.<verb>`, e.g. `job.create`, `job.read`")
    resource_type: str
    resource_id: str | None
    request_id: str | None = Field(description="X-Request-ID of the request that did it")
    detail: dict[str, Any]


class AuditEventsPublic(BaseModel):
    items: list[AuditEventPublic]
    next_cursor: str | None = Field(None, description="Pass as `cursor` for the next page")
