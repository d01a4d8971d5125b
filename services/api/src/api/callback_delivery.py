"""Deliver job-completion callbacks from the outbox (`callback_delivery` rows).

Runs as a task in every API process, never in a worker: a slow or dead receiver costs an
HTTP connection here, never inference time. Each poll claims due rows with
`FOR UPDATE SKIP LOCKED` and pushes their `next_attempt_at` past the request timeout (a
lease), so several API replicas share the outbox and send each row once; a replica that
dies mid-request leaves the row to be retried when the lease ends. Each request runs in
its own task, so one slow receiver holds up no other delivery.

Before each attempt the URL is checked again (allow-list, then fresh DNS resolution) and
the request goes to the address that was checked, with the original Host header and TLS
server name: a DNS answer that changes after submission cannot point it inside the
cluster. Redirects are not followed and no proxy settings from the environment are used.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import socket
import ssl
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import certifi
import httpx
from fastapi import FastAPI
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.callbacks import (
    SIGNATURE_HEADER,
    SIGNATURES_HEADER,
    TIMESTAMP_HEADER,
    CallbackPolicy,
    check_addresses,
    parse_callback_url,
    sign,
    signature_header,
)
from shared.callbacks.tenants import TenantCallbackSettings, signing_secrets
from shared.config import Settings
from shared.db.base import utcnow
from shared.db.models import CallbackDelivery, DeliveryStatus
from shared.delivery.outbox import DELIVERY_KIND as DICOM_DELIVERY_KIND
from shared.errors import AppError

log = logging.getLogger(__name__)
MAX_IN_FLIGHT = 32
_ERROR_CHARS = 500


@dataclass(frozen=True)
class Claimed:
    id: uuid.UUID
    tenant_id: uuid.UUID
    owner_id: uuid.UUID
    url: str
    payload: dict[str, Any]
    attempts: int  # including this one


@dataclass(frozen=True)
class Outcome:
    error: str | None = None
    permanent: bool = False  # no retry: the URL itself is no longer allowed


def backoff_seconds(attempts: int, settings: Settings) -> float:
    """Exponential backoff with jitter, so receivers that were down are not stampeded."""
    delay: float = settings.callback_backoff_seconds * 2.0 ** (attempts - 1)
    return min(delay, settings.callback_backoff_max_seconds) * random.uniform(0.5, 1.0)


async def claim_due(
    sessionmaker: async_sessionmaker[AsyncSession], settings: Settings, limit: int
) -> list[Claimed]:
    lease = timedelta(seconds=settings.callback_timeout_seconds * 2 + 30)
    due = (
        select(CallbackDelivery.id)
        .where(
            CallbackDelivery.status == DeliveryStatus.PENDING,
            CallbackDelivery.next_attempt_at <= func.now(),
            # DICOM result deliveries share the outbox; the gateway sends those.
            CallbackDelivery.owner_kind != DICOM_DELIVERY_KIND,
        )
        .order_by(CallbackDelivery.next_attempt_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    async with sessionmaker() as session:
        rows = await session.execute(
            update(CallbackDelivery)
            .where(CallbackDelivery.id.in_(due.scalar_subquery()))
            .values(
                next_attempt_at=func.now() + lease,
                attempts=CallbackDelivery.attempts + 1,
            )
            .returning(
                CallbackDelivery.id,
                CallbackDelivery.tenant_id,
                CallbackDelivery.owner_id,
                CallbackDelivery.url,
                CallbackDelivery.payload,
                CallbackDelivery.attempts,
            )
        )
        claimed = [Claimed(*row) for row in rows.all()]
        await session.commit()
    return claimed


def body_of(item: Claimed, settings: Settings) -> bytes:
    # The tenant id is signed with the body: a receiver serving several tenants can tell
    # whose callback it got, and one tenant's signature never vouches for another's body.
    body = dict(item.payload, delivery_id=str(item.id), tenant_id=str(item.tenant_id))
    if settings.public_url:
        body["result_url"] = settings.public_url.rstrip("/") + item.payload["result_path"]
    return json.dumps(body, separators=(",", ":"), sort_keys=True).encode()


async def tenant_settings(
    sessionmaker: async_sessionmaker[AsyncSession], tenant_id: uuid.UUID
) -> TenantCallbackSettings | None:
    async with sessionmaker() as session:
        return await session.get(TenantCallbackSettings, tenant_id)


async def send(
    client: httpx.AsyncClient,
    item: Claimed,
    policy: CallbackPolicy,
    settings: Settings,
    tenant: TenantCallbackSettings | None = None,
) -> Outcome:
    """One attempt: re-check the URL (server and tenant allow-lists), resolve, POST to the
    checked address, signed with the tenant's current (and, while rotating, previous) secret."""
    try:
        target = parse_callback_url(item.url, policy, tenant.allowed_hosts if tenant else None)
    except AppError as exc:
        return Outcome(exc.detail, permanent=True)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            target.host, target.port, type=socket.SOCK_STREAM
        )
        address = check_addresses(target, [str(i[4][0]) for i in infos], policy)[0]
    except (OSError, UnicodeError) as exc:
        return Outcome(f"cannot resolve {target.host}: {exc}")
    except AppError as exc:
        return Outcome(exc.detail)
    body = body_of(item, settings)
    timestamp = int(time.time())
    assert settings.callback_secret is not None  # Settings refuses callbacks without one
    secrets = signing_secrets(
        settings.callback_secret.get_secret_value(), item.tenant_id, tenant, utcnow()
    )
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "medimg-callbacks/1",
        "Host": httpx.URL(item.url).netloc.decode("ascii"),
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: sign(secrets[0], timestamp, body),
        SIGNATURES_HEADER: signature_header(secrets, timestamp, body),
    }
    pinned = httpx.URL(item.url).copy_with(host=str(address))
    extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
    try:
        response = await client.post(pinned, content=body, headers=headers, extensions=extensions)
    except httpx.HTTPError as exc:
        return Outcome(f"{type(exc).__name__}: {exc}"[:_ERROR_CHARS] or type(exc).__name__)
    if response.is_success:
        return Outcome()
    return Outcome(f"HTTP {response.status_code} from the receiver")


async def record(
    sessionmaker: async_sessionmaker[AsyncSession],
    item: Claimed,
    outcome: Outcome,
    settings: Settings,
) -> None:
    values: dict[str, Any]
    if outcome.error is None:
        values = {"status": DeliveryStatus.DELIVERED, "delivered_at": utcnow(), "last_error": None}
    elif outcome.permanent or item.attempts >= settings.callback_max_attempts:
        values = {"status": DeliveryStatus.FAILED, "last_error": outcome.error}
    else:
        retry_at = utcnow() + timedelta(seconds=backoff_seconds(item.attempts, settings))
        values = {"next_attempt_at": retry_at, "last_error": outcome.error}
    async with sessionmaker() as session:
        await session.execute(
            update(CallbackDelivery).where(CallbackDelivery.id == item.id).values(**values)
        )
        await session.commit()
    log.info(
        "callback attempt",
        extra={
            "delivery_id": str(item.id),
            "owner_id": str(item.owner_id),
            "attempt": item.attempts,
            "outcome": "delivered" if outcome.error is None else values.get("status", "retry"),
            "error": outcome.error,
        },
    )


async def deliver(
    client: httpx.AsyncClient,
    sessionmaker: async_sessionmaker[AsyncSession],
    item: Claimed,
    policy: CallbackPolicy,
    settings: Settings,
) -> None:
    try:
        tenant = await tenant_settings(sessionmaker, item.tenant_id)
    except Exception as exc:  # database down: retried like a receiver that was down
        outcome = Outcome(f"tenant callback settings unavailable: {type(exc).__name__}")
    else:
        outcome = await send(client, item, policy, settings, tenant)
    await record(sessionmaker, item, outcome, settings)


def tls_context(settings: Settings) -> ssl.SSLContext:
    """Public CAs (certifi), plus MEDIMG_CALLBACK_CA_FILE when set (an internal CA)."""
    context = ssl.create_default_context(cafile=certifi.where())
    if settings.callback_ca_file is not None:
        context.load_verify_locations(cafile=settings.callback_ca_file)
    return context


def make_client(settings: Settings) -> httpx.AsyncClient:
    """The delivery client: no redirects, no proxy or SSL_* settings from the environment."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(settings.callback_timeout_seconds),
        follow_redirects=False,
        trust_env=False,
        verify=tls_context(settings),
    )


async def run_forever(
    *, sessionmaker: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    """Poll the outbox until cancelled; a database outage only skips polls."""
    policy = CallbackPolicy.from_settings(settings)
    if not policy.enabled:
        return
    in_flight: set[asyncio.Task[None]] = set()
    async with make_client(settings) as c:
        try:
            while True:
                free = MAX_IN_FLIGHT - len(in_flight)
                if free > 0:
                    try:
                        claimed = await claim_due(sessionmaker, settings, free)
                    except Exception as exc:  # database down: the next poll tries again
                        log.warning("callback poll failed: %s: %s", type(exc).__name__, exc)
                        claimed = []
                    for item in claimed:
                        task = asyncio.create_task(deliver(c, sessionmaker, item, policy, settings))
                        in_flight.add(task)
                        task.add_done_callback(in_flight.discard)
                await asyncio.sleep(settings.callback_poll_seconds)
        finally:
            for task in in_flight:
                task.cancel()


def start(app: FastAPI) -> asyncio.Task[None]:
    """Run the delivery loop in the background of an API process (from its lifespan)."""
    state = app.state
    return asyncio.create_task(
        run_forever(sessionmaker=state.sessionmaker, settings=state.settings),
        name="callback-delivery",
    )
