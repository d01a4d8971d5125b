"""What a deletion removed (`DELETE` endpoints), and a tenant's retention and quotas."""

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
    max_active_jobs: int = Field(
        description="Inference jobs queued or running at once; past it 429 (0: unlimited)"
    )
    max_active_stat_jobs: int = Field(description="Of those, `stat` ones (0: unlimited)")


class TenantUpdate(BaseModel):
    retention_days: int | None = Field(
        ge=1, le=36_500, description="Days a final job is kept; null keeps jobs until deleted"
    )


class TenantQuotaUpdate(BaseModel):
    max_active_jobs: int | None = Field(
        ge=0, le=10_000_000, description="null: the server default; 0: unlimited"
    )
    max_active_stat_jobs: int | None = Field(
        ge=0, le=10_000_000, description="null: the server default; 0: unlimited"
    )
