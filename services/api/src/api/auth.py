"""Bearer API keys -> the calling tenant and its scopes, plus per-key rate limits."""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import select, update

from api.deps import SessionDep, SettingsDep
from shared.auth import Scope, has_scope, is_platform_operator, matches, split_prefix
from shared.db.base import utcnow
from shared.db.models import ApiKey
from shared.errors import Forbidden, RateLimited, Unauthorized

bearer = HTTPBearer(
    auto_error=False,
    description="An API key from `medimg keys create`, sent as `Authorization: Bearer mk_...`",
)
# last_used_at is for spotting unused keys, not auditing: a coarse update saves a write
# on nearly every request.
_LAST_USED_RESOLUTION = timedelta(minutes=5)


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


async def _rate_limit(request: Request, key: ApiKey, default: int) -> None:
    limit = key.rate_limit_per_minute if key.rate_limit_per_minute is not None else default
    if limit <= 0:
        return
    window = int(time.time() // 60)
    counter = f"ratelimit:{key.id}:{window}"
    redis = request.app.state.redis
    async with redis.pipeline(transaction=True) as pipe:
        count, _ = await pipe.incr(counter).expire(counter, 120).execute()
    if count > limit:
        retry_after = str(60 - int(time.time()) % 60)
        raise RateLimited(
            f"this API key may send {limit} requests per minute; retry in {retry_after} s",
            headers={"Retry-After": retry_after},
        )


async def authenticate(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    if credentials is None:
        raise Unauthorized("send an API key as `Authorization: Bearer <key>`")
    prefix = split_prefix(credentials.credentials)
    key = None
    if prefix is not None:
        key = await session.scalar(select(ApiKey).where(ApiKey.prefix == prefix))
    if (
        key is None
        or key.revoked_at is not None
        or not matches(credentials.credentials, key.key_hash)
    ):
        raise Unauthorized("the API key is unknown or has been revoked")
    await _rate_limit(request, key, settings.rate_limit_per_minute)
    now = utcnow()
    if key.last_used_at is None or now - key.last_used_at > _LAST_USED_RESOLUTION:
        await session.execute(update(ApiKey).where(ApiKey.id == key.id).values(last_used_at=now))
        await session.commit()
    return Principal(key.id, key.tenant_id, frozenset(key.scopes), key.prefix)


def require(scope: Scope) -> Callable[[Principal], Awaitable[Principal]]:
    async def check(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
        if not has_scope(principal.scopes, scope):
            raise Forbidden(f"this API key lacks the `{scope}` scope", required_scope=scope.value)
        return principal

    return check


JobsRead = Annotated[Principal, Depends(require(Scope.JOBS_READ))]
JobsWrite = Annotated[Principal, Depends(require(Scope.JOBS_WRITE))]
Admin = Annotated[Principal, Depends(require(Scope.ADMIN))]
PlatformOperator = Annotated[Principal, Depends(require(Scope.PLATFORM_ADMIN))]
