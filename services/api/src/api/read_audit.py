"""Audit events for reads of patient data and of the audit log itself (pure ASGI).

Which reads are audited is one table here, keyed by route template, instead of a call in
each handler: a new download route is audited by adding a row. The event is written when
the route has answered 2xx and before its first byte leaves, in its own transaction. If it
cannot be written, the client gets 503 instead of the data: a PHI read the security team
cannot see must not happen (fail closed).

`GET /v1/jobs/{job_id}` records ``job.read`` in its handler (it existed before this table).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.authn_gate import PRINCIPAL, Principal
from api.observability import route_template
from api.problems import send_problem
from shared.audit import audit_event
from shared.errors import ServiceUnavailable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AuditedRead:
    action: str
    resource_type: str
    id_params: tuple[str, ...]  # path parameters joined with ":" as the resource id
    detail_params: tuple[str, ...] = ()  # further path parameters kept in the detail


AUDITED_READS: dict[str, AuditedRead] = {
    "/v1/jobs/{job_id}/artifacts/{name}": AuditedRead(
        "job.artifact.read", "job", ("job_id",), ("name",)
    ),
    "/v1/jobs/{job_id}/images/{index}/preview.png": AuditedRead(
        "job.image.read", "job", ("job_id",), ("index",)
    ),
    "/v1/jobs/{job_id}/report.dcm": AuditedRead("job.report.read", "job", ("job_id",)),
    "/v1/jobs/{job_id}/fhir": AuditedRead("job.fhir.read", "job", ("job_id",)),
    "/v1/training-jobs/{job_id}": AuditedRead("training_job.read", "training_job", ("job_id",)),
    "/v1/training-jobs/{job_id}/artifacts/{name}": AuditedRead(
        "training_job.artifact.read", "training_job", ("job_id",), ("name",)
    ),
    "/v1/datasets/{dataset_id}/versions/{version}/items": AuditedRead(
        "dataset.items.read", "dataset", ("dataset_id", "version")
    ),
    "/v1/datasets/{dataset_id}/versions/{version}/items/{item_id}/preview.png": AuditedRead(
        "dataset.item.read", "dataset", ("dataset_id", "version"), ("item_id",)
    ),
    "/v1/audit": AuditedRead("audit.read", "audit_event", ()),
}


def _event_fields(scope: Scope, read: AuditedRead) -> dict[str, Any]:
    params = scope.get("path_params", {})
    detail: dict[str, Any] = {name: str(params[name]) for name in read.detail_params}
    query = scope.get("query_string", b"").decode("latin-1")
    if query:
        detail["query"] = query[:500]
    return {
        "action": read.action,
        "resource_type": read.resource_type,
        "resource_id": ":".join(str(params[n]) for n in read.id_params) or None,
        "detail": detail or None,
    }


class ReadAuditMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "GET":
            await self.app(scope, receive, send)
            return
        failed = False

        async def audited_send(message: Message) -> None:
            nonlocal failed
            if failed:
                return  # the 503 went out instead of this response
            if message["type"] == "http.response.start" and 200 <= message["status"] < 300:
                read = AUDITED_READS.get(route_template(scope))
                principal: Principal | None = scope.get(PRINCIPAL)
                if read is not None and principal is not None:
                    try:
                        await _record(scope, principal, read)
                    except Exception as exc:
                        failed = True
                        log.error("audit of %s failed: %s", read.action, type(exc).__name__)
                        error = ServiceUnavailable("the read could not be audited; retry shortly")
                        await send_problem(
                            scope, send, status=error.status, type_=error.type,
                            title=error.title, detail=error.detail, headers={"Retry-After": "5"},
                        )  # fmt: skip
                        return
            await send(message)

        await self.app(scope, receive, audited_send)


async def _record(scope: Scope, principal: Principal, read: AuditedRead) -> None:
    async with scope["app"].state.sessionmaker() as session:
        session.add(
            audit_event(
                tenant_id=principal.tenant_id,
                api_key_id=principal.key_id,
                key_prefix=principal.key_prefix,
                **_event_fields(scope, read),
            )
        )
        await session.commit()
