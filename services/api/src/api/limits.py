"""Request body size limit, answered as problem+json like every other error."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.problems import send_problem
from shared.errors import PayloadTooLarge


class BodyLimitMiddleware:
    """Refuse bodies over `max_bytes`: by Content-Length before reading, else while reading."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, send)
            return
        seen, refused = 0, False

        async def counting_receive() -> Message:
            nonlocal seen, refused
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes and not refused:
                # Answer now and tell the app the client is gone: body parsers would
                # otherwise turn any error raised here into a generic 400.
                refused = True
                await self._refuse(scope, send)
            return {"type": "http.disconnect"} if refused else message

        async def guarded_send(message: Message) -> None:
            if not refused:
                await send(message)

        await self.app(scope, counting_receive, guarded_send)

    def _detail(self) -> str:
        return f"request body is larger than the {self.max_bytes // (1024 * 1024)} MiB limit"

    async def _refuse(self, scope: Scope, send: Send) -> None:
        await send_problem(
            scope,
            send,
            status=PayloadTooLarge.status,
            type_=PayloadTooLarge.type,
            title=PayloadTooLarge.title,
            detail=self._detail(),
        )
