"""Dataset ORM rows -> public schemas."""

from __future__ import annotations

import uuid

from shared.db.models import Dataset, DatasetItem, DatasetStatus, DatasetVersion, Split
from shared.schemas.datasets import (
    DatasetItemPublic,
    DatasetProblem,
    DatasetProgress,
    DatasetPublic,
    DatasetVersionPublic,
    DatasetVersionSummary,
)


def version_url(dataset_id: uuid.UUID, version: int) -> str:
    return f"/v1/datasets/{dataset_id}/versions/{version}"


def version_public(dataset: Dataset, version: DatasetVersion) -> DatasetVersionPublic:
    return DatasetVersionPublic(
        dataset_id=dataset.id,
        dataset_name=dataset.name,
        version=version.version,
        status=DatasetStatus(version.status),
        task=dataset.task,
        source_format=version.source_format,
        upload_sha256=version.upload_sha256,
        labels=list(version.labels or []),
        split_spec=dict(version.split_spec or {}),
        stats=dict(version.stats or {}),
        progress=DatasetProgress.model_validate(version.progress or {}),
        error_type=version.error_type,
        error_detail=version.error_detail,
        errors=[DatasetProblem.model_validate(e) for e in version.errors or []],
        created_at=version.created_at,
        finished_at=version.finished_at,
        url=version_url(dataset.id, version.version),
    )


def dataset_public(dataset: Dataset, *, with_latest: bool) -> DatasetPublic:
    versions = [
        DatasetVersionSummary(
            version=v.version,
            status=DatasetStatus(v.status),
            images=(v.stats or {}).get("images"),
            created_at=v.created_at,
            url=version_url(dataset.id, v.version),
        )
        for v in dataset.versions
    ]
    latest = dataset.versions[-1] if with_latest and dataset.versions else None
    return DatasetPublic(
        id=dataset.id,
        name=dataset.name,
        task=dataset.task,
        description=dataset.description,
        created_at=dataset.created_at,
        versions=versions,
        latest=version_public(dataset, latest) if latest else None,
    )


def item_public(item: DatasetItem) -> DatasetItemPublic:
    return DatasetItemPublic(
        id=item.id,
        split=Split(item.split),
        path=item.path,
        sha256=item.sha256,
        format=item.format,
        width=item.width,
        height=item.height,
        label=item.label,
        boxes=item.boxes,
        group_id=item.group_id,
        burned_in_annotation=item.burned_in_annotation,
    )
