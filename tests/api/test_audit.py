"""Audit log: job actions are recorded with the acting key, readable by admins only."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy.orm import Session, sessionmaker

from cli.stack import Stack
from shared.db.models import AuditEvent
from tests.conftest import FIXTURES, KeyFactory, client_for
from tests.fixtures.datasets import pneumonia_tiny_zip

PNG = FIXTURES / "pneumoniamnist" / "test_0001_normal.png"


def _submit(client: httpx.Client) -> httpx.Response:
    files = [("files", ("x.png", PNG.read_bytes(), "image/png"))]
    return client.post("/v1/jobs", data={"model": "pneumonia-resnet18"}, files=files)


def _events(api: httpx.Client, **params: str) -> list[dict]:
    response = api.get("/v1/audit", params=params)
    assert response.status_code == 200, response.text
    items: list[dict] = response.json()["items"]
    return items


def test_job_create_read_cancel_are_audited_with_key_and_request_id(
    stack: Stack, api: httpx.Client, make_key: KeyFactory
) -> None:
    tenant = f"audit-{uuid.uuid4().hex[:6]}"
    key = make_key(tenant=tenant)
    prefix = key.split("_")[1]
    with client_for(stack, key) as client:
        created = _submit(client)
        assert created.status_code == 202, created.text
        job_id = created.json()["id"]
        assert client.get(f"/v1/jobs/{job_id}").status_code == 200
        client.post(f"/v1/jobs/{job_id}/cancel")  # 200, or 409 if it already finished

    events = _events(api, tenant=tenant)
    by_action = {e["action"]: e for e in events}
    assert {"job.create", "job.read"} <= set(by_action)
    create = by_action["job.create"]
    assert create["tenant"] == tenant and create["key_prefix"] == prefix
    assert create["resource_type"] == "job" and create["resource_id"] == job_id
    assert create["detail"] == {"model": "pneumonia-resnet18:1", "images": 1}
    assert create["request_id"] == created.headers["x-request-id"]
    assert "x.png" not in str(events)  # file names may hold patient names
    only_reads = _events(api, tenant=tenant, action="job.read")
    assert only_reads and all(e["action"] == "job.read" for e in only_reads)
    assert len(_events(api, tenant=tenant, action="job.*")) == len(events)
    assert _events(api, resource_type="job", resource_id=job_id)


def test_audit_is_admin_only(stack: Stack, make_key: KeyFactory) -> None:
    with client_for(stack, make_key(scopes=("jobs:write", "jobs:read", "models:admin"))) as c:
        response = c.get("/v1/audit")
    assert response.status_code == 403
    assert response.headers["content-type"] == "application/problem+json"


def test_audit_pages_with_a_stable_cursor_and_time_window(
    api: httpx.Client, db: sessionmaker[Session]
) -> None:
    tenant_events = [
        AuditEvent(
            action="test.page",
            resource_type="test",
            resource_id=str(i),
            created_at=datetime(2031, 1, 1, tzinfo=UTC) + timedelta(seconds=i % 3),
            detail={},
        )
        for i in range(7)
    ]
    with db() as session:
        session.add_all(tenant_events)
        session.commit()
    seen: list[str] = []
    cursor = None
    while True:
        params = {"action": "test.page", "limit": "3", **({"cursor": cursor} if cursor else {})}
        page = api.get("/v1/audit", params=params).json()
        seen += [e["resource_id"] for e in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == [str(i) for i in range(7)] and len(seen) == 7
    window = _events(
        api,
        action="test.page",
        since="2031-01-01T00:00:01Z",
        until="2031-01-01T00:00:02Z",
    )
    assert sorted(e["resource_id"] for e in window) == ["1", "4"]
    bad = api.get("/v1/audit", params={"cursor": "not-a-cursor"})
    assert bad.status_code == 422
    # No clean-up: audit rows are append-only in the database (tests/api/test_audit_chain.py).


def test_dataset_upload_is_audited(stack: Stack, api: httpx.Client, make_key: KeyFactory) -> None:
    tenant = f"audit-ds-{uuid.uuid4().hex[:6]}"
    with client_for(stack, make_key(tenant=tenant, scopes=("train",))) as client:
        files = {"file": ("tiny.zip", pneumonia_tiny_zip(), "application/zip")}
        created = client.post("/v1/datasets", data={"name": "audited"}, files=files)
        assert created.status_code == 202, created.text
    (event,) = _events(api, tenant=tenant, action="dataset.create")
    assert event["resource_type"] == "dataset"
    assert event["detail"]["version"] == created.json()["version"]
    assert event["request_id"] == created.headers["x-request-id"]
