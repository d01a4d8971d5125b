"""What a deletion removed (`DELETE` endpoints) and the tenant settings it depends on."""

from __future__ import annotations

import uuid

from pydantic import BaseModel, Field


class DeletionPublic(BaseModel):
    resource_type: str
    resource_id: str
    rows: dict[str, int] = Field(description="Rows deleted per table")
    blobs_removed: int = Field(description="Blob files removed from the store")
    blobs_still_referenced: int = Field(
        description="Blobs kept: another row (perhaps of another tenant) holds the same bytes"
    )
    blobs_deferred: int = Field(
        description="Blobs written or re-used within the grace period, or removed in the "
        "background: the orphan sweep removes them once no row references them"
    )


class TenantPublic(BaseModel):
    id: uuid.UUID
    name: str
    retention_days: int | None = Field(
        description="Final jobs older than this are deleted automatically; null: kept"
    )


class TenantUpdate(BaseModel):
    retention_days: int | None = Field(
        ge=1, le=36_500, description="Days a final job is kept; null keeps jobs until deleted"
    )
