"""`medimg backup` of the running test stack, `medimg restore` into a fresh data folder,
then a second platform on that folder reads the old jobs and runs the old model
(issue 11 item 7).

The model is registered for this test with weights no fresh install has (the bundled
checkpoint with a shifted bias), so a job on it can only succeed if the backup carried
the model's row and its weights blob.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest
import torch

from cli.stack import Stack, StackConfig, free_port
from shared.config import REPO_ROOT
from tests.conftest import KeyFactory, client_for, wait_for_job
from tests.factories import image_files, labelled_pngs, submit_job

BUNDLED = REPO_ROOT / "models" / "pneumonia-resnet18"


def _medimg(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli", *args], env=env, capture_output=True, text=True, timeout=300
    )


def _env_without_servers() -> dict[str, str]:
    """A shell that never set DATABASE_URL/REDIS_URL: embedded servers in the data folder."""
    return {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}


@pytest.fixture(scope="module")
def old_model(api: httpx.Client, tmp_path_factory: pytest.TempPathFactory) -> str:
    state = torch.load(BUNDLED / "weights.pt", weights_only=True)
    state["fc.bias"] = state["fc.bias"] + 0.05
    weights = tmp_path_factory.mktemp("backup-model") / "weights.pt"
    torch.save(state, weights)
    name = f"backup-{uuid.uuid4().hex[:8]}"
    card = {**json.loads((BUNDLED / "card.json").read_text()), "name": name}
    response = api.post(
        "/v1/models",
        data={"card": json.dumps(card)},
        files={"weights": ("weights.pt", weights.read_bytes())},
    )
    assert response.status_code == 201, response.text
    return name


def _start_on(data_dir: Path, logs: Path) -> Stack:
    """A second platform on ``data_dir``; another free port if the chosen one was taken
    meanwhile (other stacks start on this machine too)."""
    for _ in range(3):
        stack = Stack(
            StackConfig(
                data_dir=data_dir,
                api_port=free_port(),
                redis_port=None,
                worker_concurrency=1,
                worker_metrics_port=None,
                with_trainer=False,
                log_dir=logs,
                ready_timeout=600,  # as the session stack (tests/conftest.py)
            )
        )
        try:
            return stack.start()
        except RuntimeError as exc:
            if "is in use" not in str(exc):
                raise
    raise AssertionError("no free port for the restored platform after 3 tries")


@pytest.mark.timeout(1500)  # a second platform starts: slow on a loaded machine
def test_backup_restore_into_a_fresh_folder_keeps_jobs_and_models(
    api: httpx.Client,
    stack: Stack,
    make_key: KeyFactory,
    old_model: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    images = [p for p, _ in labelled_pngs()[:3]]
    old_job = wait_for_job(api, submit_job(api, image_files(*images), model=old_model).json()["id"])
    assert old_job["status"] == "succeeded", old_job
    key = make_key(tenant="default", scopes=("jobs:write", "jobs:read"))

    backup_dir = tmp_path / "backup"
    made = _medimg("backup", str(backup_dir), "--data-dir", str(stack.config.data_dir),
                   env=dict(stack.env))  # fmt: skip
    assert made.returncode == 0, made.stderr
    manifest = json.loads((backup_dir / "manifest.json").read_text())
    assert manifest["blobs"] > 0 and manifest["alembic_revisions"]
    secrets = stack.config.data_dir / "secrets"  # absent when the salt comes from the env
    kept = sorted(p.name for p in secrets.iterdir()) if secrets.is_dir() else []
    assert manifest["secrets"] == kept
    assert all((backup_dir / "secrets" / name).is_file() for name in kept)

    fresh = tmp_path / "fresh"
    loaded = _medimg("restore", str(backup_dir), "--data-dir", str(fresh),
                     env=_env_without_servers())  # fmt: skip
    assert loaded.returncode == 0, loaded.stderr
    again = _medimg("restore", str(backup_dir), "--data-dir", str(fresh),
                    env=_env_without_servers())  # fmt: skip
    assert again.returncode == 1 and "fresh data folder" in again.stderr  # never over data

    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("REDIS_URL", raising=False)
    second = _start_on(fresh, tmp_path / "logs")
    try:
        with client_for(second, key) as client:  # the old key works: its row came back
            read = client.get(f"/v1/jobs/{old_job['id']}")
            assert read.status_code == 200, read.text
            assert [i["output"] for i in read.json()["images"]] == [
                i["output"] for i in old_job["images"]
            ]
            new_job = wait_for_job(
                client,
                submit_job(client, image_files(*images), model=old_model).json()["id"],
            )
    finally:
        second.stop()
    assert new_job["status"] == "succeeded", new_job
    assert new_job["model"]["ref"] == old_job["model"]["ref"]
    old_probs = [i["output"]["probabilities"] for i in old_job["images"]]
    new_probs = [i["output"]["probabilities"] for i in new_job["images"]]
    for old, new in zip(old_probs, new_probs, strict=True):
        assert all(abs(old[c] - new[c]) < 1e-4 for c in old), (old, new)
