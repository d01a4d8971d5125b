"""Reviewers' feedback on job results (issue 17 item 1), against the real stack.

Jobs run on the bundled models; a `review` key confirms or corrects results; corrections
are new revisions (never overwritten), audited, and shown in the job view.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from cli.stack import Stack
from tests.conftest import FIXTURES, KeyFactory, client_for, wait_for_job

PNG = FIXTURES / "pneumoniamnist" / "test_0001_normal.png"
BCCD = next((FIXTURES / "datasets" / "bccd_tiny").rglob("*.jpg"))


@pytest.fixture(scope="module")
def submitter(stack: Stack, make_key: KeyFactory) -> httpx.Client:
    return client_for(stack, make_key(tenant="feedback", scopes=("jobs:write",)))


@pytest.fixture(scope="module")
def reviewer(stack: Stack, make_key: KeyFactory) -> httpx.Client:
    return client_for(stack, make_key(tenant="feedback", scopes=("review", "jobs:read")))


def _job(client: httpx.Client, model: str, name: str, data: bytes, kind: str) -> dict[str, Any]:
    response = client.post("/v1/jobs", data={"model": model}, files={"files": (name, data, kind)})
    assert response.status_code == 202, response.text
    job = wait_for_job(client, response.json()["id"])
    assert job["status"] == "succeeded", job
    return job


def test_confirm_then_correct_is_versioned_audited_and_shown(
    submitter: httpx.Client, reviewer: httpx.Client, api: httpx.Client
) -> None:
    job = _job(submitter, "pneumonia-resnet18", "x.png", PNG.read_bytes(), "image/png")
    predicted = job["images"][0]["output"]["label"]
    url = f"/v1/jobs/{job['id']}/images/0/feedback"

    first = reviewer.post(url, json={"kind": "confirm", "comment": "agree"})
    assert first.status_code == 201, first.text
    assert first.json()["label"] == predicted and first.json()["revision"] == 1
    other = "normal" if predicted == "pneumonia" else "pneumonia"
    second = reviewer.post(
        url, json={"kind": "correct", "label": other, "comment": "missed", "patient_id": "p1"}
    )
    assert second.status_code == 201, second.text
    assert second.json()["revision"] == 2 and second.json()["current"] is True

    view = reviewer.get(f"/v1/jobs/{job['id']}").raise_for_status().json()
    revisions = [(f["revision"], f["kind"], f["label"], f["current"]) for f in view["feedback"]]
    assert revisions == [(1, "confirm", predicted, False), (2, "correct", other, True)]
    assert view["feedback"][0]["model_version"] == "pneumonia-resnet18:1"
    assert all(f["reviewer"] for f in view["feedback"])
    # Patient ids are stored only as pseudonyms and never returned.
    assert "p1" not in str(view["feedback"])

    events = api.get("/v1/audit", params={"action": "feedback.create", "limit": 50}).json()
    mine = [e for e in events["items"] if e["resource_id"] == job["id"]]
    assert sorted(e["detail"]["revision"] for e in mine) == [1, 2]


def test_bad_feedback_is_refused_with_problems(
    submitter: httpx.Client, reviewer: httpx.Client, stack: Stack, make_key: KeyFactory
) -> None:
    job = _job(submitter, "pneumonia-resnet18", "x.png", PNG.read_bytes(), "image/png")
    url = f"/v1/jobs/{job['id']}/images/0/feedback"
    bad_label = reviewer.post(url, json={"kind": "correct", "label": "cat"})
    assert bad_label.status_code == 422
    assert bad_label.headers["content-type"] == "application/problem+json"
    assert reviewer.post(url, json={"kind": "correct"}).status_code == 422
    assert reviewer.post(url, json={"kind": "confirm", "label": "normal"}).status_code == 422
    missing = reviewer.post(f"/v1/jobs/{job['id']}/images/7/feedback", json={"kind": "confirm"})
    assert missing.status_code == 404
    # The submitter's key lacks the review scope; another tenant sees no such job.
    assert submitter.post(url, json={"kind": "confirm"}).status_code == 403
    with client_for(stack, make_key(tenant="other-reviewers", scopes=("review",))) as other:
        assert other.post(url, json={"kind": "confirm"}).status_code == 404


def test_detection_correction_takes_boxes(submitter: httpx.Client, reviewer: httpx.Client) -> None:
    job = _job(
        submitter, "bccd-frcnn-efficientnet-lite0-fpn", "b.jpg", BCCD.read_bytes(), "image/jpeg"
    )
    url = f"/v1/jobs/{job['id']}/images/0/feedback"
    confirmed = reviewer.post(url, json={"kind": "confirm"}).raise_for_status().json()
    found = job["images"][0]["output"]["detections"]
    assert [b["label"] for b in confirmed["boxes"]] == [d["label"] for d in found]
    boxes = [{"label": "WBC", "box": [10, 20, 110, 140]}]
    corrected = reviewer.post(url, json={"kind": "correct", "boxes": boxes})
    assert corrected.status_code == 201, corrected.text
    assert corrected.json()["boxes"] == [{"label": "WBC", "box": [10.0, 20.0, 110.0, 140.0]}]
    assert reviewer.post(url, json={"kind": "correct", "label": "WBC"}).status_code == 422
    wrong = reviewer.post(
        url, json={"kind": "correct", "boxes": [{"label": "dog", "box": boxes[0]["box"]}]}
    )
    assert wrong.status_code == 422
