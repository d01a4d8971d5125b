"""Training jobs end to end: real API, Postgres, Valkey, dataset import and trainer worker.

A tiny real dataset (60 PneumoniaMNIST images, committed under tests/fixtures) is uploaded
through POST /v1/datasets, trained for a few epochs at 32 px through POST /v1/training-jobs,
and the registered result serves an inference job.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
import uuid
from datetime import datetime
from typing import Any

import httpx
import psutil
import pytest
from PIL import Image

from cli.stack import Stack
from tests.conftest import KeyFactory, client_for, wait_for_job
from tests.fixtures.datasets import PNEUMONIA_TINY, bccd_tiny_zip, pneumonia_tiny_zip

FINAL = ("succeeded", "failed", "cancelled")
FAST = {"image_size": 32, "batch_size": 8, "bootstrap_samples": 200}


@pytest.fixture(scope="module")
def client(stack: Stack, make_key: KeyFactory) -> httpx.Client:
    return client_for(stack, make_key(tenant="training", scopes=("train", "jobs:write")))


@pytest.fixture(scope="module")
def dataset_version(client: httpx.Client) -> str:
    response = client.post(
        "/v1/datasets",
        data={"name": "pneumonia-train-test"},
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


def submit(client: httpx.Client, dataset_version: str, **body: Any) -> dict[str, Any]:
    params = {**FAST, **body.pop("params", {})}
    payload = {"dataset": dataset_version, "params": params, **body}
    response = client.post("/v1/training-jobs", json=payload)
    assert response.status_code == 202, response.text
    assert response.headers["Location"] == f"/v1/training-jobs/{response.json()['id']}"
    return response.json()


def wait_training(
    client: httpx.Client, job_id: str, until: Any = None, timeout: float = 150
) -> dict[str, Any]:
    """Poll until the job is final (or ``until(job)`` holds)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job: dict[str, Any] = client.get(f"/v1/training-jobs/{job_id}").raise_for_status().json()
        if (until and until(job)) or (until is None and job["status"] in FINAL):
            return job
        time.sleep(0.1)
    raise AssertionError(f"training job {job_id} did not get there in {timeout}s: {job}")


def test_train_register_and_serve(client: httpx.Client, dataset_version: str) -> None:
    job = submit(
        client,
        dataset_version,
        architecture="resnet18",
        model_name="tiny-pneumonia",
        promote=True,
        params={"epochs": 2},
    )
    assert job["status"] == "queued" and job["monitor"] == "auroc"
    # The recipe says who chose each value: the caller's win, the rest are derived with a reason.
    recipe = {e["field"]: e for e in job["recipe"]["entries"]}
    assert recipe["epochs"]["source"] == "caller" and job["params"]["epochs"] == 2
    assert recipe["image_size"]["source"] == "caller" and job["params"]["image_size"] == 32
    assert recipe["patience"]["source"] == "derived" and job["params"]["patience"] == 5
    assert "a quarter of 2 epochs" in recipe["patience"]["reason"]
    assert recipe["class_weights"]["source"] == "derived"
    assert job["recipe"]["fingerprint"]["images_per_split"]["train"] > 0
    job = wait_training(client, job["id"])
    assert job["status"] == "succeeded", job["error"]
    assert [e["epoch"] for e in job["epochs"]] == [1, 2]
    assert all(0 <= e["val_metrics"]["auroc"] <= 1 for e in job["epochs"])
    assert job["progress"]["epoch"] == 2 and job["progress"]["phase"] == "done"
    assert job["model_version"] == "tiny-pneumonia:1" and job["promoted"] is True
    test = job["test_metrics"]["test"]
    assert test["n"] == 12 and len(test["ci95"]["auroc"]) == 2
    assert test["ci95"]["auroc"][0] <= test["auroc"] <= test["ci95"]["auroc"][1]
    assert set(test["at_operating_point"]) >= {"sensitivity", "specificity", "precision", "f1"}

    names = {a["name"]: a for a in job["artifacts"]}
    assert {"curves.png", "model_card.md", f"events.out.tfevents.{job['id']}"} <= set(names)
    png = client.get(names["curves.png"]["url"])
    assert png.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(png.content)).size[0] > 100
    events = client.get(names[f"events.out.tfevents.{job['id']}"]["url"]).content
    assert len(events) > 100

    card = client.get("/v1/models/tiny-pneumonia/versions/1").raise_for_status().json()["card"]
    assert card["operating_point"]["source"].startswith("validation split")
    assert card["validation_roc"] and card["training"]["extra"]["best_epoch"] in (1, 2)
    assert "pneumonia-train-test" in card["data"]["source"]

    # The new version serves an inference job right away (through the production alias).
    image = next((PNEUMONIA_TINY).rglob("*.png")).read_bytes()
    infer = client.post(
        "/v1/jobs",
        data={"model": "tiny-pneumonia@production"},
        files={"files": ("x.png", image, "image/png")},
    )
    assert infer.status_code == 202, infer.text
    result = wait_for_job(client, infer.json()["id"])
    assert result["status"] == "succeeded", result
    assert set(result["images"][0]["output"]["probabilities"]) == {"normal", "pneumonia"}


def test_cli_continues_training_and_promotes_only_if_better(
    stack: Stack, make_key: KeyFactory, client: httpx.Client, dataset_version: str
) -> None:
    """`medimg train` continues tiny-pneumonia:1 for one epoch; promotion follows the metric."""
    argv = [
        sys.executable, "-m", "cli", "train", "--api-url", stack.api_url,
        "--dataset", dataset_version, "--architecture", "resnet18",
        "--start-from", "tiny-pneumonia:1", "--model-name", "tiny-pneumonia", "--promote",
        "--epochs", "1", "--image-size", "32", "--param", "bootstrap_samples=50",
    ]  # fmt: skip
    env = {**os.environ, "MEDIMG_API_KEY": make_key(tenant="training", scopes=("train",))}
    run = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "registered tiny-pneumonia:2" in run.stdout
    assert "epoch" in run.stderr  # the live progress bar
    job = client.get("/v1/training-jobs", params={"limit": 1}).json()["items"][0]
    job = client.get(f"/v1/training-jobs/{job['id']}").json()
    assert job["start_from"] == "tiny-pneumonia:1" and job["model_version"] == "tiny-pneumonia:2"
    promotion = job["test_metrics"]["promotion"]
    old = client.get("/v1/models/tiny-pneumonia/versions/1").json()["card"]
    new = client.get("/v1/models/tiny-pneumonia/versions/2").json()["card"]
    assert new["training"]["extra"]["start_from"] == "continued from tiny-pneumonia:1: all weights"
    assert ("(" + f"{old['metrics']['test_monitor']['auroc']:.4f}") in promotion["reason"]
    better = new["metrics"]["test_monitor"]["auroc"] > old["metrics"]["test_monitor"]["auroc"]
    assert promotion["promoted"] is better is job["promoted"]
    served = client.post(
        "/v1/jobs",
        data={"model": "tiny-pneumonia"},
        files={"files": ("x.png", next(PNEUMONIA_TINY.rglob("*.png")).read_bytes(), "image/png")},
    )
    expected = "tiny-pneumonia:2" if better else "tiny-pneumonia:1"
    assert served.json()["model"]["ref"] == expected


def test_metrics_expose_training_progress(stack: Stack, client: httpx.Client) -> None:
    body = httpx.get(f"{stack.api_url}/metrics").text
    assert 'medimg_training_jobs{status="succeeded"}' in body
    assert "medimg_training_epochs_total" in body


def test_cancel_stops_a_running_job(client: httpx.Client, dataset_version: str) -> None:
    job = submit(
        client,
        dataset_version,
        architecture="mobilenet_v3_small",
        model_name="tiny-cancelled",
        params={"epochs": 200, "batch_size": 2},
    )
    wait_training(client, job["id"], until=lambda j: (j["progress"].get("step") or 0) > 0)
    cancelled = client.post(f"/v1/training-jobs/{job['id']}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    again = client.post(f"/v1/training-jobs/{job['id']}/cancel")
    assert again.status_code == 409
    # The trainer notices within about a second: progress stops moving, nothing registers.
    time.sleep(2.5)
    before = client.get(f"/v1/training-jobs/{job['id']}").json()
    time.sleep(1.5)
    after = client.get(f"/v1/training-jobs/{job['id']}").json()
    assert after["status"] == "cancelled" and after["model_version"] is None
    assert after["progress"] == before["progress"] and after["epochs"] == before["epochs"]
    assert client.get("/v1/models/tiny-cancelled").status_code == 404


def _trainer_child(stack: Stack) -> psutil.Process:
    (child,) = psutil.Process(stack.processes["trainer"].pid).children()
    return child


def test_killed_trainer_resumes_from_checkpoint(
    stack: Stack, client: httpx.Client, dataset_version: str
) -> None:
    job = submit(
        client,
        dataset_version,
        architecture="mobilenet_v3_small",
        model_name="tiny-resumed",
        params={"epochs": 2, "batch_size": 4, "patience": 10},
    )
    running = wait_training(
        client,
        job["id"],
        until=lambda j: len(j["epochs"]) >= 1 and (j["progress"].get("step") or 0) > 0,
    )
    child = _trainer_child(stack)
    child.kill()  # SIGKILL mid-epoch: no cleanup, no ack
    killed_at = time.time()
    recorded = {e["epoch"] for e in running["epochs"]}
    done = wait_training(client, job["id"])
    assert done["status"] == "succeeded", done["error"]
    assert done["attempts"] == 2
    epochs = [e["epoch"] for e in done["epochs"]]
    assert epochs == [1, 2], "each epoch exactly once"
    # Epochs finished before the kill were not run again: their rows predate the kill.
    before_kill = [e for e in done["epochs"] if e["epoch"] in recorded]
    assert len(before_kill) == len(recorded) >= 1
    assert _trainer_child(stack).pid != child.pid
    assert datetime.fromisoformat(done["started_at"]).timestamp() < killed_at


def test_bad_requests_are_problems(client: httpx.Client, dataset_version: str) -> None:
    def post(**body: Any) -> httpx.Response:
        return client.post("/v1/training-jobs", json={"dataset": dataset_version, **body})

    unknown_arch = post(architecture="resnet9000")
    assert unknown_arch.status_code == 422 and "resnet9000" in unknown_arch.json()["detail"]
    missing = post(architecture="resnet18", start_from="imagenet")
    assert missing.status_code == 422 and "resnet18-f37072fd.pth" in missing.json()["detail"]
    assert post(task="detection").status_code == 422
    assert post(monitor="map").status_code == 422
    assert post(params={"epochs": 0}).status_code == 422
    assert post(start_from="no-such-model").status_code == 404
    assert client.post("/v1/training-jobs", json={"dataset": "nope"}).status_code == 404
    assert post(dataset="pneumonia-train-test:99").status_code == 404
    assert client.get(f"/v1/training-jobs/{uuid.uuid4()}").status_code == 404


def test_other_tenants_and_scopes(
    stack: Stack, make_key: KeyFactory, client: httpx.Client, dataset_version: str
) -> None:
    with client_for(stack, make_key(tenant="training-other", scopes=("train",))) as other:
        response = other.post("/v1/training-jobs", json={"dataset": dataset_version})
        assert response.status_code == 404
    with client_for(stack, make_key(tenant="training", scopes=("jobs:read",))) as reader:
        assert reader.get("/v1/training-jobs").status_code == 403
    listed = client.get("/v1/training-jobs").raise_for_status().json()["items"]
    assert listed and all(j["status"] in (*FINAL, "queued", "running") for j in listed)


def test_detection_job_trains_and_reports_map(client: httpx.Client) -> None:
    """A Faster R-CNN on 8 BCCD smears: epochs, mAP@0.5 and mAP over IoU 0.40-0.75."""
    upload = client.post(
        "/v1/datasets",
        data={
            "name": "bccd-train-test",
            "ratios": '{"train": 0.5, "validation": 0.25, "test": 0.25}',
        },
        files={"file": ("data.zip", bccd_tiny_zip(), "application/zip")},
    )
    assert upload.status_code == 202, upload.text
    deadline = time.monotonic() + 90
    while (v := client.get(upload.headers["Location"]).json())["status"] == "importing":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert v["status"] == "ready", v
    job = submit(
        client,
        f"{v['dataset_name']}:{v['version']}",
        task="detection",
        architecture="fasterrcnn_mobilenet_v3_large_fpn",
        model_name="tiny-bccd",
        params={"epochs": 1, "image_size": 160, "batch_size": 4},
    )
    assert job["monitor"] == "map"
    job = wait_training(client, job["id"], timeout=300)
    assert job["status"] == "succeeded", job["error"]
    assert [e["epoch"] for e in job["epochs"]] == [1]
    assert set(job["epochs"][0]["val_metrics"]) == {"map", "map_50"}
    test = job["test_metrics"]["test"]
    assert 0 <= test["map_50"] <= 1 and 0 <= test["map_40_75"] <= test["map_50"] + 1e-9
    assert set(test["ap_50_per_class"]) == {"Platelets", "RBC", "WBC"}
    card = client.get("/v1/models/tiny-bccd/versions/1").json()["card"]
    assert card["task"] == "detection" and card["input"]["resize"] == "letterbox"
