"""Issue 10 items 6, 8 and 10 on the real stack: authentication before the body, failed-auth
rate limit, key expiry, replays re-checking the key, security headers, body limits, audited
reads, per-tenant quotas and the /metrics token."""

from __future__ import annotations

import concurrent.futures
import io
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import numpy as np
import psutil
import pytest
import redis
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from api.main import create_app
from cli.stack import Stack
from shared.apikeys import create_key, revoke_key
from shared.config import Settings
from shared.db.base import utcnow
from shared.db.models import AuditEvent, Tenant
from tests.conftest import FIXTURES, KeyFactory, client_for, wait_for_job

MODEL = "pneumonia-resnet18"
DICOM = FIXTURES / "pneumoniamnist" / "test_0000_pneumonia.dcm"
BOGUS = "mk_deadbeef_" + "x" * 40


@pytest.fixture
def fresh_failure_bucket(stack: Stack) -> Iterator[None]:
    """Tests here spend the loopback address's failed-auth budget; give it back after."""
    client = redis.Redis.from_url(stack.env["REDIS_URL"])
    client.delete("authfail:127.0.0.1")
    yield
    client.delete("authfail:127.0.0.1")
    client.close()


def _png(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (48, 48), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def _events(db: sessionmaker[Session], action: str, resource_id: str | None = None) -> list[Any]:
    with db() as session:
        query = select(AuditEvent).where(AuditEvent.action == action)
        if resource_id is not None:
            query = query.where(AuditEvent.resource_id == resource_id)
        return list(session.scalars(query))


def _big_body(total: int, chunk: int = 1024 * 1024) -> Iterator[bytes]:
    block = b"\0" * chunk
    for _ in range(total // chunk):
        yield block


def _post_with_bogus_key(stack: Stack, size: int) -> int | str:
    """A large upload with an invalid key: its status, or how the server cut it off."""
    headers = {
        "Authorization": f"Bearer {BOGUS}",
        "Content-Type": "multipart/form-data; boundary=x",
        "Content-Length": str(size),
        "Idempotency-Key": uuid.uuid4().hex,
    }
    try:
        with httpx.Client(base_url=stack.api_url, timeout=30) as client:
            return client.post("/v1/jobs", content=_big_body(size), headers=headers).status_code
    except (httpx.WriteError, httpx.RemoteProtocolError, httpx.ReadError) as exc:
        return type(exc).__name__  # the server answered 401 and closed: it read no more


def test_invalid_key_bursts_are_refused_before_the_body_and_leave_memory_flat(
    stack: Stack, api: httpx.Client, db: sessionmaker[Session], fresh_failure_bucket: None
) -> None:
    api_process = psutil.Process(stack.processes["api"].pid)
    before = api_process.memory_info().rss
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        outcomes = list(pool.map(lambda _: _post_with_bogus_key(stack, 200 * 2**20), range(6)))
    elapsed = time.monotonic() - started
    assert all(o in (401, "WriteError", "RemoteProtocolError", "ReadError") for o in outcomes)
    # 1.2 GB were offered; reading them would take far longer than refusing them.
    assert elapsed < 20, elapsed
    grown = api_process.memory_info().rss - before
    assert grown < 40 * 2**20, f"API grew by {grown / 2**20:.0f} MiB"
    assert api.get("/v1/me").status_code == 200  # valid requests are still served
    failures = [e for e in _events(db, "auth.fail") if e.detail and e.detail["path"] == "/v1/jobs"]
    assert failures and all("x" * 40 not in str(e.detail) for e in failures)
    with db() as session:  # no idempotency row for an unauthenticated request
        from shared.db.models import IdempotencyRecord

        assert not session.scalars(
            select(IdempotencyRecord).where(IdempotencyRecord.owner.like("%deadbeef%"))
        ).all()


def test_failed_authentications_are_rate_limited_per_address(
    stack: Stack, api: httpx.Client, fresh_failure_bucket: None
) -> None:
    with client_for(stack, BOGUS) as bogus:
        statuses = [bogus.get("/v1/me").status_code for _ in range(30)]
        limited = bogus.get("/v1/me")
    assert statuses[0] == 401
    assert 429 in statuses
    assert limited.status_code == 429
    assert int(limited.headers["Retry-After"]) >= 1
    assert limited.headers["content-type"] == "application/problem+json"
    assert api.get("/v1/me").status_code == 200  # a valid key is not locked out


def test_expired_key_is_refused_as_expired(
    stack: Stack, db: sessionmaker[Session], fresh_failure_bucket: None
) -> None:
    with db() as session:
        _, expired = create_key(
            session, tenant="default", name="expired", scopes=["jobs:read"],
            expires_at=utcnow() - timedelta(minutes=1),
        )  # fmt: skip
        _, valid = create_key(
            session, tenant="default", name="not-yet", scopes=["jobs:read"],
            expires_at=utcnow() + timedelta(days=1),
        )  # fmt: skip
        session.commit()
    with client_for(stack, expired) as client:
        response = client.get("/v1/me")
    assert response.status_code == 401
    assert response.json()["type"].endswith("key-expired")
    with client_for(stack, valid) as client:
        assert client.get("/v1/me").status_code == 200


def test_idempotent_replay_rechecks_the_key(
    stack: Stack, make_key: KeyFactory, db: sessionmaker[Session], fresh_failure_bucket: None
) -> None:
    key = make_key()
    headers = {"Idempotency-Key": uuid.uuid4().hex}
    files = [("files", (DICOM.name, DICOM.read_bytes(), "application/dicom"))]
    with client_for(stack, key) as client:
        first = client.post("/v1/jobs", data={"model": MODEL}, files=files, headers=headers)
        assert first.status_code == 202
        with db() as session:
            revoke_key(session, key.split("_")[1])
            session.commit()
        time.sleep(0.5)  # the NOTIFY reaches the API's cache
        replay = client.post("/v1/jobs", data={"model": MODEL}, files=files, headers=headers)
    assert replay.status_code == 401
    assert "idempotent-replayed" not in {k.lower() for k in replay.headers}


def test_security_headers(stack: Stack, api: httpx.Client) -> None:
    response = api.get("/v1/me")
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["cache-control"] == "no-store"
    assert "default-src 'none'" in response.headers["content-security-policy"]
    assert "strict-transport-security" not in response.headers  # plain http
    # Behind a TLS proxy uvicorn trusts (loopback by default), HSTS is sent.
    behind_tls = api.get("/v1/me", headers={"X-Forwarded-Proto": "https"})
    assert behind_tls.headers["strict-transport-security"].startswith("max-age=")
    app_page = httpx.get(f"{stack.api_url}/")
    assert "unsafe-inline" not in app_page.headers["content-security-policy"]


def test_json_bodies_have_their_own_limit(api: httpx.Client) -> None:
    body = b'{"name": "' + b"a" * (9 * 2**20) + b'"}'
    response = api.post(
        "/v1/dicom/calling-aes", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413
    assert "JSON body" in response.json()["detail"]


def test_reads_of_patient_data_and_of_the_audit_log_are_audited(
    api: httpx.Client, db: sessionmaker[Session]
) -> None:
    files = [("files", (DICOM.name, DICOM.read_bytes(), "application/dicom"))]
    job = api.post("/v1/jobs", data={"model": MODEL, "explain": "gradcam"}, files=files).json()
    wait_for_job(api, job["id"])
    assert api.get(f"/v1/jobs/{job['id']}/images/0/preview.png").status_code == 200
    (artifact, *_) = api.get(f"/v1/jobs/{job['id']}/artifacts").json()["items"]
    assert api.get(artifact["url"]).status_code == 200
    assert api.get("/v1/audit", params={"action": "job.*"}).status_code == 200
    assert len(_events(db, "job.image.read", job["id"])) == 1
    (download,) = _events(db, "job.artifact.read", job["id"])
    assert download.detail["name"] == artifact["name"]
    assert _events(db, "audit.read")
    # A refused read (another job id) records nothing.
    assert api.get(f"/v1/jobs/{uuid.uuid4()}/images/0/preview.png").status_code == 404


def test_tenant_quotas_on_active_and_stat_jobs(
    stack: Stack, api: httpx.Client, make_key: KeyFactory, db: sessionmaker[Session]
) -> None:
    tenant_name = f"quota-{uuid.uuid4().hex[:6]}"
    key = make_key(tenant=tenant_name, scopes=("admin",))
    with db() as session:
        tenant_id = session.scalar(select(Tenant.id).where(Tenant.name == tenant_name))
    files = [("files", (DICOM.name, DICOM.read_bytes(), "application/dicom"))]
    # The gpu queue has no worker in the test stack: jobs stay queued (active).
    form = {"model": MODEL, "queue": "gpu"}
    with client_for(stack, key) as client:
        # A tenant admin cannot raise its own quota.
        assert (
            client.patch(
                f"/v1/tenants/{tenant_id}/quotas",
                json={"max_active_jobs": 0, "max_active_stat_jobs": 0},
            ).status_code
            == 403
        )
        limits = {"max_active_jobs": 3, "max_active_stat_jobs": 1}
        updated = api.patch(f"/v1/tenants/{tenant_id}/quotas", json=limits)
        assert updated.status_code == 200 and updated.json()["max_active_stat_jobs"] == 1
        assert client.get("/v1/tenant").json()["max_active_jobs"] == 3
        stat = {**form, "priority": "stat"}
        accepted = [client.post("/v1/jobs", data=stat, files=files)]
        refused = client.post("/v1/jobs", data=stat, files=files)
        assert refused.status_code == 429, refused.text
        assert refused.json()["type"].endswith("quota-exceeded")
        assert refused.headers["Retry-After"]
        accepted += [client.post("/v1/jobs", data=form, files=files) for _ in range(2)]
        assert [r.status_code for r in accepted] == [202, 202, 202]
        assert client.post("/v1/jobs", data=form, files=files).status_code == 429
        # Cancelling frees the quota.
        client.post(f"/v1/jobs/{accepted[0].json()['id']}/cancel").raise_for_status()
        assert client.post("/v1/jobs", data=stat, files=files).status_code == 202
        for job in client.get("/v1/jobs", params={"status": "queued"}).json()["items"]:
            client.post(f"/v1/jobs/{job['id']}/cancel")
    assert _events(db, "tenant.update", str(tenant_id))


def test_metrics_token(stack: Stack) -> None:
    settings = Settings(
        database_url=stack.env["DATABASE_URL"],
        redis_url=stack.env["REDIS_URL"],
        data_dir=stack.config.data_dir,
        metrics_token="scrape-secret-0123456789",
    )
    with TestClient(create_app(settings)) as client:
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
        ok = client.get("/metrics", headers={"Authorization": "Bearer scrape-secret-0123456789"})
        assert ok.status_code == 200 and "medimg_jobs" in ok.text
