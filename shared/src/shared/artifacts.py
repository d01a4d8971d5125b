"""Files a job produces (heatmaps, annotated images, training curves): blob + artifact row.

Shared by the inference worker and the trainer; the API only reads them.
"""

from __future__ import annotations

import re
import uuid
from typing import Literal

from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from shared.db.base import utcnow
from shared.db.models import Artifact
from shared.storage import BlobStore

OwnerKind = Literal["job", "training_job"]
# Names appear in URLs (/v1/jobs/{id}/artifacts/{name}): no slashes, no leading dot.
ARTIFACT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$")
_SUFFIX = re.compile(r"\.[A-Za-z0-9]{1,8}$")


def save_artifact(
    session: Session,
    store: BlobStore,
    owner_kind: OwnerKind,
    owner_id: uuid.UUID,
    tenant_id: uuid.UUID,
    name: str,
    content_type: str,
    data: bytes,
) -> Artifact:
    """Store ``data`` and record it as artifact ``name`` of its owner.

    Idempotent per (owner_id, name): a task that runs twice replaces the row's blob
    reference instead of failing or adding a second row. The caller commits.

    Args:
        session: sync session; the row is upserted in its transaction.
        store: blob store; the bytes are stored content-addressed under ``artifacts/``.
        owner_kind: ``"job"`` (inference) or ``"training_job"``.
        owner_id: the job's id.
        tenant_id: the owner's tenant, for access checks on download.
        name: file name within the owner, e.g. ``"gradcam-0.png"``.
        content_type: MIME type served on download.
        data: the file's bytes.

    Returns:
        The artifact row as stored.

    Raises:
        ValueError: ``name`` is not a plain file name (a bug in the caller).
    """
    if not ARTIFACT_NAME.match(name):
        raise ValueError(f"artifact name {name!r} must be a plain file name")
    suffix = match.group(0) if (match := _SUFFIX.search(name)) else ""
    key, _ = store.put(data, prefix="artifacts", suffix=suffix)
    values = {
        "id": uuid.uuid4(),
        "owner_kind": owner_kind,
        "owner_id": owner_id,
        "tenant_id": tenant_id,
        "name": name,
        "content_type": content_type,
        "storage_key": key,
        "size_bytes": len(data),
        "created_at": utcnow(),
    }
    inserted = insert(Artifact).values(**values)
    statement = inserted.on_conflict_do_update(
        index_elements=[Artifact.owner_id, Artifact.name],
        set_={
            "content_type": inserted.excluded.content_type,
            "storage_key": inserted.excluded.storage_key,
            "size_bytes": inserted.excluded.size_bytes,
        },
    ).returning(Artifact)
    artifact: Artifact = session.scalars(
        statement, execution_options={"populate_existing": True}
    ).one()
    return artifact
