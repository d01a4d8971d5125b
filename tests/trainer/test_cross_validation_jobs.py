"""A cross-validation training job end to end: folds, out-of-fold metrics, a serving ensemble.

The committed tiny fixture (60 PneumoniaMNIST images, 20 fake patients) is uploaded through
the API and trained as a 3-fold job; the registered soft-voting ensemble of the fold models
serves an inference job.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import psutil
import pytest

from cli.stack import Stack
from tests.conftest import KeyFactory, client_for, wait_for_job
from tests.fixtures.datasets import PNEUMONIA_TINY, pneumonia_tiny_zip

FINAL = ("succeeded", "failed", "cancelled")


@pytest.fixture(scope="module")
def client(stack: Stack, make_key: KeyFactory) -> httpx.Client:
    client = client_for(stack, make_key(tenant="cv-training", scopes=("train", "jobs:write")))
    client.timeout = httpx.Timeout(120)  # a shared 2-core box answers slowly under load
    return client


@pytest.fixture(scope="module")
def dataset_version(client: httpx.Client) -> str:
    response = client.post(
        "/v1/datasets",
        data={"name": "pneumonia-cv"},
        files={"file": ("data.zip", pneumonia_tiny_zip(), "application/zip")},
    )
    assert response.status_code == 202, response.text
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        version: dict[str, Any] = client.get(response.headers["Location"]).json()
        if version["status"] != "importing":
            assert version["status"] == "ready", version
            return f"{version['dataset_name']}:{version['version']}"
        time.sleep(0.2)
    raise AssertionError("dataset import did not finish")


def _wait(client: httpx.Client, job_id: str, timeout: float = 400) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    seen_folds: set[int] = set()
    while time.monotonic() < deadline:
        job: dict[str, Any] = client.get(f"/v1/training-jobs/{job_id}").raise_for_status().json()
        if job["progress"].get("fold"):
            seen_folds.add(job["progress"]["fold"])
        if job["status"] in FINAL:
            job["seen_folds"] = seen_folds
            return job
        time.sleep(0.2)
    raise AssertionError(f"training job {job_id} not final after {timeout}s")


@pytest.mark.timeout(1200)
def test_cross_validation_registers_a_serving_ensemble(
    client: httpx.Client, dataset_version: str
) -> None:
    response = client.post(
        "/v1/training-jobs",
        json={
            "dataset": dataset_version,
            "model_name": "tiny-cv",
            "params": {
                "cross_validation": {"folds": 3},
                "epochs": 3,
                "image_size": 32,
                "bootstrap_samples": 200,
            },
        },
    )
    assert response.status_code == 202, response.text
    job = response.json()
    recipe = {e["field"]: e for e in job["recipe"]["entries"]}
    assert recipe["cross_validation"]["source"] == "caller"
    assert job["params"]["cross_validation"] == {"folds": 3}
    # Defaults on 36 training images: a pretrained start, the head trained on frozen features.
    assert recipe["finetune"]["source"] == "derived" and job["params"]["finetune"] == "head"
    assert job["start_from"] == "imagenet"

    job = _wait(client, job["id"])
    assert job["status"] == "succeeded", job["error"]
    # Per-epoch rows tagged by fold; progress went through the folds.
    folds = sorted({e["fold"] for e in job["epochs"]})
    assert folds == [1, 2, 3]
    for fold in folds:
        assert [e["epoch"] for e in job["epochs"] if e["fold"] == fold] == [1, 2, 3]
    assert job["progress"]["folds"] == 3 and job["progress"]["phase"] == "done"
    assert job["seen_folds"] <= {1, 2, 3}
    metrics = job["test_metrics"]
    oof, test = metrics["out_of_fold"], metrics["test"]
    # 36 train + 12 validation images pooled; test (12) only for the ensemble.
    assert oof["n"] == 48 and test["n"] == 12
    for report in (oof, test):
        low, high = report["ci95"]["auroc"]
        assert low <= report["auroc"] <= high
        assert {"sensitivity", "specificity", "balanced_accuracy"} <= set(
            report["at_operating_point"]
        )
    assert [f["fold"] for f in metrics["folds"]] == [1, 2, 3]
    assert sum(f["n_held_out"] for f in metrics["folds"]) == 48
    assert {a["name"] for a in job["artifacts"]} >= {f"curves-fold{i}.png" for i in (1, 2, 3)}

    # The result is a soft-voting ensemble of three fold versions, its threshold out-of-fold.
    assert job["model_version"] == "tiny-cv:1"
    version = client.get("/v1/models/tiny-cv/versions/1").raise_for_status().json()
    assert version["kind"] == "ensemble"
    members = [m["ref"] for m in version["members"]]
    assert members == [f"tiny-cv-fold{i}:1" for i in (1, 2, 3)]
    card = version["card"]
    assert card["ensemble"]["vote"] == "soft"
    assert card["operating_point"]["source"].startswith("out-of-fold predictions")
    # Each member's card records its test-time augmentation and the validation evidence.
    for ref in members:
        name = ref.split(":")[0]
        member = client.get(f"/v1/models/{name}/versions/1").raise_for_status().json()["card"]
        assert member["tta"] in ("none", "hflip")
        record = member["metrics"]["tta"]
        assert record["mode"] == "auto" and record["used"] == member["tta"]
        assert "validation_auroc_without" in record

    image = next(PNEUMONIA_TINY.rglob("*.png")).read_bytes()
    infer = client.post(
        "/v1/jobs", data={"model": "tiny-cv"}, files={"files": ("x.png", image, "image/png")}
    )
    assert infer.status_code == 202, infer.text
    result = wait_for_job(client, infer.json()["id"])
    assert result["status"] == "succeeded", result
    output = result["images"][0]["output"]
    assert set(output["probabilities"]) == {"normal", "pneumonia"}
    assert [m["ref"] for m in output["ensemble"]["members"]] == members


def _trainer_child(stack: Stack) -> psutil.Process:
    (child,) = psutil.Process(stack.processes["trainer"].pid).children()
    return child


@pytest.mark.timeout(1500)  # two folds of full training plus a redelivery on a shared box
def test_killed_trainer_resumes_cross_validation_in_its_fold(
    stack: Stack, client: httpx.Client, dataset_version: str
) -> None:
    # Full fine-tuning from a random start: every fold trains the whole network.
    response = client.post(
        "/v1/training-jobs",
        json={
            "dataset": dataset_version,
            "architecture": "mobilenet_v3_small",
            "start_from": "random",
            "model_name": "tiny-cv-resumed",
            "params": {
                "cross_validation": {"folds": 2},
                "epochs": 3,
                "patience": 10,
                "image_size": 32,
                "batch_size": 4,
                "bootstrap_samples": 100,
                "tta": "hflip",
            },
        },
    )
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    assert response.json()["params"]["finetune"] == "full"
    deadline = time.monotonic() + 400
    while time.monotonic() < deadline:
        running = client.get(f"/v1/training-jobs/{job_id}").raise_for_status().json()
        if any(e["fold"] == 2 for e in running["epochs"]) or running["status"] in FINAL:
            break
        time.sleep(0.1)
    assert running["status"] == "running", running
    _trainer_child(stack).kill()  # SIGKILL in fold 2: no cleanup, no ack
    recorded = {(e["fold"], e["epoch"]) for e in running["epochs"]}
    done = _wait(client, job_id, timeout=1000)
    assert done["status"] == "succeeded", done["error"]
    assert done["attempts"] == 2
    rows = [(e["fold"], e["epoch"]) for e in done["epochs"]]
    assert rows == [(f, e) for f in (1, 2) for e in (1, 2, 3)], "each epoch exactly once"
    assert recorded <= set(rows)
    # Caller-set TTA is recorded on every fold model's card and applied by the workers.
    version = client.get("/v1/models/tiny-cv-resumed/versions/1").raise_for_status().json()
    for ref in [m["ref"] for m in version["members"]]:
        name = ref.split(":")[0]
        card = client.get(f"/v1/models/{name}/versions/1").raise_for_status().json()["card"]
        assert card["tta"] == "hflip" and card["metrics"]["tta"]["reason"] == "set by the caller"
