"""Request ids, HTTP metrics and the /metrics endpoint of the API.

The middleware is plain ASGI (no BaseHTTPMiddleware): it sits on every request's hot path.
"""

from __future__ import annotations

import hmac
import time
import uuid
from typing import Any

from fastapi import APIRouter, Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from redis.asyncio import Redis
from sqlalchemy import func, select
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.training_gauges import training_families
from shared.db.models import Job
from shared.errors import Unauthorized
from shared.logs import client_request_id, request_id
from shared.queueing import PRIORITY_STEPS
from shared.tasks import Queue

HTTP_REQUESTS = Counter(
    "medimg_http_requests_total", "HTTP requests by route and status", ["method", "route", "status"]
)
HTTP_LATENCY = Histogram(
    "medimg_http_request_seconds",
    "HTTP request handling time",
    ["method", "route"],
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
)


class RequestContextMiddleware:
    """Give every request a server-generated id (X-Request-ID) and count it.

    A client's own X-Request-ID is kept apart (audit `client_request_id`, echoed back as
    X-Client-Request-ID): clients must not choose the id audit rows are correlated by.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        rid = uuid.uuid4().hex
        client_rid = headers.get(b"x-request-id", b"").decode("latin-1")[:64] or None
        token = request_id.set(rid)
        client_token = client_request_id.set(client_rid)
        echoed = [(b"x-request-id", rid.encode())]
        if client_rid:
            echoed.append((b"x-client-request-id", client_rid.encode("latin-1")))
        status = 500
        start = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), *echoed]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            path = route_template(scope)
            HTTP_REQUESTS.labels(scope["method"], path, str(status)).inc()
            HTTP_LATENCY.labels(scope["method"], path).observe(time.perf_counter() - start)
            request_id.reset(token)
            client_request_id.reset(client_token)


def route_template(scope: Scope) -> str:
    """`/v1/jobs/{job_id}` rather than the raw path: ids must not explode label space.

    Included routers report their route without the include prefix, so the prefix is
    recovered from the raw path.
    """
    template = getattr(scope.get("route"), "path_format", None)
    if template is None:
        return "unmatched"
    rendered = template
    for name, value in scope.get("path_params", {}).items():
        rendered = rendered.replace("{" + name + "}", str(value))
    path: str = scope["path"]
    return path[: len(path) - len(rendered)] + template if path.endswith(rendered) else template


router = APIRouter(tags=["health"])


async def _job_counts(request: Request) -> GaugeMetricFamily:
    gauge = GaugeMetricFamily(
        "medimg_jobs", "Jobs in the database by status and model", labels=["status", "model"]
    )
    async with request.app.state.sessionmaker() as session:
        rows = await session.execute(
            select(Job.status, Job.model_name, func.count()).group_by(Job.status, Job.model_name)
        )
        for status, model, count in rows.all():
            gauge.add_metric([status, model], count)
    return gauge


async def _training(request: Request) -> list[Any]:
    async with request.app.state.sessionmaker() as session:
        return await training_families(session)


async def _queue_depths(redis: Redis) -> GaugeMetricFamily:
    gauge = GaugeMetricFamily("medimg_queue_depth", "Messages waiting per queue", labels=["queue"])
    async with redis.pipeline(transaction=False) as pipe:
        for queue in Queue:
            for step in PRIORITY_STEPS:
                pipe.llen(queue.value if step == 0 else f"{queue.value}:{step}")
        lengths = await pipe.execute()
    per_queue = len(PRIORITY_STEPS)
    for i, queue in enumerate(Queue):
        gauge.add_metric([queue.value], sum(lengths[i * per_queue : (i + 1) * per_queue]))
    return gauge


class _Static:
    def __init__(self, families: list[Any]) -> None:
        self.families = families

    def collect(self) -> list[Any]:
        return self.families


def _check_metrics_token(request: Request) -> None:
    token = request.app.state.settings.metrics_token
    if token is None:
        return
    sent = request.headers.get("authorization", "")
    expected = f"Bearer {token.get_secret_value()}"
    if not hmac.compare_digest(sent.encode("latin-1"), expected.encode("latin-1")):
        raise Unauthorized(
            "/metrics needs the scrape token (MEDIMG_METRICS_TOKEN) as a bearer token"
        )


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    """Prometheus exposition: HTTP metrics plus job and queue gauges read at scrape time.

    Labels name models (a tenant's private model names among them): with
    MEDIMG_METRICS_TOKEN set, a scrape must send it as a bearer token.
    """
    _check_metrics_token(request)
    registry = CollectorRegistry()
    registry.register(
        _Static(
            [
                await _job_counts(request),
                await _queue_depths(request.app.state.redis),
                *await _training(request),
            ]
        )
    )
    body = generate_latest(REGISTRY) + generate_latest(registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
