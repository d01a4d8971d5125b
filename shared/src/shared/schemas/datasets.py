"""Dataset responses: the REST contract for `/v1/datasets`."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from shared.db.models import DatasetStatus, Split


class DatasetProblem(BaseModel):
    file: str = Field(description="Member path in the upload, or (archive)/(dataset)/group")
    problem: str


class DatasetProgress(BaseModel):
    phase: str | None = Field(None, description="checking, reading, splitting, writing, done")
    done: int = 0
    total: int = 0


class DatasetVersionPublic(BaseModel):
    dataset_id: uuid.UUID
    dataset_name: str
    version: int
    status: DatasetStatus
    task: str
    source_format: str
    upload_sha256: str
    labels: list[str]
    split_spec: dict[str, Any] = Field(
        description="seed, ratios, group_by (pattern, patient, study, format, none), presplit"
    )
    stats: dict[str, Any] = Field(
        description="images, counts[split][class], boxes[split][class] (detection), "
        "groups_per_split, image_size {width, height: min/median/max}, notes"
    )
    progress: DatasetProgress
    error_type: str | None = None
    error_detail: str | None = None
    errors: list[DatasetProblem] = Field(default_factory=list)
    created_at: datetime
    finished_at: datetime | None = None
    url: str


class DatasetVersionSummary(BaseModel):
    version: int
    status: DatasetStatus
    images: int | None = None
    created_at: datetime
    url: str


class DatasetPublic(BaseModel):
    id: uuid.UUID
    name: str
    task: str
    description: str
    created_at: datetime
    versions: list[DatasetVersionSummary]
    latest: DatasetVersionPublic | None = Field(
        None, description="The newest version (its counts per class/split and image sizes)"
    )


class DatasetsPublic(BaseModel):
    items: list[DatasetPublic]


class DatasetItemPublic(BaseModel):
    id: uuid.UUID
    split: Split
    path: str
    sha256: str
    format: str
    width: int
    height: int
    label: str | None = None
    boxes: list[dict[str, Any]] | None = None
    group_id: str | None = None
    burned_in_annotation: bool = Field(
        False, description="DICOM BurnedInAnnotation = YES: text may remain in the pixels"
    )


class DatasetItemsPublic(BaseModel):
    items: list[DatasetItemPublic]
    next_cursor: str | None = None
