"""The learning loop end to end (issue 17 item 8) on the committed tiny dataset.

Real stack: jobs -> feedback -> the `reviews` policy fires in the platform's one scheduler
-> a challenger trains (1 epoch, 32 px) from production -> the gate on the locked test set
records its decision. Once passing (auto-promoted), once failing (a deliberately wrecked
challenger, lr 1.0, is refused), then passing under policy `approval` and approved by an
admin; rollback in one call; no locked-test patient is trained on.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from cli.stack import Stack
from shared.config import Settings
from shared.db.models import Dataset, DatasetItem, DatasetVersion
from shared.pseudonyms import pseudonym
from tests.conftest import KeyFactory, client_for, wait_for_job
from tests.fixtures.datasets import PNEUMONIA_TINY, pneumonia_tiny_zip

MODEL = "loop-pneumonia"
FAST = {"image_size": 32, "batch_size": 8, "bootstrap_samples": 50}
FINAL = ("promoted", "refused", "rejected", "awaiting_approval", "failed")
RAW = PNEUMONIA_TINY / "Task001_pneumonia" / "rawdata"


@pytest.fixture(scope="module")
def admin(stack: Stack, make_key: KeyFactory) -> httpx.Client:
    client = client_for(stack, make_key(tenant="learning", scopes=("admin",)))
    client.timeout = httpx.Timeout(120)
    return client


PASS_MARGIN = 0.5  # see the policy below: mechanics, not statistics


def _wait(client: httpx.Client, url: str, done: Any, timeout: float = 900) -> Any:
    deadline = time.monotonic() + timeout
    body = None
    while time.monotonic() < deadline:
        try:
            body = client.get(url).raise_for_status().json()
        except httpx.TimeoutException:  # an API starved of CPU by a busy shared box
            continue
        if done(body):
            return body
        time.sleep(0.5)
    raise AssertionError(f"{url} did not get there in {timeout}s: {body}")


def _dataset_items(db: sessionmaker[Session], ref: str) -> list[DatasetItem]:
    name, version = ref.rsplit(":", 1)
    with db() as session:
        return list(
            session.scalars(
                select(DatasetItem)
                .join(DatasetVersion)
                .join(Dataset)
                .where(Dataset.name == name, DatasetVersion.version == int(version))
            ).all()
        )


@pytest.fixture(scope="module")
def champion(admin: httpx.Client) -> str:
    """loop-pneumonia:1 trained on the tiny dataset and promoted; returns the dataset ref."""
    upload = admin.post(
        "/v1/datasets",
        data={"name": "loop-pneumonia-data"},
        files={"file": ("data.zip", pneumonia_tiny_zip(), "application/zip")},
    )
    assert upload.status_code == 202, upload.text
    version = _wait(admin, upload.headers["Location"], lambda v: v["status"] != "importing", 120)
    assert version["status"] == "ready", version
    dataset = f"{version['dataset_name']}:{version['version']}"
    job = admin.post(
        "/v1/training-jobs",
        json={
            "dataset": dataset,
            "architecture": "resnet18",
            "model_name": MODEL,
            "promote": True,
            "params": {**FAST, "epochs": 2},
        },
    )
    assert job.status_code == 202, job.text
    done = _wait(
        admin,
        f"/v1/training-jobs/{job.json()['id']}",
        lambda j: j["status"] in ("succeeded", "failed", "cancelled"),
    )
    assert done["status"] == "succeeded", done["error"]
    assert done["model_version"] == f"{MODEL}:1" and done["promoted"] is True
    return dataset


def _locked_groups(db: sessionmaker[Session], dataset: str) -> set[str]:
    return {i.group_id for i in _dataset_items(db, dataset) if i.split == "test" and i.group_id}


def _patients(secret: bytes, locked: set[str]) -> tuple[list[Path], Path]:
    """Three images of patients outside the locked test set, one of a patient inside it."""
    outside, inside = [], None
    for path in sorted(RAW.rglob("pat*_img1.png")):
        patient = path.name.split("_")[0]
        if pseudonym("group", patient, secret) in locked:
            inside = inside or path
        elif len(outside) < 3:
            outside.append(path)
    assert inside is not None and len(outside) == 3
    return outside, inside


# Three trainings (champion, two challengers) and two gates on a shared 2-core machine.
@pytest.mark.timeout(2400)
def test_feedback_retrains_gates_promotes_refuses_and_rolls_back(
    admin: httpx.Client, champion: str, stack: Stack, db: sessionmaker[Session]
) -> None:
    policy = {
        "trigger": "reviews",
        "min_new_reviews": 4,
        "promotion": "auto",
        "bootstrap_samples": 500,
        # 12 locked images (6 positive): one positive more or less moves sensitivity by
        # 0.17, one swapped pair AUROC by 0.03, and even at lr 1e-7 an epoch moves the
        # BatchNorm statistics (a run measured AUROC 0.944 vs 1.0). This test checks the
        # loop's mechanics with a margin a near-copy passes; tests/trainer/test_gate.py
        # checks the gate's statistics. The wrecked challenger below is judged at 0.01.
        "margin": PASS_MARGIN,
        # Continue production at a negligible learning rate: a challenger as good as it.
        "params": {"epochs": 1, "lr": 1e-7, "bootstrap_samples": 50},
    }
    created = admin.put(f"/v1/models/{MODEL}/learning-policy", json=policy)
    assert created.status_code == 201, created.text
    line = created.json()
    assert line["locked_test_set"]["dataset"] == champion
    assert line["locked_test_set"]["images"] == 12 and line["locked_test_set"]["groups"] == 4
    assert line["production"] == f"{MODEL}:1" and line["new_reviews"] == 0
    fingerprint = line["locked_test_set"]["sha256"]

    secret = Settings(data_dir=Path(stack.env["MEDIMG_DATA_DIR"])).uid_salt()
    locked = _locked_groups(db, champion)
    outside, inside = _patients(secret, locked)
    files = [("files", (p.name, p.read_bytes(), "image/png")) for p in [*outside, inside]]
    submitted = admin.post("/v1/jobs", data={"model": MODEL}, files=files)
    assert submitted.status_code == 202, submitted.text
    job = wait_for_job(admin, submitted.json()["id"])
    assert job["status"] == "succeeded", job
    for index, path in enumerate([*outside, inside]):
        truth = path.parent.name  # the folder is the label
        body = {"kind": "correct", "label": truth, "patient_id": path.name.split("_")[0]}
        response = admin.post(f"/v1/jobs/{job['id']}/images/{index}/feedback", json=body)
        assert response.status_code == 201, response.text

    # The scheduler sees 4 new reviews, builds the data, trains, stages and gates.
    first = _wait(
        admin,
        f"/v1/models/{MODEL}/generations",
        lambda g: g["items"] and g["items"][0]["status"] in FINAL,
    )["items"][0]
    assert first["trigger"] == "reviews" and first["champion"] == f"{MODEL}:1"
    assert first["status"] == "promoted", (first["reason"], first["gate"])
    assert first["challenger"] == f"{MODEL}:2" and first["passed"] is True
    gate = first["gate"]
    low, high = gate["discrimination"]["ci95"]
    assert low > -PASS_MARGIN and low <= gate["discrimination"]["difference"] <= high
    assert gate["test_set"]["images"] == 12 and gate["test_set"]["sha256"] == fingerprint
    assert all(c["passed"] for c in gate["checks"]) and first["decided_by"] == "policy"
    summary = first["data_summary"]
    assert summary["feedback_images"] == 4 and summary["locked_patient_items"] == 1
    assert summary["feedback_test"] == 1 and summary["locked_test_images"] == 12

    # No locked-test patient or image in what the challenger trained on.
    trained = _dataset_items(db, first["training_dataset"])
    fit = [i for i in trained if i.split != "test"]
    assert fit and not {i.group_id for i in fit} & locked
    locked_shas = {i.sha256 for i in _dataset_items(db, champion) if i.split == "test"}
    assert not {i.sha256 for i in fit} & locked_shas
    assert {i.sha256 for i in trained if i.split == "test"} == locked_shas
    feedback = _dataset_items(db, first["feedback_dataset"])
    assert len(feedback) == 4
    assert [i.split for i in feedback if i.group_id in locked] == ["test"]

    view = admin.get(f"/v1/models/{MODEL}/learning").json()
    assert view["production"] == f"{MODEL}:2" and view["staging"] == f"{MODEL}:2"
    assert view["locked_test_set"]["sha256"] == fingerprint and view["new_reviews"] == 0

    # Rollback in one call.
    back = admin.post(f"/v1/models/{MODEL}/rollback")
    assert back.status_code == 200, back.text
    assert back.json() == {"model": MODEL, "production": f"{MODEL}:1", "previous": f"{MODEL}:2"}
    assert admin.get(f"/v1/models/{MODEL}/learning").json()["production"] == f"{MODEL}:1"

    # A deliberately wrecked challenger (lr 1.0) is refused at the default margin.
    policy = {**policy, "margin": 0.01}
    assert admin.put(f"/v1/models/{MODEL}/learning-policy", json=policy).status_code == 200
    manual = admin.post(f"/v1/models/{MODEL}/generations", json={"params": {"lr": 1.0}})
    assert manual.status_code == 202, manual.text
    second = _wait(
        admin,
        f"/v1/models/{MODEL}/generations/{manual.json()['id']}",
        lambda g: g["status"] in FINAL,
    )
    assert second["status"] == "refused", (second["reason"], second["gate"])
    assert second["passed"] is False and second["challenger"] == f"{MODEL}:3"
    assert not all(c["passed"] for c in second["gate"]["checks"])
    view = admin.get(f"/v1/models/{MODEL}/learning").json()
    assert view["production"] == f"{MODEL}:1" and view["staging"] == f"{MODEL}:3"
    approve = admin.post(f"/v1/models/{MODEL}/generations/{second['id']}/approve", json={})
    assert approve.status_code == 409

    # Policy `approval`: a passing challenger waits for an admin, who approves it (audited).
    policy = {**policy, "promotion": "approval", "margin": PASS_MARGIN}
    assert admin.put(f"/v1/models/{MODEL}/learning-policy", json=policy).status_code == 200
    third = admin.post(f"/v1/models/{MODEL}/generations", json={})
    assert third.status_code == 202, third.text
    url = f"/v1/models/{MODEL}/generations/{third.json()['id']}"
    waiting = _wait(admin, url, lambda g: g["status"] in FINAL)
    assert waiting["status"] == "awaiting_approval", (waiting["reason"], waiting["gate"])
    assert admin.get(f"/v1/models/{MODEL}/learning").json()["production"] == f"{MODEL}:1"
    approved = admin.post(f"{url}/approve", json={"reason": "gate report reviewed"})
    assert approved.status_code == 200, approved.text
    assert approved.json()["status"] == "promoted" and approved.json()["decided_by"] != "policy"
    # Identical fp16 weights register as the existing version (v2), not a new one.
    now = admin.get(f"/v1/models/{MODEL}/learning").json()["production"]
    assert now == approved.json()["challenger"] == f"{MODEL}:2"
    assert admin.post(f"{url}/reject", json={}).status_code == 409

    actions = {e["action"] for e in admin.get("/v1/audit", params={"limit": 500}).json()["items"]}
    assert {"model.learning_policy", "model.retrain", "model.stage", "model.gate"} <= actions
    assert {"model.promote", "model.rollback", "feedback.create"} <= actions
