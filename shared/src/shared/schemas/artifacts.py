"""Artifacts of a job: files produced next to its results (heatmaps, annotated images)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


class ArtifactPublic(BaseModel):
    name: str
    content_type: str
    size_bytes: int
    created_at: datetime
    url: str = Field(description="Download path, relative to the API root")


class ArtifactsPublic(BaseModel):
    items: list[ArtifactPublic]
