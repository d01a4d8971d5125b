"""The learning loop's REST edges (issue 17) that need no training: refusals and problems."""

from __future__ import annotations

import uuid

import httpx
import pytest

from cli.stack import Stack
from tests.conftest import KeyFactory, client_for


@pytest.fixture(scope="module")
def admin(stack: Stack, make_key: KeyFactory) -> httpx.Client:
    return client_for(stack, make_key(tenant="learning-api", scopes=("admin",)))


def _problem(response: httpx.Response, status: int) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, object] = response.json()
    return body


def test_shared_and_untrained_models_get_no_line(admin: httpx.Client, api: httpx.Client) -> None:
    # A tenant admin may not change a shared model at all; an operator gets a clear 409.
    _problem(admin.put("/v1/models/pneumonia-resnet18/learning-policy", json={}), 403)
    shared = _problem(api.put("/v1/models/pneumonia-resnet18/learning-policy", json={}), 409)
    assert "shared by every tenant" in str(shared["detail"])
    _problem(admin.put("/v1/models/no-such-model/learning-policy", json={}), 404)


def test_reading_a_model_without_a_line_is_404(admin: httpx.Client) -> None:
    problem = _problem(admin.get("/v1/models/pneumonia-resnet18/learning"), 404)
    assert str(problem["type"]).endswith("model-line-not-found")
    _problem(admin.get("/v1/models/pneumonia-resnet18/generations"), 404)


def test_bad_policies_are_422(admin: httpx.Client) -> None:
    url = "/v1/models/pneumonia-resnet18/learning-policy"
    for body in (
        {"trigger": "hourly"},
        {"margin": -0.1},
        {"min_new_reviews": 0},
        {"promotion": "always"},
        {"unknown": 1},
    ):
        _problem(admin.put(url, json=body), 422)


def test_writes_need_admin(stack: Stack, make_key: KeyFactory) -> None:
    with client_for(stack, make_key(tenant="learning-api", scopes=("jobs:read",))) as reader:
        _problem(reader.put("/v1/models/x-model/learning-policy", json={}), 403)
        _problem(reader.post("/v1/models/x-model/generations", json={}), 403)
        _problem(reader.post("/v1/models/x-model/rollback"), 403)
        gen = uuid.uuid4()
        _problem(reader.post(f"/v1/models/x-model/generations/{gen}/approve", json={}), 403)


def test_rollback_without_history_is_409(api: httpx.Client) -> None:
    # The bundled model's production alias was set once, from nothing: nowhere to go back.
    problem = _problem(api.post("/v1/models/bccd-frcnn-efficientnet-lite0-fpn/rollback"), 409)
    assert "no earlier production version" in str(problem["detail"])
