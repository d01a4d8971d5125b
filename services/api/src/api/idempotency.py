"""`Idempotency-Key` on POST: a retried request gets the first response, not a second job.

Pure ASGI, behind `api.authn_gate`: only authenticated requests get here with a principal,
so an invalid key never buffers a body or writes a row. The caller is the (tenant, API key)
pair the gate authenticated on *this* request: a replay is served only to a key that is
still valid, unexpired and of the same tenant. The first request with a (caller, key) pair
claims a row in Postgres (unique constraint), runs, and stores its response; concurrent or
later requests with the same pair wait for and replay it. The same key with a different request
is a client bug and answers 422. Responses that say "try again" (5xx, 401, 403, 429) are
not stored, so the retry runs for real.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time

from sqlalchemy import delete, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.authn_gate import PRINCIPAL, Principal
from api.problems import send_problem
from shared.db.base import utcnow
from shared.db.models import IdempotencyRecord

_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")
_NOT_STORED = {401, 403, 429}
_REPLAYED_HEADERS = ("content-type", "location")
WAIT_FOR_FIRST_S = 60.0


def fingerprint(scope: Scope, body: bytes) -> str:
    """Hash of what the request means: multipart boundaries differ between retries."""
    headers = dict(scope["headers"])
    content_type = headers.get(b"content-type", b"").decode("latin-1")
    match = re.search(r"boundary=\"?([^\";]+)\"?", content_type)
    if match:
        body = body.replace(match.group(1).encode("latin-1"), b"")
        content_type = content_type[: match.start()]
    h = hashlib.sha256()
    for part in (
        scope["method"],
        scope["path"],
        scope.get("query_string", b"").decode(),
        content_type,
    ):
        h.update(part.encode() + b"\0")
    h.update(body)
    return h.hexdigest()


class IdempotencyMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = dict(scope.get("headers", ())) if scope["type"] == "http" else {}
        key = headers.get(b"idempotency-key")
        principal: Principal | None = scope.get(PRINCIPAL)
        if scope["type"] != "http" or scope["method"] != "POST" or key is None or principal is None:
            await self.app(scope, receive, send)
            return
        key_text = key.decode("latin-1")
        if not _KEY.match(key_text):
            await send_problem(
                scope, send, status=422, type_="invalid-idempotency-key",
                title="Invalid Idempotency-Key",
                detail="Idempotency-Key must be 1-255 visible ASCII characters",
            )  # fmt: skip
            return
        # Chunks joined once: `+=` copies the whole body on every chunk (quadratic). The size
        # is bounded by api.limits, which runs before this.
        chunks: list[bytes] = []
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        del chunks
        owner = hashlib.sha256(f"{principal.tenant_id}:{principal.key_id}".encode()).hexdigest()
        sessions: async_sessionmaker[AsyncSession] = scope["app"].state.sessionmaker
        digest = fingerprint(scope, body)
        if await _claim(sessions, owner, key_text, digest):
            await self._run_and_store(scope, body, send, sessions, owner, key_text)
        else:
            await _replay(scope, send, sessions, owner, key_text, digest)

    async def _run_and_store(
        self,
        scope: Scope,
        body: bytes,
        send: Send,
        sessions: async_sessionmaker[AsyncSession],
        owner: str,
        key: str,
    ) -> None:
        sent = False

        async def replay_body() -> Message:
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        status, response_headers, chunks = 500, {}, []

        async def capture(message: Message) -> None:
            nonlocal status, response_headers
            if message["type"] == "http.response.start":
                status = message["status"]
                response_headers = {
                    k.decode("latin-1"): v.decode("latin-1")
                    for k, v in message.get("headers", [])
                    if k.decode("latin-1").lower() in _REPLAYED_HEADERS
                }
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, replay_body, capture)
        finally:
            async with sessions() as session:
                row = (IdempotencyRecord.owner == owner, IdempotencyRecord.key == key)
                if 200 <= status < 500 and status not in _NOT_STORED:
                    await session.execute(
                        update(IdempotencyRecord)
                        .where(*row)
                        .values(
                            response_status=status,
                            response_headers=response_headers,
                            response_body=b"".join(chunks),
                            completed_at=utcnow(),
                        )
                    )
                else:
                    await session.execute(delete(IdempotencyRecord).where(*row))
                await session.commit()


async def _claim(
    sessions: async_sessionmaker[AsyncSession], owner: str, key: str, digest: str
) -> bool:
    async with sessions() as session:
        claimed = await session.scalar(
            insert(IdempotencyRecord)
            .values(owner=owner, key=key, fingerprint=digest, created_at=utcnow())
            .on_conflict_do_nothing(index_elements=["owner", "key"])
            .returning(IdempotencyRecord.id)
        )
        await session.commit()
    return claimed is not None


async def _replay(
    scope: Scope,
    send: Send,
    sessions: async_sessionmaker[AsyncSession],
    owner: str,
    key: str,
    digest: str,
) -> None:
    deadline = time.monotonic() + WAIT_FOR_FIRST_S
    while True:
        async with sessions() as session:
            record = await session.scalar(
                select(IdempotencyRecord).where(
                    IdempotencyRecord.owner == owner, IdempotencyRecord.key == key
                )
            )
        if record is not None and record.fingerprint != digest:
            await send_problem(
                scope, send, status=422, type_="idempotency-key-reused",
                title="Idempotency-Key reused",
                detail="this Idempotency-Key was used with a different request",
            )  # fmt: skip
            return
        if record is not None and record.completed_at is not None:
            headers = [(k.encode(), v.encode()) for k, v in (record.response_headers or {}).items()]
            await send({"type": "http.response.start", "status": record.response_status,
                        "headers": [*headers, (b"idempotent-replayed", b"true")]})  # fmt: skip
            await send({"type": "http.response.body", "body": record.response_body or b""})
            return
        if record is None or time.monotonic() > deadline:
            # The first request failed (its record was dropped) or is taking too long.
            await send_problem(
                scope, send, status=409, type_="idempotency-request-in-progress",
                title="Request with this Idempotency-Key not finished",
                detail="a request with this Idempotency-Key is still running or failed; "
                "retry shortly",
            )  # fmt: skip
            return
        await asyncio.sleep(0.05)
