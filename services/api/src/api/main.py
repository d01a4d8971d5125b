"""The medimg REST API: `uvicorn api.main:create_app --factory`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from redis.asyncio import BlockingConnectionPool, Redis

from api import (
    callback_delivery,
    housekeeping,
    learning_scheduler,
    observability,
    openapi,
    reconciler,
)
from api.authn_gate import AuthnGateMiddleware
from api.idempotency import IdempotencyMiddleware
from api.limits import BodyLimitMiddleware
from api.observability import RequestContextMiddleware
from api.problems import register_problem_handlers
from api.read_audit import ReadAuditMiddleware
from api.routes import (
    artifacts,
    audit,
    callback_settings,
    datasets,
    deletion,
    dicom_nodes,
    feedback,
    fhir,
    health,
    jobs,
    learning,
    me,
    models,
    previews,
    results,
    tenants,
    training_jobs,
    web,
)
from api.security_headers import SecurityHeadersMiddleware
from shared.config import Settings, get_settings
from shared.db.session import make_async_engine, make_async_sessionmaker
from shared.logs import configure_logging
from shared.queueing import make_celery
from shared.storage import BlobStore

DESCRIPTION = """
Submit PNG, JPEG or DICOM images to registered models and poll the results.

Jobs are stored in PostgreSQL before they are queued; `GET /v1/jobs/{id}` always
answers from the database. Every error is `application/problem+json` (RFC 9457).
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = make_async_engine(settings.require_database_url())
        app.state.settings = settings
        app.state.engine = engine
        app.state.sessionmaker = make_async_sessionmaker(engine)
        app.state.celery = make_celery("api", settings.require_redis_url())
        app.state.store = BlobStore(settings.store_path)
        # A bounded pool that makes bursts wait their turn: every request takes a connection
        # for its rate-limit counter, and an unbounded burst would fail with "too many
        # connections" instead of queueing.
        app.state.redis = Redis(
            connection_pool=BlockingConnectionPool.from_url(
                settings.require_redis_url(), max_connections=64, timeout=10
            )
        )
        reconciling = reconciler.start(app)
        scheduling = learning_scheduler.start(app)  # one leader per pass (advisory lock), issue 17
        delivering = callback_delivery.start(app)
        expiring = housekeeping.start(app)
        yield
        await housekeeping.stop(delivering)
        await housekeeping.stop(expiring)
        await reconciler.stop(reconciling)
        await learning_scheduler.stop(scheduling)
        await app.state.redis.aclose()
        await app.state.redis.connection_pool.disconnect()  # a pool we made, ours to close
        if getattr(app.state, "job_events", None) is not None:  # long-poll listener
            await app.state.job_events.close()
        if getattr(app.state, "key_revocations", None) is not None:  # api.authn_gate
            await app.state.key_revocations.close()
        await engine.dispose()

    configure_logging(settings.log_level, json_logs=settings.json_logs)
    app = FastAPI(
        title="medimg",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        # Served offline by api.routes.web (vendored Swagger UI and ReDoc, no CDN).
        docs_url=None,
        redoc_url=None,
    )
    register_problem_handlers(app)
    # Innermost first. Authentication comes before anything reads a body (limits, idempotency).
    app.add_middleware(IdempotencyMiddleware)
    app.add_middleware(BodyLimitMiddleware, settings=settings)
    app.add_middleware(ReadAuditMiddleware)  # needs the principal the gate leaves
    app.add_middleware(AuthnGateMiddleware)
    app.add_middleware(
        SecurityHeadersMiddleware, hsts_max_age_seconds=settings.hsts_max_age_seconds
    )
    app.add_middleware(RequestContextMiddleware)  # outermost: ids and metrics for everything
    app.include_router(health.router)
    app.include_router(observability.router)
    app.include_router(jobs.router, prefix="/v1")
    app.include_router(feedback.router, prefix="/v1")
    app.include_router(dicom_nodes.router, prefix="/v1")
    app.include_router(datasets.router, prefix="/v1")
    app.include_router(training_jobs.router, prefix="/v1")
    app.include_router(artifacts.router, prefix="/v1")
    app.include_router(results.router, prefix="/v1")
    app.include_router(fhir.router, prefix="/v1")
    app.include_router(models.router, prefix="/v1")
    app.include_router(learning.router, prefix="/v1")
    app.include_router(audit.router, prefix="/v1")
    app.include_router(callback_settings.router, prefix="/v1")
    app.include_router(me.router, prefix="/v1")
    app.include_router(previews.router, prefix="/v1")
    app.include_router(deletion.router, prefix="/v1")
    app.include_router(tenants.router, prefix="/v1")
    web.install(app)  # the web app at /, /docs, /redoc, /static
    openapi.install(app)  # binary file parts, unique schema names (generated clients)
    return app
