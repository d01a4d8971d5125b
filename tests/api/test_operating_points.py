"""target_sensitivity on the bundled pneumonia-resnet18, through the real stack.

The expected operating point is read from the shipped model card's validation ROC, so the
test checks that the API and the worker pick the point the card documents.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from cli.stack import Stack
from tests.conftest import FIXTURES, KeyFactory, client_for, wait_for_job

MODEL = "pneumonia-resnet18"
CARD = Path(__file__).resolve().parents[2] / "models" / MODEL / "card.json"
IMAGES = sorted((FIXTURES / "pneumoniamnist").glob("test_*.png"))


def _files() -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("files", (p.name, p.read_bytes(), "image/png")) for p in IMAGES]


def _submit(client: httpx.Client, **form: str) -> httpx.Response:
    return client.post("/v1/jobs", data={"model": MODEL, **form}, files=_files())


def _validation_point(target: float) -> dict[str, Any]:
    """The highest validation-ROC threshold reaching `target`, read straight from the card."""
    roc = json.loads(CARD.read_text())["validation_roc"]
    return max((p for p in roc if p["sensitivity"] >= target), key=lambda p: p["threshold"])


def _assert_labels_follow(job: dict[str, Any], threshold: float) -> None:
    assert job["status"] == "succeeded", job
    assert len(job["images"]) == len(IMAGES)
    for image in job["images"]:
        out = image["output"]
        assert out["operating_point"]["threshold"] == threshold
        positive = out["probabilities"]["pneumonia"] >= threshold
        assert out["label"] == ("pneumonia" if positive else "normal"), out


@pytest.mark.parametrize("how", ["params", "form field"])
def test_target_sensitivity_picks_the_validation_point(api: httpx.Client, how: str) -> None:
    form = (
        {"params": json.dumps({"target_sensitivity": 0.95})}
        if how == "params"
        else {"target_sensitivity": "0.95"}
    )
    response = _submit(api, **form)
    assert response.status_code == 202, response.text
    job = wait_for_job(api, response.json()["id"])

    expected = _validation_point(0.95)
    assert expected["threshold"] == pytest.approx(0.1263, abs=5e-5)  # what the card documents
    point = job["images"][0]["output"]["operating_point"]
    assert point["threshold"] == pytest.approx(expected["threshold"])
    assert point["sensitivity"] == expected["sensitivity"] >= 0.95
    assert point["specificity"] == expected["specificity"]
    assert "validation" in point["source"]
    assert job["params"] == {"target_sensitivity": 0.95}
    _assert_labels_follow(job, point["threshold"])


def test_a_lower_target_gives_a_lower_threshold_and_no_fewer_positives(
    api: httpx.Client,
) -> None:
    jobs = {
        target: wait_for_job(
            api, _submit(api, target_sensitivity=str(target)).raise_for_status().json()["id"]
        )
        for target in (0.5, 0.99)
    }
    low, high = (jobs[t]["images"][0]["output"]["operating_point"] for t in (0.5, 0.99))
    assert low["threshold"] > high["threshold"]  # more sensitivity needs a lower threshold
    assert low["sensitivity"] < high["sensitivity"]
    assert low["specificity"] >= high["specificity"]

    def positives(job: dict[str, Any]) -> int:
        return sum(i["output"]["label"] == "pneumonia" for i in job["images"])

    assert positives(jobs[0.99]) >= positives(jobs[0.5])
    for target, job in jobs.items():
        _assert_labels_follow(job, _validation_point(target)["threshold"])


REFUSED = {
    "target 0 (form)": {"target_sensitivity": "0"},
    "target above 1 (form)": {"target_sensitivity": "1.5"},
    "negative target (form)": {"target_sensitivity": "-0.2"},
    "not a number (form)": {"target_sensitivity": "high"},
    "target above 1 (params)": {"params": '{"target_sensitivity": 1.01}'},
    "target 0 (params)": {"params": '{"target_sensitivity": 0}'},
    "with threshold (params)": {"params": '{"threshold": 0.3, "target_sensitivity": 0.95}'},
    "with threshold (params + form)": {
        "params": '{"threshold": 0.3}',
        "target_sensitivity": "0.95",
    },
}


@pytest.mark.parametrize("form", REFUSED.values(), ids=REFUSED.keys())
def test_bad_target_sensitivity_is_422_and_stores_nothing(
    stack: Stack, make_key: KeyFactory, form: dict[str, str]
) -> None:
    tenant = f"op-{uuid.uuid4().hex[:8]}"  # a fresh tenant: its job list must stay empty
    with client_for(stack, make_key(tenant=tenant)) as client:
        response = _submit(client, **form)
        assert response.status_code == 422, response.text
        assert response.headers["content-type"] == "application/problem+json"
        body = response.json()
        assert body["status"] == 422 and body["detail"]
        assert "Traceback" not in body["detail"]
        if "threshold" in form.get("params", ""):
            assert "threshold" in body["detail"] and "target_sensitivity" in body["detail"]
        assert client.get("/v1/jobs").raise_for_status().json()["items"] == []
