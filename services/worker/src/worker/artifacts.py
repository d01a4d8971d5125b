"""Job artifacts written by the inference worker (Grad-CAM overlays, annotated boxes).

The storage and the idempotent upsert live in shared.artifacts (the trainer uses them
too); this module adds what only inference needs: PNG encoding and the link a result
carries to its artifact.
"""

from __future__ import annotations

import io
import uuid

import numpy as np
from PIL import Image
from sqlalchemy.orm import Session

from shared.artifacts import save_artifact
from shared.db.models import Artifact
from shared.storage import BlobStore

__all__ = ["artifact_url", "encode_png", "save_artifact", "save_job_png"]


def artifact_url(job_id: uuid.UUID, name: str) -> str:
    """Where a client downloads a job's artifact."""
    return f"/v1/jobs/{job_id}/artifacts/{name}"


def encode_png(pixels: np.ndarray) -> bytes:
    """uint8 HxW or HxWx3 array -> PNG bytes."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def save_job_png(
    session: Session,
    store: BlobStore,
    *,
    job_id: uuid.UUID,
    tenant_id: uuid.UUID,
    name: str,
    pixels: np.ndarray,
) -> Artifact:
    """Encode ``pixels`` as PNG and store it as artifact ``name`` of inference job ``job_id``."""
    return save_artifact(
        session,
        store,
        owner_kind="job",
        owner_id=job_id,
        tenant_id=tenant_id,
        name=name,
        content_type="image/png",
        data=encode_png(pixels),
    )
