"""Request body size limits per route, answered as problem+json like every other error.

Runs after `api.authn_gate`, so only authenticated requests are measured. Uploads have their
own limits (job images, dataset zips, model packages); JSON bodies a small one; anything
else `max_request_bytes`.
"""

from __future__ import annotations

import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.problems import send_problem
from shared.config import Settings
from shared.errors import PayloadTooLarge

# (method, path, Settings field, what the limit is for)
_ROUTE_LIMITS = (
    ("POST", re.compile(r"^/v1/jobs/?$"), "max_request_bytes", "a job submission"),
    ("POST", re.compile(r"^/v1/datasets/?$"), "max_dataset_request_bytes", "a dataset upload"),
    ("POST", re.compile(r"^/v1/models/?$"), "max_model_request_bytes", "a model upload"),
)


def body_limit(settings: Settings, scope: Scope) -> tuple[int, str]:
    """The byte limit for this request's body, and what it is for (for the 413 detail)."""
    for method, path, field, what in _ROUTE_LIMITS:
        if scope["method"] == method and path.match(scope["path"]):
            limit: int = getattr(settings, field)
            return limit, what
    content_type = dict(scope["headers"]).get(b"content-type", b"")
    if content_type.split(b";")[0].strip().lower() == b"application/json":
        return settings.max_json_request_bytes, "a JSON body"
    return settings.max_request_bytes, "a request body"


class BodyLimitMiddleware:
    """Refuse bodies over the route's limit: by Content-Length before reading, else while
    reading."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        max_bytes, what = body_limit(self.settings, scope)
        detail = f"{what} may be at most {_size(max_bytes)}"
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_bytes:
            await self._refuse(scope, send, detail)
            return
        seen, refused = 0, False

        async def counting_receive() -> Message:
            nonlocal seen, refused
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > max_bytes and not refused:
                # Answer now and tell the app the client is gone: body parsers would
                # otherwise turn any error raised here into a generic 400.
                refused = True
                await self._refuse(scope, send, detail)
            return {"type": "http.disconnect"} if refused else message

        async def guarded_send(message: Message) -> None:
            if not refused:
                await send(message)

        await self.app(scope, counting_receive, guarded_send)

    async def _refuse(self, scope: Scope, send: Send, detail: str) -> None:
        await send_problem(
            scope,
            send,
            status=PayloadTooLarge.status,
            type_=PayloadTooLarge.type,
            title=PayloadTooLarge.title,
            detail=f"request body too large: {detail}",
        )


def _size(n: int) -> str:
    return f"{n / (1024 * 1024):g} MiB" if n >= 1024 * 1024 else f"{n} bytes"
