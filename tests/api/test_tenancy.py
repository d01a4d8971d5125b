"""Tenant isolation of writes and the platform operator role (issue 10, items 1 and 4).

A tenant's keys (even `admin`) change only that tenant's models and read only its audit
events; shared models and every tenant's audit log belong to the platform operator
(`platform:admin`).
"""

from __future__ import annotations

import argparse
import json
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from cli.stack import Stack
from shared import apikeys
from shared.config import REPO_ROOT, psycopg_url
from shared.db.models import ApiKey, AuditEvent
from tests.conftest import KeyFactory, client_for, wait_for_job
from tests.factories import assert_problem, image_files, labelled_pngs

BUNDLED = REPO_ROOT / "models" / "pneumonia-resnet18"
CARD: dict[str, Any] = json.loads((BUNDLED / "card.json").read_text())


@pytest.fixture(scope="module")
def other_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    state = torch.load(BUNDLED / "weights.pt", weights_only=True)
    state = {k: v.clone() for k, v in state.items()}
    state["fc.bias"] += 0.5
    path = tmp_path_factory.mktemp("tenancy") / "other.pt"
    torch.save(state, path)
    return path


def _upload(client: httpx.Client, name: str, weights: Path, **form: str) -> httpx.Response:
    card = json.dumps({**CARD, "name": name})
    return client.post(
        "/v1/models",
        data={"card": card, **form},
        files={"weights": ("weights.pt", weights.read_bytes())},
    )


def _tenant() -> str:
    return f"tenancy-{uuid.uuid4().hex[:8]}"


def test_a_tenant_cannot_add_versions_to_another_tenants_model(
    stack: Stack, make_key: KeyFactory, other_weights: Path
) -> None:
    name = f"own-{uuid.uuid4().hex[:8]}"
    owner, intruder = _tenant(), _tenant()
    with (
        client_for(stack, make_key(owner, ("models:admin", "jobs:write"))) as b,
        client_for(stack, make_key(intruder, ("admin",))) as a,
    ):
        first = _upload(b, name, BUNDLED / "weights.pt")
        assert first.status_code == 201, first.text
        # A's admin key: new weights under B's name, and B's own weights again.
        assert_problem(_upload(a, name, other_weights), 409, "conflict")
        same = _upload(a, name, BUNDLED / "weights.pt")
        body = assert_problem(same, 409, "conflict")
        assert "card" not in body and "version" not in body  # B's card is not handed out
        assert b.get(f"/v1/models/{name}").json()["versions"] == [1]
        # B's jobs on the plain name still run B's own version (no production alias set).
        png = labelled_pngs()[0][0]
        created = b.post("/v1/jobs", data={"model": name}, files=image_files(png))
        assert created.status_code == 202, created.text
        job = wait_for_job(b, created.json()["id"])
        assert job["model"]["ref"] == f"{name}:1"
        # The owner itself may add a version.
        assert _upload(b, name, other_weights).status_code == 201


def test_shared_models_are_changed_only_by_the_platform_operator(
    stack: Stack, make_key: KeyFactory, api: httpx.Client, other_weights: Path
) -> None:
    shared = "pneumonia-resnet18"
    with client_for(stack, make_key(_tenant(), ("admin",))) as tenant_admin:
        for response in (
            tenant_admin.put(f"/v1/models/{shared}/aliases/tenancy", json={"version": 1}),
            tenant_admin.delete(f"/v1/models/{shared}/aliases/production"),
            tenant_admin.post(f"/v1/models/{shared}/deprecate", json={"reason": "mine now"}),
            tenant_admin.delete(f"/v1/models/{shared}/versions/1"),
            tenant_admin.delete(f"/v1/models/{shared}"),
            _upload(tenant_admin, shared, other_weights),
            _upload(tenant_admin, f"shared-{uuid.uuid4().hex[:6]}", other_weights, shared="true"),
        ):
            body = assert_problem(response, 403, "forbidden")
            assert body["required_scope"] == "platform:admin"
    model = api.get(f"/v1/models/{shared}").json()
    assert model["deprecated_at"] is None and model["deleted_at"] is None
    # The operator (the `api` fixture's key) may.
    assert api.put(f"/v1/models/{shared}/aliases/tenancy", json={"version": 1}).status_code == 200
    assert api.delete(f"/v1/models/{shared}/aliases/tenancy").status_code == 204


def test_tenant_admins_read_only_their_tenants_audit_events(
    stack: Stack, make_key: KeyFactory, api: httpx.Client
) -> None:
    mine, theirs = _tenant(), _tenant()
    png = labelled_pngs()[0][0]
    for tenant in (mine, theirs):
        with client_for(stack, make_key(tenant, ("jobs:write",))) as c:
            assert c.post("/v1/jobs", data={"model": "pneumonia-resnet18"},
                          files=image_files(png)).status_code == 202  # fmt: skip
    with client_for(stack, make_key(mine, ("admin",))) as admin:
        own = admin.get("/v1/audit", params={"limit": 500}).json()["items"]
        asked = admin.get("/v1/audit", params={"tenant": theirs}).json()["items"]
    assert own and {e["tenant"] for e in own} == {mine}
    assert asked == []
    operator_view = api.get("/v1/audit", params={"tenant": theirs}).json()["items"]
    assert operator_view and {e["tenant"] for e in operator_view} == {theirs}


def test_keys_create_platform_operator_grants_the_role_and_audits_it(
    stack: Stack, db: sessionmaker[Session], capsys: pytest.CaptureFixture[str]
) -> None:
    parser = argparse.ArgumentParser()
    apikeys.add_arguments(parser)
    name = f"ops-{uuid.uuid4().hex[:6]}"
    args = parser.parse_args(
        [
            "create",
            "--tenant",
            "operations",
            "--name",
            name,
            "--scopes",
            "admin",
            "--platform-operator",
        ]  # fmt: skip
    )
    assert apikeys.run(args, psycopg_url(stack.env["DATABASE_URL"])) == 0
    plaintext = capsys.readouterr().out.rsplit(": ", 1)[1].strip()
    with db() as session:
        key = session.scalar(select(ApiKey).where(ApiKey.name == name))
        assert key is not None and set(key.scopes) == {"admin", "platform:admin"}
        grant = session.scalar(
            select(AuditEvent).where(
                AuditEvent.action == "role.grant", AuditEvent.resource_id == key.prefix
            )
        )
        assert grant is not None and grant.detail["scope"] == "platform:admin"
    with client_for(stack, plaintext) as operator:
        assert operator.get("/v1/audit", params={"tenant": "default"}).status_code == 200
