"""Per-tenant callback secrets and allow-lists, against a real local HTTP receiver.

The receiver verifies every callback as a customer's would: `Medimg-Signature` with the
secret(s) it holds, and the tenant id inside the signed body.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from cli.stack import Stack
from shared.callbacks import verify, verify_header
from shared.callbacks.tenants import derive_secret, tenant_allows_host
from tests.conftest import CALLBACK_SECRET, FIXTURES, KeyFactory, client_for, wait_for_job

PNG = FIXTURES / "pneumoniamnist" / "test_0001_normal.png"
RECEIVER_HOST = "127.0.0.2"  # allow-listed by the server (tests/conftest.py)


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    port: int = 0
    requests: list[Received] = field(default_factory=list)

    def url(self, path: str) -> str:
        return f"http://{RECEIVER_HOST}:{self.port}{path}"

    def one(self, path: str, timeout: float = 60) -> Received:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = [r for r in self.requests if r.path == path]
            if got:
                return got[0]
            time.sleep(0.05)
        raise AssertionError(f"no callback to {path} in {timeout}s")


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            headers = {k.lower(): v for k, v in self.headers.items()}
            state.requests.append(Received(self.path, headers, body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer((RECEIVER_HOST, 0), Handler)
    server.daemon_threads = True
    state.port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield state
    server.shutdown()


@dataclass
class Tenant:
    client: httpx.Client
    id: str


def _tenant(stack: Stack, make_key: KeyFactory, name: str) -> Tenant:
    client = client_for(stack, make_key(tenant=name, scopes=("admin",)))
    return Tenant(client, client.get("/v1/me").raise_for_status().json()["tenant_id"])


@pytest.fixture(scope="module")
def tenant_a(stack: Stack, make_key: KeyFactory) -> Tenant:
    return _tenant(stack, make_key, f"cb-a-{uuid.uuid4().hex[:6]}")


@pytest.fixture(scope="module")
def tenant_b(stack: Stack, make_key: KeyFactory) -> Tenant:
    return _tenant(stack, make_key, f"cb-b-{uuid.uuid4().hex[:6]}")


def _rotate(tenant: Tenant, previous_valid_seconds: int) -> str:
    response = tenant.client.post(
        "/v1/tenant/callbacks/secret/rotate",
        json={"previous_valid_seconds": previous_valid_seconds},
    )
    assert response.status_code == 201, response.text
    assert response.headers["cache-control"] == "no-store"
    secret: str = response.json()["secret"]
    assert len(secret) == 64
    return secret


def _callback(tenant: Tenant, receiver: Receiver, path: str) -> Received:
    files = [("files", (PNG.name, PNG.read_bytes(), "image/png"))]
    data = {"model": "pneumonia-resnet18", "callback_url": receiver.url(path)}
    created = tenant.client.post("/v1/jobs", data=data, files=files)
    assert created.status_code == 202, created.text
    wait_for_job(tenant.client, created.json()["id"])
    return receiver.one(path)


def _valid(request: Received, *secrets: str) -> bool:
    return verify_header(secrets, request.headers["medimg-signature"], request.body)


def test_rotation_keeps_two_secrets_valid_and_tenants_apart(
    tenant_a: Tenant, tenant_b: Tenant, receiver: Receiver
) -> None:
    assert tenant_a.client.get("/v1/tenant/callbacks").json() == {
        "secret_generation": 0,
        "previous_valid_until": None,
        "allowed_hosts": None,
    }
    # First own secret, no overlap: only it signs; the server's shared secret no longer does.
    a1 = _rotate(tenant_a, 0)
    first = _callback(tenant_a, receiver, "/a1")
    assert first.headers["medimg-signature"].count("v1=") == 1
    assert _valid(first, a1) and not _valid(first, CALLBACK_SECRET)
    body = json.loads(first.body)
    assert body["tenant_id"] == tenant_a.id  # inside what is signed
    tampered = first.body.replace(tenant_a.id.encode(), tenant_b.id.encode())
    assert not verify_header([a1], first.headers["medimg-signature"], tampered)

    # Rotation with an overlap: both signatures, either secret validates.
    a2 = _rotate(tenant_a, 3600)
    assert a2 != a1
    during = _callback(tenant_a, receiver, "/a2")
    assert during.headers["medimg-signature"].count("v1=") == 2
    assert _valid(during, a2) and _valid(during, a1)
    headers = during.headers  # the older single-signature headers carry the current secret
    assert verify(a2, headers["x-medimg-timestamp"], headers["x-medimg-signature"], during.body)
    settings = tenant_a.client.get("/v1/tenant/callbacks").json()
    assert settings["secret_generation"] == 2 and settings["previous_valid_until"]
    assert "secret" not in settings

    # Tenant B: its own secret; A's secrets (current and previous) never validate B's callbacks.
    b1 = _rotate(tenant_b, 3600)
    from_b = _callback(tenant_b, receiver, "/b1")
    assert json.loads(from_b.body)["tenant_id"] == tenant_b.id
    assert _valid(from_b, b1)
    assert not _valid(from_b, a1, a2)
    assert not _valid(during, b1)

    # Ending the overlap (rotate with 0): the previous secret stops validating.
    a3 = _rotate(tenant_a, 0)
    after = _callback(tenant_a, receiver, "/a3")
    assert _valid(after, a3) and not _valid(after, a2)


def test_tenant_allow_list_narrows_the_servers(tenant_a: Tenant, receiver: Receiver) -> None:
    url = "/v1/tenant/callbacks/allowed-hosts"
    refused = tenant_a.client.put(url, json={"allowed_hosts": ["not a host!"]})
    assert refused.status_code == 422 and refused.json()["field"] == "allowed_hosts"
    listed = tenant_a.client.put(url, json={"allowed_hosts": ["Hooks.Example.org."]})
    assert listed.status_code == 200 and listed.json()["allowed_hosts"] == ["hooks.example.org"]
    files = [("files", (PNG.name, PNG.read_bytes(), "image/png"))]
    data = {"model": "pneumonia-resnet18", "callback_url": receiver.url("/narrowed")}
    response = tenant_a.client.post("/v1/jobs", data=data, files=files)
    # The server allows 127.0.0.2, this tenant no longer does.
    assert response.status_code == 422, response.text
    assert "tenant's callback allow-list" in response.json()["detail"]
    tenant_a.client.put(url, json={"allowed_hosts": [RECEIVER_HOST]}).raise_for_status()
    response = tenant_a.client.post("/v1/jobs", data=data, files=files)
    assert response.status_code == 202, response.text
    tenant_a.client.put(url, json={"allowed_hosts": None}).raise_for_status()


def test_only_tenant_admins_change_callbacks_and_changes_are_audited(
    stack: Stack, make_key: KeyFactory, tenant_a: Tenant, tenant_b: Tenant
) -> None:
    writer = client_for(stack, make_key(tenant="cb-writer", scopes=("jobs:write", "jobs:read")))
    assert writer.post("/v1/tenant/callbacks/secret/rotate", json={}).status_code == 403
    assert writer.put("/v1/tenant/callbacks/allowed-hosts", json={}).status_code in (403, 422)
    _rotate(tenant_a, 0)
    events = tenant_a.client.get("/v1/audit", params={"action": "callback.*"}).json()["items"]
    actions = {e["action"] for e in events}
    assert {"callback.secret.rotate", "callback.allowed_hosts.update"} <= actions
    assert all(e["resource_id"] == tenant_a.id for e in events)  # tenant-scoped reads
    assert not any("secret" in json.dumps(e["detail"]) for e in events if e["detail"])


def test_secrets_are_derived_per_tenant_and_generation() -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    server = "s" * 32
    assert derive_secret(server, a, 0) == server  # never rotated: the server's secret
    secrets = {derive_secret(server, t, g) for t in (a, b) for g in (1, 2, 3)}
    assert len(secrets) == 6
    assert derive_secret(server, a, 1) != derive_secret("t" * 32, a, 1)
    assert tenant_allows_host(None, "anything.example.org")
    assert tenant_allows_host(["*.example.org"], "hooks.example.org")
    assert not tenant_allows_host(["*.example.org"], "example.org.evil.com")
    assert tenant_allows_host(["10.1.0.0/16"], "10.1.2.3")
    assert not tenant_allows_host(["10.1.0.0/16"], "hooks.example.org")
