"""Deterministic UIDs of result objects: the same job, model version, kind and index always
give the same UID, so a rebuild or a re-delivery replaces an object instead of adding one.

``2.25.<integer of a version-5 UUID>`` (PS3.5 B.2: a UUID as a UID under the 2.25 root), the
UUID named by ``job_id|name:version|kind|index`` in a namespace of this project.
"""

from __future__ import annotations

import uuid

# Fixed namespace: changing it would change every result UID ever issued.
_NAMESPACE = uuid.UUID("6f1d7c1e-3a52-5b7e-9b43-6d2f0a9c1e11")


def result_uid(job_id: uuid.UUID, model_ref: str, kind: str, index: int | str) -> str:
    """The UID of object ``kind`` number ``index`` of a job (``index="series"`` for series)."""
    name = f"{job_id}|{model_ref}|{kind}|{index}"
    return f"2.25.{uuid.uuid5(_NAMESPACE, name).int}"


def series_uid(job_id: uuid.UUID, model_ref: str, kind: str) -> str:
    """One series per kind of result object of a job."""
    return result_uid(job_id, model_ref, kind, "series")


def device_uid(model_ref: str) -> str:
    """The observer device of the SR: the model version (same for all its jobs)."""
    return f"2.25.{uuid.uuid5(_NAMESPACE, f'device|{model_ref}').int}"
