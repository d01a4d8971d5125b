"""POST /v1/models: receive a model package, validate it torch-free, register it.

Weights are checked by reading tensor shapes from the checkpoint (shared.state_dict_shapes),
never by loading it, so the API stays torch-free and never runs code from an upload.
"""

from __future__ import annotations

import re
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import UploadFile
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.concurrency import run_in_threadpool

from api.auth import Principal
from shared.auth import Scope
from shared.config import Settings
from shared.db.models import Model
from shared.errors import (
    ChecksumMismatch,
    Conflict,
    Forbidden,
    InvalidModelPackage,
    InvalidRequest,
)
from shared.ml_catalog import check_weights
from shared.model_lifecycle import build_ensemble
from shared.model_packages import parse_card_json, save_upload, unpack_package, validate_card
from shared.registry import Registration, ensure_version
from shared.state_dict_shapes import read_state_dict_shapes
from shared.storage import BlobStore, sha256_file

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class ModelUpload:
    card: str | None
    weights: UploadFile | None
    package: UploadFile | None
    sha256: str | None
    shared: bool


async def _received(
    upload: ModelUpload, folder: Path, settings: Settings
) -> tuple[dict[str, Any], Path | None]:
    """The raw card and the weights file on disk, from either upload form."""
    if upload.package is not None:
        if upload.card is not None or upload.weights is not None:
            raise InvalidRequest("send either `package` or `card` (+ `weights`), not both")
        path = await run_in_threadpool(
            save_upload,
            upload.package.file,
            folder / "package",
            settings.max_model_bytes,
            "the package",
        )
        unpacked = await run_in_threadpool(
            unpack_package, path, folder, max_bytes=settings.max_model_bytes
        )
        return unpacked.card, unpacked.weights
    if upload.card is None:
        raise InvalidRequest("send `card` (model card JSON) with `weights`, or one `package`")
    weights = None
    if upload.weights is not None:
        weights = await run_in_threadpool(
            save_upload,
            upload.weights.file,
            folder / "weights.pt",
            settings.max_model_bytes,
            "the weights file",
        )
    return parse_card_json(upload.card), weights


def _check_checksum(weights: Path, claimed: str | None) -> None:
    if claimed is None:
        return
    claimed = claimed.strip().lower()
    if not _SHA256.match(claimed):
        raise InvalidRequest("`sha256` must be 64 hex digits (the SHA-256 of weights.pt)")
    actual = sha256_file(weights)
    if actual != claimed:
        raise ChecksumMismatch(
            f"the weights' SHA-256 is {actual}, not the {claimed} sent: the upload was "
            "corrupted or is not the intended file",
            expected=claimed,
            actual=actual,
        )


async def _owner(
    session: AsyncSession, principal: Principal, name: str, shared: bool
) -> uuid.UUID | None:
    """The owner the new version is registered for: the caller's tenant, or None (shared).

    Never an existing model's owner taken on trust: a version may only be added to the
    caller's own model, or to a shared one by a platform operator. Another tenant's model
    answers 409 without saying whose it is (its name is taken, nothing else leaks).
    """
    existing = await session.scalar(select(Model).where(Model.name == name))
    wants_shared = shared if existing is None else existing.tenant_id is None
    if wants_shared:
        if not principal.is_operator:
            raise Forbidden(
                f"model {name!r} is shared by every tenant: only a platform operator "
                "(`platform:admin`) may add to it",
                required_scope=Scope.PLATFORM_ADMIN.value,
            )
        return None
    if existing is not None and existing.tenant_id != principal.tenant_id:
        raise Conflict(
            f"the model name {name!r} is taken by another owner; choose another name",
            model=name,
        )
    return principal.tenant_id


async def register_upload(
    upload: ModelUpload,
    *,
    principal: Principal,
    session: AsyncSession,
    settings: Settings,
    store: BlobStore,
) -> Registration:
    """Validate and register the upload; the caller commits.

    Raises:
        InvalidRequest, InvalidModelCard, InvalidModelPackage, UnsafeCheckpoint,
        ChecksumMismatch (422); ModelTooLarge (413); UnsupportedModelPackage (415);
        Forbidden (403); Conflict (409).
    """
    with tempfile.TemporaryDirectory(prefix="medimg-model-") as tmp:
        raw, weights = await _received(upload, Path(tmp), settings)
        if raw.get("kind") == "ensemble":
            if weights is not None:
                raise InvalidModelPackage("an ensemble has no weights of its own; drop them")
            card, members = await session.run_sync(build_ensemble, raw, principal.tenant_id)
        else:
            card, members = validate_card(raw), None
            if weights is None:
                raise InvalidModelPackage("a single model needs its weights.pt", field="weights")
            await run_in_threadpool(_check_checksum, weights, upload.sha256)
            check_weights(card, await run_in_threadpool(read_state_dict_shapes, weights))
        owner = await _owner(session, principal, card.name, upload.shared)
        return await session.run_sync(
            lambda s: ensure_version(s, store, card, weights, owner, members=members)
        )
