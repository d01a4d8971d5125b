"""Audit events: who (API key, tenant) did what to which job, model or dataset.

Events are added to the caller's session, so an event commits or rolls back together with
the change it describes. `detail` holds ids, names and counts only: never patient
identifiers, file names or image bytes (the audit log is readable by every admin, and it
outlives deleted PHI: rows can be neither updated nor deleted).

The table is append-only in the database and hash-chained by its insert trigger (migration
5b1e0c7a93d4): every writer is covered, and `shared.audit_chain` verifies the chain.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.orm import Session

from shared.db.base import utcnow
from shared.db.models import AuditEvent
from shared.logs import client_request_id as client_request_id_var
from shared.logs import request_id as request_id_var


def audit_event(
    *,
    tenant_id: uuid.UUID | None,
    api_key_id: uuid.UUID | None,
    key_prefix: str | None,
    action: str,
    resource_type: str,
    resource_id: str | None,
    detail: dict[str, Any] | None = None,
) -> AuditEvent:
    """An audit row for `action` (e.g. ``job.create``), stamped with the current request id.

    Args:
        tenant_id: the acting tenant; None for operator actions (command line).
        api_key_id: the acting key; None for operator actions.
        key_prefix: the acting key's public prefix, kept even if the key is later deleted.
        action: ``<resource>.<verb>``, e.g. ``job.cancel``, ``model.deprecate``.
        resource_type: ``job``, ``model``, ``dataset``, ``training_job``, ``api_key`` ...
        resource_id: the resource's id or name (``name:version`` for model versions).
        detail: small JSON-able facts (counts, refs); never patient data.

    Returns:
        The unsaved AuditEvent; add it to the session of the change it describes.
    """
    return AuditEvent(
        id=uuid.uuid4(),
        created_at=utcnow(),
        tenant_id=tenant_id,
        api_key_id=api_key_id,
        key_prefix=key_prefix,
        action=action,
        resource_type=resource_type,
        resource_id=resource_id,
        request_id=request_id_var.get(),
        client_request_id=client_request_id_var.get(),
        detail=detail or {},
    )


def record_sync(
    session: Session,
    *,
    action: str,
    resource_type: str,
    resource_id: str | None,
    tenant_id: uuid.UUID | None = None,
    api_key_id: uuid.UUID | None = None,
    key_prefix: str | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    """Add an audit event to a sync session (workers, command-line tools)."""
    session.add(
        audit_event(
            tenant_id=tenant_id,
            api_key_id=api_key_id,
            key_prefix=key_prefix,
            action=action,
            resource_type=resource_type,
            resource_id=resource_id,
            detail=detail,
        )
    )
