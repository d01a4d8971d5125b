"""Authentication before any request body is read: the API key gate (pure ASGI).

Every `/v1` request is authenticated here from its headers alone. Without a valid key it is
answered 401 problem+json (with `Connection: close` when a body follows) before a byte of
the body is read, so an anonymous upload costs the API neither memory nor a database row.
Presented-but-wrong credentials are audited (`auth.fail`: key prefix if parseable, client
address, request id, never the secret) and rate-limited per client address by a token
bucket in Redis (429 + Retry-After, no audit row, no look-up). The per-key rate limit runs
here too, so a throttled key's upload is not read either. `api.auth.authenticate` (the route
dependency) takes the principal left in the scope.

Key rows are cached per process. A wrong, unknown or revoked key can never become valid, so
that answer is kept (bounded LRU). A valid key is reused for `api_key_cache_seconds`, and only
while this process listens for revocations (`shared.apikeys.REVOKED_CHANNEL`): a revoked key
stops working at once on every API process. Expiry is checked on every request.

Client addresses and schemes come from the ASGI scope: uvicorn rewrites them from
X-Forwarded-For/-Proto only for proxies listed in FORWARDED_ALLOW_IPS.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import math
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
from redis.exceptions import RedisError
from sqlalchemy import or_, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeoutError
from starlette.types import ASGIApp, Receive, Scope, Send

from api.problems import send_problem
from shared.apikeys import REVOKED_CHANNEL
from shared.audit import audit_event
from shared.auth import hash_key, is_platform_operator, split_prefix
from shared.db.base import utcnow
from shared.db.models import ApiKey
from shared.errors import KeyExpired, RateLimited, ServiceUnavailable, Unauthorized

log = logging.getLogger(__name__)
PRINCIPAL = "medimg.principal"  # scope key the gate leaves for api.auth.authenticate
PROTECTED_PREFIX = "/v1/"
_WWW_AUTHENTICATE = 'Bearer realm="medimg"'
# last_used_at is for spotting unused keys, not auditing: one write per key per 5 minutes.
_LAST_USED_RESOLUTION = timedelta(minutes=5)
_CACHE_ENTRIES = 10_000

# Token bucket per client address; Redis' clock, so several API hosts agree.
_BUCKET = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1]) or capacity
local ts = tonumber(state[2]) or now
tokens = math.min(capacity, tokens + math.max(0, now - ts) * rate)
local allowed = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil(capacity / rate) + 1)
return {allowed, tostring(tokens)}
"""


@dataclass(frozen=True)
class Principal:
    key_id: uuid.UUID
    tenant_id: uuid.UUID
    scopes: frozenset[str]
    key_prefix: str | None = None  # public part of the key, for audit events

    @property
    def is_operator(self) -> bool:
        """A platform operator (`platform:admin`), as opposed to a tenant's `admin`."""
        return is_platform_operator(self.scopes)


@dataclass(frozen=True)
class KeyRow:
    """What authentication needs of an api_key row (cached; never the hash)."""

    key_id: uuid.UUID
    tenant_id: uuid.UUID
    prefix: str
    scopes: frozenset[str]
    expires_at: datetime | None
    rate_limit_per_minute: int | None


class AuthFailure(Exception):
    """Why a request is not authenticated; the fields are safe to audit."""

    def __init__(
        self,
        reason: str,
        detail: str,
        *,
        prefix: str | None = None,
        tenant_id: uuid.UUID | None = None,
        key_id: uuid.UUID | None = None,
    ) -> None:
        super().__init__(detail)
        self.reason, self.detail = reason, detail
        self.prefix, self.tenant_id, self.key_id = prefix, tenant_id, key_id

    def error(self) -> Unauthorized:
        return KeyExpired(self.detail) if self.reason == "expired" else Unauthorized(self.detail)


_UNKNOWN = "the API key is unknown or has been revoked"


class KeyCache:
    """digest of a presented key -> its row (for a while) or its permanent failure."""

    def __init__(self, max_entries: int = _CACHE_ENTRIES) -> None:
        self._entries: OrderedDict[str, tuple[float, KeyRow | AuthFailure]] = OrderedDict()
        self._max = max_entries

    def get(self, digest: str, ttl: float, trust_valid: bool) -> KeyRow | AuthFailure | None:
        entry = self._entries.get(digest)
        if entry is None:
            return None
        stored, value = entry
        if isinstance(value, KeyRow) and (not trust_valid or time.monotonic() - stored > ttl):
            del self._entries[digest]
            return None
        self._entries.move_to_end(digest)
        return value

    def put(self, digest: str, value: KeyRow | AuthFailure) -> None:
        self._entries[digest] = (time.monotonic(), value)
        self._entries.move_to_end(digest)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    def forget_prefix(self, prefix: str) -> None:
        for digest, (_, value) in list(self._entries.items()):
            if isinstance(value, KeyRow) and value.prefix == prefix:
                del self._entries[digest]

    def forget_valid(self) -> None:
        for digest, (_, value) in list(self._entries.items()):
            if isinstance(value, KeyRow):
                del self._entries[digest]


class RevocationListener:
    """LISTEN for revoked keys; valid keys are cached only while this is connected."""

    def __init__(self, database_url: str, cache: KeyCache) -> None:
        scheme, rest = database_url.split("://", 1)
        self._dsn = "postgresql://" + rest if scheme.startswith("postgres") else database_url
        self._cache = cache
        self._task: asyncio.Task[None] | None = None
        self.connected = False

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._listen(), name="api-key-revocations")

    async def _listen(self) -> None:
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(self._dsn, autocommit=True)
                async with conn:
                    await conn.execute(f"LISTEN {REVOKED_CHANNEL}")
                    self.connected = True
                    async for note in conn.notifies():
                        self._cache.forget_prefix(note.payload)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # database restart: stop trusting the cache, retry
                log.warning("API key revocation listener lost its connection: %s", exc)
            self.connected = False
            self._cache.forget_valid()
            await asyncio.sleep(0.5)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def _gate_state(app_state: Any) -> tuple[KeyCache, RevocationListener]:
    """Per-app cache and listener, made on first use (inside the running loop)."""
    cache: KeyCache | None = getattr(app_state, "key_cache", None)
    if cache is None:
        cache = app_state.key_cache = KeyCache()
        app_state.key_revocations = RevocationListener(
            app_state.settings.require_database_url(), cache
        )
    listener: RevocationListener = app_state.key_revocations
    listener.start()
    return cache, listener


def bearer_token(scope: Scope) -> str:
    """The presented token; raises AuthFailure for no or a non-Bearer Authorization."""
    header = dict(scope.get("headers", ())).get(b"authorization")
    if header is None:
        raise AuthFailure("missing", "send an API key as `Authorization: Bearer <key>`")
    scheme, _, token = header.decode("latin-1").strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthFailure("malformed", "send an API key as `Authorization: Bearer <key>`")
    return token.strip()


async def _load(app_state: Any, token: str, digest: str) -> KeyRow | AuthFailure:
    prefix = split_prefix(token)
    if prefix is None:
        return AuthFailure("malformed", _UNKNOWN)
    async with app_state.sessionmaker() as session:
        key = await session.scalar(select(ApiKey).where(ApiKey.prefix == prefix))
    if key is None:
        return AuthFailure("unknown", _UNKNOWN, prefix=prefix)
    known = {"prefix": prefix, "tenant_id": key.tenant_id, "key_id": key.id}
    if not hmac.compare_digest(digest, key.key_hash):
        return AuthFailure("wrong-secret", _UNKNOWN, **known)
    if key.revoked_at is not None:
        return AuthFailure("revoked", _UNKNOWN, **known)
    return KeyRow(key.id, key.tenant_id, key.prefix, frozenset(key.scopes), key.expires_at,
                  key.rate_limit_per_minute)  # fmt: skip


async def _load_once(
    app_state: Any, cache: KeyCache, token: str, digest: str
) -> KeyRow | AuthFailure:
    """One database look-up per key at a time: a burst of requests with a key not cached yet
    (a client's first 200 concurrent uploads) waits for the first one's answer instead of
    taking 200 connections from the pool."""
    inflight: dict[str, asyncio.Future[KeyRow | AuthFailure]] | None = getattr(
        app_state, "key_lookups", None
    )
    if inflight is None:
        inflight = app_state.key_lookups = {}
    pending = inflight.get(digest)
    if pending is not None:
        try:
            return await asyncio.shield(pending)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if not pending.cancelled() or (task is not None and task.cancelling()):
                raise  # this request itself was cancelled
            # The request doing the look-up went away (client disconnect): do our own.
            return await _load_once(app_state, cache, token, digest)
    future: asyncio.Future[KeyRow | AuthFailure] = asyncio.get_running_loop().create_future()
    inflight[digest] = future
    try:
        found = await _load(app_state, token, digest)
    except asyncio.CancelledError:
        future.cancel()
        raise
    except BaseException as exc:
        future.set_exception(exc)
        future.exception()  # retrieved here: waiters re-raise it, nobody else needs to
        raise
    finally:
        del inflight[digest]
    cache.put(digest, found)
    future.set_result(found)
    return found


async def resolve(app_state: Any, token: str) -> KeyRow:
    """The valid, unexpired key row for `token`; raises AuthFailure."""
    cache, listener = _gate_state(app_state)
    digest = hash_key(token)
    ttl = app_state.settings.api_key_cache_seconds
    found = cache.get(digest, ttl, trust_valid=listener.connected and ttl > 0)
    if found is None:
        found = await _load_once(app_state, cache, token, digest)
    if isinstance(found, AuthFailure):
        raise found
    if found.expires_at is not None and utcnow() >= found.expires_at:
        raise AuthFailure(
            "expired",
            f"key expired: the API key expired at {found.expires_at.isoformat()}",
            prefix=found.prefix, tenant_id=found.tenant_id, key_id=found.key_id,
        )  # fmt: skip
    return found


async def _rate_limit(app_state: Any, key: KeyRow) -> None:
    default = app_state.settings.rate_limit_per_minute
    limit = key.rate_limit_per_minute if key.rate_limit_per_minute is not None else default
    if limit <= 0:
        return
    window = int(time.time() // 60)
    counter = f"ratelimit:{key.key_id}:{window}"
    async with app_state.redis.pipeline(transaction=True) as pipe:
        count, _ = await pipe.incr(counter).expire(counter, 120).execute()
    if count > limit:
        retry_after = str(60 - int(time.time()) % 60)
        raise RateLimited(
            f"this API key may send {limit} requests per minute; retry in {retry_after} s",
            headers={"Retry-After": retry_after},
        )


async def _touch(app_state: Any, key: KeyRow) -> None:
    touched: dict[uuid.UUID, float] | None = getattr(app_state, "key_touched", None)
    if touched is None:
        touched = app_state.key_touched = {}
    last = touched.get(key.key_id, -math.inf)
    if time.monotonic() - last < _LAST_USED_RESOLUTION.total_seconds():
        return
    touched[key.key_id] = time.monotonic()  # before the await: concurrent requests skip it
    now = utcnow()
    async with app_state.sessionmaker() as session:
        await session.execute(
            update(ApiKey)
            .where(ApiKey.id == key.key_id)
            .where(
                or_(
                    ApiKey.last_used_at.is_(None), ApiKey.last_used_at < now - _LAST_USED_RESOLUTION
                )
            )
            .values(last_used_at=now)
        )
        await session.commit()


async def authenticate_scope(app_state: Any, scope: Scope) -> Principal:
    """Authenticate a request from its headers: AuthFailure, RateLimited or a Principal."""
    key = await resolve(app_state, bearer_token(scope))
    await _rate_limit(app_state, key)
    await _touch(app_state, key)
    return Principal(key.key_id, key.tenant_id, key.scopes, key.prefix)


def client_address(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


async def failure_retry_after(app_state: Any, address: str) -> int | None:
    """Take a token from the address's failure bucket: None if one was left, else seconds."""
    settings = app_state.settings
    burst, per_minute = settings.auth_failure_burst, settings.auth_failure_per_minute
    if burst <= 0 or per_minute <= 0:
        return None
    rate = per_minute / 60
    script = app_state.redis.register_script(_BUCKET)
    allowed, tokens = await script(keys=[f"authfail:{address}"], args=[burst, rate])
    if int(allowed):
        return None
    return max(1, math.ceil((1 - float(tokens)) / rate))


async def record_failure(app_state: Any, scope: Scope, failure: AuthFailure) -> None:
    """The `auth.fail` audit event, committed on its own (there is no other transaction)."""
    async with app_state.sessionmaker() as session:
        session.add(
            audit_event(
                tenant_id=failure.tenant_id,
                api_key_id=failure.key_id,
                key_prefix=failure.prefix,
                action="auth.fail",
                resource_type="api_key",
                resource_id=failure.prefix,
                detail={
                    "reason": failure.reason,
                    "client": client_address(scope),
                    "method": scope["method"],
                    "path": scope["path"],
                },
            )
        )
        await session.commit()


def _has_body(scope: Scope) -> bool:
    headers = dict(scope.get("headers", ()))
    length = headers.get(b"content-length", b"0")
    return b"transfer-encoding" in headers or not length.isdigit() or int(length) > 0


class AuthnGateMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(PROTECTED_PREFIX):
            await self.app(scope, receive, send)
            return
        app_state = scope["app"].state
        # Unread bodies are not drained: closing the connection stops the upload.
        close = {"Connection": "close"} if _has_body(scope) else {}
        try:
            scope[PRINCIPAL] = await authenticate_scope(app_state, scope)
        except AuthFailure as failure:
            await self._refuse(app_state, scope, send, failure, close)
            return
        except RateLimited as exc:
            await _send_error(scope, send, exc, {**exc.headers, **close})
            return
        except (DBAPIError, SQLAlchemyTimeoutError, RedisError, OSError) as exc:
            log.warning("authentication backend unavailable: %s", type(exc).__name__)
            unavailable = ServiceUnavailable("authentication is unavailable; retry shortly")
            await _send_error(scope, send, unavailable, {"Retry-After": "5", **close})
            return
        await self.app(scope, receive, send)

    async def _refuse(
        self, app_state: Any, scope: Scope, send: Send, failure: AuthFailure, close: dict[str, str]
    ) -> None:
        if failure.reason != "missing":  # no credentials: nothing guessed, nothing to audit
            retry = await failure_retry_after(app_state, client_address(scope))
            if retry is not None:
                limited = RateLimited(
                    f"too many failed authentications from this address; retry in {retry} s"
                )
                await _send_error(scope, send, limited, {"Retry-After": str(retry), **close})
                return
            await record_failure(app_state, scope, failure)
        error = failure.error()
        await _send_error(scope, send, error, {"WWW-Authenticate": _WWW_AUTHENTICATE, **close})


async def _send_error(scope: Scope, send: Send, error: Any, headers: dict[str, str]) -> None:
    await send_problem(
        scope, send, status=error.status, type_=error.type, title=error.title,
        detail=error.detail, headers=headers,
    )  # fmt: skip
