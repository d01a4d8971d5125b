"""Record audit events from API handlers, in the transaction of the change they describe.

Usage in a handler, before its commit::

    await audit.record(session, principal, "model.deprecate", "model", ref, {"reason": ...})

Actions are ``<resource>.<verb>``. Reading a job's results is access to patient data, so
`GET /v1/jobs/{id}` records ``job.read`` (listing jobs does not: it shows no results).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from api.auth import Principal
from shared.audit import audit_event


async def record(
    session: AsyncSession,
    principal: Principal,
    action: str,
    resource_type: str,
    resource_id: str | None,
    detail: dict[str, Any] | None = None,
) -> None:
    """Add an audit event for `principal`; it commits with the caller's transaction.

    A read-only handler (``job.read``) must commit after calling this.
    """
    session.add(
        audit_event(
            tenant_id=principal.tenant_id,
            api_key_id=principal.key_id,
            key_prefix=principal.key_prefix,
            action=action,
            resource_type=resource_type,
            resource_id=resource_id,
            detail=detail,
        )
    )
