"""Bearer API keys -> the calling tenant and its scopes.

Authentication itself happens in `api.authn_gate`, before any request body is read; the
dependency here takes the principal the gate left in the scope (and authenticates from the
headers for a route outside the gate's `/v1` prefix).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.authn_gate import PRINCIPAL, AuthFailure, Principal, authenticate_scope
from shared.auth import Scope, has_scope
from shared.errors import Forbidden

bearer = HTTPBearer(
    auto_error=False,
    description="An API key from `medimg keys create`, sent as `Authorization: Bearer mk_...`",
)


async def authenticate(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    principal: Principal | None = request.scope.get(PRINCIPAL)
    if principal is not None:
        return principal
    try:
        return await authenticate_scope(request.app.state, request.scope)
    except AuthFailure as failure:
        raise failure.error() from None


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
