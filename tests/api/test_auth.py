"""API keys, scopes, tenants and rate limits against the real stack."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import httpx
import pytest

from cli.stack import Stack
from tests.conftest import KeyFactory, client_for, wait_for_job
from tests.factories import MODEL, assert_problem, image_files, labelled_pngs, submit_job


def test_every_endpoint_but_health_metrics_and_docs_needs_a_key(stack: Stack) -> None:
    with client_for(stack, None) as anonymous:
        for path in ("/healthz", "/readyz", "/metrics", "/docs", "/openapi.json"):
            assert anonymous.get(path).status_code == 200, path
        for method, path in (
            ("GET", "/v1/jobs"),
            ("GET", f"/v1/jobs/{uuid.uuid4()}"),
            ("POST", "/v1/jobs"),
            ("POST", f"/v1/jobs/{uuid.uuid4()}/cancel"),
            ("GET", "/v1/models"),
            ("GET", f"/v1/models/{MODEL}"),
        ):
            response = anonymous.request(method, path)
            assert_problem(response, 401, "unauthorized")
            assert response.headers["www-authenticate"].startswith("Bearer")


def test_openapi_declares_the_bearer_scheme(stack: Stack) -> None:
    spec = httpx.get(f"{stack.api_url}/openapi.json").json()
    schemes = spec["components"]["securitySchemes"]
    assert any(s["type"] == "http" and s["scheme"] == "bearer" for s in schemes.values())
    assert spec["paths"]["/v1/jobs"]["post"]["security"]


@pytest.mark.parametrize("key", ["nonsense", "mk_12345678_not-the-secret", "mk__"])
def test_unknown_keys_are_401(stack: Stack, key: str) -> None:
    with client_for(stack, None) as c:
        response = c.get("/v1/jobs", headers={"Authorization": f"Bearer {key}"})
        assert_problem(response, 401, "unauthorized")


def test_scopes_are_enforced(stack: Stack, make_key: KeyFactory) -> None:
    path, _ = labelled_pngs()[0]
    with client_for(stack, make_key(scopes=("jobs:read",))) as reader:
        assert reader.get("/v1/jobs").status_code == 200
        body = assert_problem(submit_job(reader, image_files(path)), 403, "forbidden")
        assert body["required_scope"] == "jobs:write"
    with client_for(stack, make_key(scopes=("train",))) as trainer:
        assert_problem(trainer.get("/v1/jobs"), 403, "forbidden")


def test_tenants_see_only_their_own_jobs(stack: Stack, make_key: KeyFactory) -> None:
    path, _ = labelled_pngs()[0]
    with (
        client_for(stack, make_key(tenant="hospital-a")) as a,
        client_for(stack, make_key(tenant="hospital-b")) as b,
    ):
        job = wait_for_job(a, submit_job(a, image_files(path)).json()["id"])
        assert job["status"] == "succeeded"
        assert_problem(b.get(f"/v1/jobs/{job['id']}"), 404, "job-not-found")
        assert_problem(b.post(f"/v1/jobs/{job['id']}/cancel"), 404, "job-not-found")
        assert job["id"] not in {j["id"] for j in b.get("/v1/jobs").json()["items"]}
        assert job["id"] in {j["id"] for j in a.get("/v1/jobs").json()["items"]}
        # Shared (bundled) models are visible to both tenants.
        assert MODEL in {m["name"] for m in b.get("/v1/models").json()["items"]}


def test_revoked_key_stops_working(stack: Stack, make_key: KeyFactory) -> None:
    env = {**os.environ, "DATABASE_URL": stack.env["DATABASE_URL"]}
    cli = [sys.executable, "-m", "cli", "keys"]
    created = subprocess.run(
        [*cli, "create", "--tenant", "hospital-c", "--name", "pacs-bridge"],
        env=env, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    key = created.strip().splitlines()[-1].split(": ")[-1]
    prefix = key.split("_")[1]
    with client_for(stack, key) as c:
        assert c.get("/v1/jobs").status_code == 200
        listed = subprocess.run([*cli, "list"], env=env, capture_output=True, text=True).stdout
        assert prefix in listed and key not in listed  # never prints secrets
        subprocess.run([*cli, "revoke", prefix], env=env, check=True, capture_output=True)
        assert_problem(c.get("/v1/jobs"), 401, "unauthorized")
    listed = subprocess.run([*cli, "list"], env=env, capture_output=True, text=True).stdout
    assert any(prefix in line and "revoked" in line for line in listed.splitlines())


def test_rate_limit_answers_429_with_retry_after(stack: Stack, make_key: KeyFactory) -> None:
    with client_for(stack, make_key(rate_limit=5)) as c:
        # 20 requests: even split over two one-minute windows, one window exceeds 5.
        responses = [c.get("/v1/jobs") for _ in range(20)]
    assert responses[0].status_code == 200
    limited = [r for r in responses if r.status_code == 429]
    assert 10 <= len(limited) <= 15
    assert_problem(limited[0], 429, "rate-limited")
    assert 0 < int(limited[0].headers["retry-after"]) <= 60
