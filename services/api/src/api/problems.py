"""RFC 9457 problem responses for every error the API returns."""

from __future__ import annotations

import json
import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Scope, Send

from shared.errors import PROBLEM_BASE, AppError, Conflict

log = logging.getLogger(__name__)
PROBLEM_JSON = "application/problem+json"


def problem_body(
    *,
    status: int,
    type_: str,
    title: str,
    detail: str,
    instance: str,
    extensions: dict[str, Any] | None = None,
) -> dict[str, Any]:
    # Extensions never override the RFC 9457 members.
    return {
        **(extensions or {}),
        "type": PROBLEM_BASE + type_,
        "title": title,
        "status": status,
        "detail": detail,
        "instance": instance,
    }


def problem(
    request: Request,
    *,
    status: int,
    type_: str,
    title: str,
    detail: str,
    extensions: dict[str, Any] | None = None,
) -> JSONResponse:
    body = problem_body(
        status=status,
        type_=type_,
        title=title,
        detail=detail,
        instance=request.url.path,
        extensions=extensions,
    )
    return JSONResponse(jsonable_encoder(body), status_code=status, media_type=PROBLEM_JSON)


async def send_problem(
    scope: Scope,
    send: Send,
    *,
    status: int,
    type_: str,
    title: str,
    detail: str,
    headers: dict[str, str] | None = None,
) -> None:
    """The same problem document from pure ASGI middleware (outside the route handlers)."""
    payload = json.dumps(
        problem_body(status=status, type_=type_, title=title, detail=detail, instance=scope["path"])
    ).encode()
    raw_headers = [
        (b"content-type", PROBLEM_JSON.encode()),
        (b"content-length", str(len(payload)).encode()),
        *((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": payload})


async def _app_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AppError)
    response = problem(
        request,
        status=exc.status,
        type_=exc.type,
        title=exc.title,
        detail=exc.detail,
        extensions=exc.extensions,
    )
    response.headers.update(exc.headers)
    return response


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
        for e in exc.errors()
    ]
    detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors)
    return problem(
        request,
        status=422,
        type_="validation-error",
        title="Request validation failed",
        detail=detail,
        extensions={"errors": errors},
    )


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    phrase = HTTPStatus(exc.status_code).phrase
    response = problem(
        request,
        status=exc.status_code,
        type_=phrase.lower().replace(" ", "-"),
        title=phrase,
        detail=str(exc.detail),
    )
    for name, value in (exc.headers or {}).items():
        response.headers[name] = value
    return response


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    """503 only when the database is unreachable; a constraint violation is a conflict (a
    concurrent change), and anything else a bug (500), not an outage to retry."""
    if isinstance(exc, IntegrityError):
        log.warning("integrity error on %s: %s", request.url.path, exc.orig)
        return problem(
            request,
            status=Conflict.status,
            type_=Conflict.type,
            title=Conflict.title,
            detail="The request conflicts with a concurrent change; read the resource again "
            "and retry.",
        )
    unreachable = isinstance(exc, OperationalError | InterfaceError) or (
        isinstance(exc, DBAPIError) and exc.connection_invalidated
    )
    if not unreachable:
        return await _unexpected(request, exc)
    log.warning("database error on %s: %s", request.url.path, type(exc).__name__)
    response = problem(
        request,
        status=503,
        type_="service-unavailable",
        title="A backing service is unavailable",
        detail="The database is not reachable right now; retry shortly.",
    )
    response.headers["Retry-After"] = "5"
    return response


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    # Logged with the trace for operators; the caller gets no internals.
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return problem(
        request,
        status=500,
        type_="internal-error",
        title="Internal error",
        detail="The server failed to process the request; it has been logged.",
    )


PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "description": "RFC 9457 problem details; extensions (e.g. `errors`, `job_id`) may follow.",
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string", "format": "uri"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
    },
    "additionalProperties": True,
}


def document_problems(app: FastAPI) -> None:
    """Describe every 4xx/5xx response in the OpenAPI document as it is sent: problem+json.

    FastAPI documents its validation errors as `application/json`; clients generated from
    the schema (and schemathesis) would otherwise expect a body the API never sends.
    """

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        schema.setdefault("components", {}).setdefault("schemas", {})["Problem"] = PROBLEM_SCHEMA
        problem_ref = {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                for code, response in operation.get("responses", {}).items():
                    if code[:1] in ("4", "5"):
                        response["content"] = problem_ref
                        response["description"] = HTTPStatus(int(code)).phrase
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def register_problem_handlers(app: FastAPI) -> None:
    app.add_exception_handler(AppError, _app_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(DBAPIError, _database_error)
    app.add_exception_handler(Exception, _unexpected)
    document_problems(app)
