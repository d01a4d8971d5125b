"""Who the caller is: the API key's own view of itself (`GET /v1/me`)."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, Field


class MePublic(BaseModel):
    key_name: str
    key_prefix: str = Field(description="The public part of the key (`mk_<prefix>_...`)")
    tenant_id: uuid.UUID
    tenant: str = Field(description="Tenant name: the jobs and datasets this key can see")
    scopes: list[str] = Field(description="Granted scopes; `admin` implies every scope")
    effective_scopes: list[str] = Field(
        description="Every scope the key passes, after implications (admin, jobs:write)"
    )
    rate_limit_per_minute: int | None = Field(None, description="None: the platform default")
    created_at: datetime
    expires_at: datetime | None = Field(None, description="None: the key does not expire")
