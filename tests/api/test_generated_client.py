"""A Python client generated from the live /openapi.json does real work against the platform.

What an integrator does first: fetch the spec from the running API, generate a client with
openapi-python-client, and use only that client to submit a job with an image, read the job,
and read a training job (whose response schema once collided with another and was dropped).
"""

from __future__ import annotations

import importlib
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from cli.stack import Stack
from tests.conftest import FIXTURES, KeyFactory, client_for
from tests.fixtures.datasets import pneumonia_tiny_zip

GENERATOR = Path(sys.executable).with_name("openapi-python-client")
PACKAGE = "medimg_live_client"


@pytest.fixture(scope="module")
def generated(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    if not GENERATOR.exists():
        pytest.fail("openapi-python-client missing: `uv sync` installs it (dev dependency)")
    folder = tmp_path_factory.mktemp("client")
    spec = httpx.get(f"{stack.api_url}/openapi.json", timeout=30)
    spec.raise_for_status()
    (folder / "openapi.json").write_bytes(spec.content)
    run = subprocess.run(
        [str(GENERATOR), "generate", "--path", "openapi.json", "--meta", "none",
         "--output-path", PACKAGE],
        cwd=folder, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    sys.path.insert(0, str(folder))
    try:
        modules = {
            name: importlib.import_module(f"{PACKAGE}.{name}")
            for name in ("client", "models", "types")
        }
        ops = f"{PACKAGE}.api"
        modules["jobs"] = importlib.import_module(f"{ops}.jobs")
        modules["training"] = importlib.import_module(f"{ops}.training")
    finally:
        sys.path.remove(str(folder))
    return modules


def _op(package: ModuleType, name: str) -> Any:
    return importlib.import_module(f"{package.__name__}.{name}")


def test_generated_client_submits_a_job_and_reads_it(
    generated: dict[str, Any], stack: Stack, make_key: KeyFactory
) -> None:
    key = make_key(scopes=("jobs:write", "jobs:read"))
    client = generated["client"].AuthenticatedClient(base_url=stack.api_url, token=key)
    models, types = generated["models"], generated["types"]
    image = sorted((FIXTURES / "pneumoniamnist").glob("*.jpg"))[0]
    body = models.BodyCreateJobV1JobsPost(
        files=[types.File(payload=image.read_bytes(), file_name=image.name,
                          mime_type="image/jpeg")],
        model="pneumonia-resnet18",
    )  # fmt: skip
    create = _op(generated["jobs"], "create_job_v1_jobs_post")
    response = create.sync_detailed(client=client, body=body)
    assert response.status_code == 202, response.content
    job = response.parsed
    assert job is not None and str(job.status) in {"queued", "running", "succeeded"}

    read = _op(generated["jobs"], "read_job_v1_jobs_job_id_get")
    deadline = time.monotonic() + 120
    while True:
        current = read.sync(client=client, job_id=job.id)
        assert current is not None, "the generated client could not parse the job view"
        if str(current.status) in {"succeeded", "failed", "cancelled"}:
            break
        assert time.monotonic() < deadline, current
        time.sleep(0.3)
    assert str(current.status) == "succeeded", current
    # The same job over plain HTTP: the generated model saw every image's result.
    raw = client_for(stack, key).get(f"/v1/jobs/{job.id}").json()
    assert len(current.images) == len(raw["images"]) == 1


def test_generated_client_reads_a_training_job(
    generated: dict[str, Any], stack: Stack, make_key: KeyFactory
) -> None:
    key = make_key(tenant="generated-client", scopes=("train",))
    http = client_for(stack, key)
    upload = http.post(
        "/v1/datasets",
        data={"name": "generated-client-train"},
        files={"file": ("data.zip", pneumonia_tiny_zip(), "application/zip")},
    )
    assert upload.status_code == 202, upload.text
    deadline = time.monotonic() + 90
    while (version := http.get(upload.headers["Location"]).json())["status"] == "importing":
        assert time.monotonic() < deadline, version
        time.sleep(0.2)
    assert version["status"] == "ready", version
    created = http.post(
        "/v1/training-jobs",
        json={"dataset": "generated-client-train",
              "params": {"epochs": 1, "image_size": 32, "bootstrap_samples": 50}},
    )  # fmt: skip
    assert created.status_code == 202, created.text
    job_id = created.json()["id"]
    try:
        client = generated["client"].AuthenticatedClient(base_url=stack.api_url, token=key)
        read = _op(generated["training"], "read_training_job_v1_training_jobs_job_id_get")
        job = read.sync(client=client, job_id=job_id)
        assert job is not None, "the generated client dropped the training-job response"
        assert str(job.id) == job_id and job.dataset.startswith("generated-client-train:")
        entries = {e.field: e for e in job.recipe.entries}
        assert entries["epochs"].source == "caller" and entries["patience"].source == "derived"
    finally:
        http.post(f"/v1/training-jobs/{job_id}/cancel")
