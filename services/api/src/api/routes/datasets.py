"""Datasets: upload a zip (a new immutable version), follow its import, browse its items.

Scopes: uploading needs `train` (datasets exist to train models); reading needs `train` or
`jobs:read`. A key sees only its tenant's datasets; another tenant's id answers 404.
"""

from __future__ import annotations

import json
import re
from enum import StrEnum
from typing import IO, Annotated

from fastapi import APIRouter, Depends, File, Form, Path, Query, Response, UploadFile, status
from starlette.concurrency import run_in_threadpool

from api import audit
from api import dataset_views as views
from api.auth import Principal, authenticate
from api.crud import datasets as crud
from api.deps import CeleryDep, SessionDep, SettingsDep, StoreDep
from api.enqueue import submit_dataset_import
from shared import job_state, safe_regex
from shared.auth import Scope, has_scope
from shared.config import Settings
from shared.datasets.formats import SourceFormat, Task, detect_format, task_of
from shared.datasets.records import GROUP_SOURCES
from shared.datasets.safezip import ZipLimits, open_archive
from shared.datasets.splits import normalize_ratios
from shared.db.models import DatasetVersion, Split
from shared.errors import Forbidden, InvalidRequest, ServiceUnavailable
from shared.schemas.datasets import (
    DatasetItemsPublic,
    DatasetPublic,
    DatasetsPublic,
    DatasetVersionPublic,
)
from shared.storage import BlobStore

router = APIRouter(prefix="/datasets", tags=["datasets"])
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


class OnDuplicate(StrEnum):
    FAIL = "fail"
    DROP = "drop"


def _require_any(*scopes: Scope):  # type: ignore[no-untyped-def]
    async def check(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
        if not any(has_scope(principal.scopes, s) for s in scopes):
            wanted = " or ".join(f"`{s}`" for s in scopes)
            raise Forbidden(f"this API key lacks the {wanted} scope", required_scope=scopes[0])
        return principal

    return check


DatasetsRead = Annotated[Principal, Depends(_require_any(Scope.TRAIN, Scope.JOBS_READ))]
DatasetsWrite = Annotated[Principal, Depends(_require_any(Scope.TRAIN))]
# The path segment names a dataset as models are named (by name); its id works too. The
# template keeps `{dataset_id}` so routes, audit rules and links that name it stay valid.
DatasetRef = Annotated[
    str, Path(max_length=100, description="The dataset's name (or its id)", examples=["chest"])
]


def _ratios(raw: str | None) -> dict[str, float] | None:
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise InvalidRequest(f'`ratios` must be JSON such as {{"train": 0.8}}: {exc}') from None
    if not isinstance(value, dict) or not all(isinstance(v, int | float) for v in value.values()):
        raise InvalidRequest('`ratios` must be a JSON object like {"train": 0.7, "test": 0.3}')
    normalize_ratios(value)  # refuse bad ratios now, not after the upload was imported
    return {str(k): float(v) for k, v in value.items()}


def _pattern(raw: str | None) -> str | None:
    if not raw:
        return None
    # RE2 (linear time): the import worker runs this pattern on every file name.
    safe_regex.compile_pattern(raw, field="group_pattern", max_groups=1)
    return raw


def _vet_and_store(
    source: IO[bytes],
    fmt: SourceFormat | None,
    task: Task | None,
    settings: Settings,
    store: BlobStore,
) -> tuple[SourceFormat, Task, str, str]:
    """Central-directory checks and format detection (fast 4xx), then store the zip."""
    with open_archive(source, ZipLimits.from_settings(settings)) as archive:
        fmt = fmt or detect_format(archive)
    resolved = task_of(fmt, task)
    if resolved is None:
        raise InvalidRequest("a Label Studio export can hold either task: send `task`")
    source.seek(0)
    key, digest = store.put_fileobj(source, prefix="datasets", suffix=".zip")
    return fmt, resolved, key, digest


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=DatasetVersionPublic,
    responses={401: {}, 403: {}, 409: {}, 413: {}, 415: {}, 422: {}, 429: {}, 503: {}},
)
async def create_dataset_version(
    principal: DatasetsWrite,
    response: Response,
    session: SessionDep,
    settings: SettingsDep,
    store: StoreDep,
    celery: CeleryDep,
    file: Annotated[UploadFile, File(description="zip: class folders, VOC, COCO, RSNA CSV…")],
    name: Annotated[str, Form(description="Dataset name; an existing name gets a new version")],
    task: Annotated[Task | None, Form(description="Implied by the format when omitted")] = None,
    format: Annotated[SourceFormat | None, Form(description="Auto-detected when omitted")] = None,
    seed: Annotated[int, Form(ge=0, le=2**31 - 1)] = 0,
    ratios: Annotated[str | None, Form(description='JSON, e.g. {"train": 0.7, ...}')] = None,
    group_by: Annotated[str, Form(description=f"One of {', '.join(GROUP_SOURCES)}")] = "auto",
    group_pattern: Annotated[str | None, Form(description="Regex; group 1 = patient")] = None,
    on_duplicate: Annotated[OnDuplicate, Form()] = OnDuplicate.FAIL,
    description: Annotated[str, Form(max_length=2000)] = "",
) -> DatasetVersionPublic:
    """Upload a dataset zip; the import runs in the background (poll the returned version)."""
    if not _NAME.match(name):
        raise InvalidRequest("`name`: 1-100 letters, digits, '.', '_' or '-', starting alnum")
    if group_by not in GROUP_SOURCES:
        raise InvalidRequest(f"`group_by` must be one of {', '.join(GROUP_SOURCES)}")
    spec = {
        "seed": seed,
        "ratios": _ratios(ratios),
        "group_by": group_by,
        "group_pattern": _pattern(group_pattern),
        "on_duplicate": on_duplicate.value,
    }
    fmt, resolved, key, digest = await run_in_threadpool(
        _vet_and_store, file.file, format, task, settings, store
    )
    dataset, version = await crud.create_version(
        session=session,
        tenant_id=principal.tenant_id,
        name=name,
        task=resolved.value,
        description=description,
        source_format=fmt.value,
        upload_key=key,
        upload_sha256=digest,
        split_spec=spec,
    )
    await audit.record(
        session,
        principal,
        "dataset.create",
        "dataset",
        str(dataset.id),
        {"version": version.version, "format": fmt.value, "sha256": digest},
    )
    await session.commit()
    try:
        await submit_dataset_import(celery, version_id=version.id)
    except ServiceUnavailable as exc:
        await job_state.fail_async(session, DatasetVersion, exc, DatasetVersion.id == version.id)
        await session.commit()
        raise
    response.headers["Location"] = views.version_url(dataset.id, version.version)
    return views.version_public(dataset, version)


@router.get("", response_model=DatasetsPublic)
async def read_datasets(principal: DatasetsRead, session: SessionDep) -> DatasetsPublic:
    """The tenant's datasets with their versions."""
    datasets = await crud.list_datasets(session=session, tenant_id=principal.tenant_id)
    return DatasetsPublic(items=[views.dataset_public(d, with_latest=False) for d in datasets])


@router.get("/{dataset_id}", response_model=DatasetPublic, responses={404: {}})
async def read_dataset(
    dataset_id: DatasetRef, principal: DatasetsRead, session: SessionDep
) -> DatasetPublic:
    """A dataset, its versions and the newest version's counts and image sizes."""
    dataset = await crud.find_dataset(
        session=session, tenant_id=principal.tenant_id, ref=dataset_id
    )
    return views.dataset_public(dataset, with_latest=True)


@router.get(
    "/{dataset_id}/versions/{version}", response_model=DatasetVersionPublic, responses={404: {}}
)
async def read_dataset_version(
    dataset_id: DatasetRef, version: int, principal: DatasetsRead, session: SessionDep
) -> DatasetVersionPublic:
    """Import status and progress, counts per class and split, image sizes, problems."""
    dataset = await crud.find_dataset(
        session=session, tenant_id=principal.tenant_id, ref=dataset_id
    )
    return views.version_public(dataset, crud.find_version(dataset, version))


@router.get(
    "/{dataset_id}/versions/{version}/items",
    response_model=DatasetItemsPublic,
    responses={404: {}},
)
async def read_dataset_items(
    dataset_id: DatasetRef,
    version: int,
    principal: DatasetsRead,
    session: SessionDep,
    split: Split | None = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> DatasetItemsPublic:
    """The images of a version with label/boxes, split and group, page by page."""
    dataset = await crud.find_dataset(
        session=session, tenant_id=principal.tenant_id, ref=dataset_id
    )
    found = crud.find_version(dataset, version)
    items, next_cursor = await crud.list_items(
        session=session, version_id=found.id, split=split, cursor=cursor, limit=limit
    )
    return DatasetItemsPublic(items=[views.item_public(i) for i in items], next_cursor=next_cursor)
