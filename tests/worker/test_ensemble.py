"""Voting ensembles over real members: the arithmetic checked against each member's own job."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest
import torch
from sqlalchemy.orm import Session, sessionmaker

from cli.stack import Stack
from tests.conftest import wait_for_job
from tests.factories import assert_problem, image_files, labelled_pngs, submit_job
from tests.worker.helpers import derive_member, register_ensemble


def _shift_logits(bias: float) -> object:
    def change(state: dict[str, torch.Tensor]) -> None:
        state["fc.bias"] = state["fc.bias"] + torch.tensor([-bias, bias])

    return change


def _scale_logits(factor: float) -> object:
    def change(state: dict[str, torch.Tensor]) -> None:
        state["fc.weight"] = state["fc.weight"] * factor
        state["fc.bias"] = state["fc.bias"] * factor

    return change


@pytest.fixture(scope="module")
def members(
    stack: Stack, db: sessionmaker[Session], tmp_path_factory: pytest.TempPathFactory
) -> list[tuple[str, uuid.UUID]]:
    root = tmp_path_factory.mktemp("members")
    tag = uuid.uuid4().hex[:6]
    changes = {"keen": _shift_logits(2.0), "wary": _shift_logits(-2.0), "calm": _scale_logits(0.3)}
    return [
        derive_member(stack, db, root / name, f"member-{name}-{tag}", change)
        for name, change in changes.items()
    ]


def _outputs(api: httpx.Client, model: str, paths: list[Path]) -> list[dict]:
    response = submit_job(api, image_files(*paths), model=model)
    assert response.status_code == 202, response.text
    job = wait_for_job(api, response.json()["id"])
    assert job["status"] == "succeeded", job
    return [i["output"] for i in job["images"]]


def test_soft_vote_is_the_weighted_mean_of_member_outputs(
    api: httpx.Client, stack: Stack, db: sessionmaker[Session], members: list
) -> None:
    weights = [2.0, 1.0, 1.0]
    name = f"soft-{uuid.uuid4().hex[:6]}"
    ref = register_ensemble(stack, db, name, members, "soft", weights)
    paths = [p for p, _ in labelled_pngs()]
    alone = [_outputs(api, m, paths) for m, _ in members]
    together = _outputs(api, ref, paths)
    for i, out in enumerate(together):
        for label in ("normal", "pneumonia"):
            mean = (
                sum(w * a[i]["probabilities"][label] for w, a in zip(weights, alone, strict=True))
                / 4
            )
            assert out["probabilities"][label] == pytest.approx(mean, abs=2e-6)
        # Each member's output inside the ensemble is the member's own job output.
        for member_out, a, (member_ref, _) in zip(
            out["ensemble"]["members"], alone, members, strict=True
        ):
            assert member_out["ref"] == member_ref
            assert member_out["probabilities"] == pytest.approx(a[i]["probabilities"], abs=2e-6)
            assert member_out["label"] == a[i]["label"]
        threshold = out["operating_point"]["threshold"]
        expected = "pneumonia" if out["probabilities"]["pneumonia"] >= threshold else "normal"
        assert out["label"] == expected and out["ensemble"]["vote"] == "soft"
    # The members really disagree somewhere, so the vote is not trivial.
    assert any(len({a[i]["label"] for a in alone}) > 1 for i in range(len(paths)))


def test_hard_vote_takes_the_majority_of_member_labels(
    api: httpx.Client, stack: Stack, db: sessionmaker[Session], members: list
) -> None:
    ref = register_ensemble(stack, db, f"hard-{uuid.uuid4().hex[:6]}", members, "hard", [1, 1, 1])
    paths = [p for p, _ in labelled_pngs()]
    alone = [_outputs(api, m, paths) for m, _ in members]
    together = _outputs(api, ref, paths)
    for i, out in enumerate(together):
        labels = [a[i]["label"] for a in alone]
        majority = max(("normal", "pneumonia"), key=labels.count)
        assert out["label"] == majority
        assert out["votes"] == {
            "normal": labels.count("normal"),
            "pneumonia": labels.count("pneumonia"),
        }
        assert "operating_point" not in out
        assert [m["label"] for m in out["ensemble"]["members"]] == labels

    # A hard vote has no threshold of its own; Grad-CAM needs a single network.
    png = image_files(paths[0])
    assert_problem(
        submit_job(api, png, model=ref, target_sensitivity="0.9"), 422, "invalid-request"
    )
    assert_problem(submit_job(api, png, model=ref, explain="gradcam"), 422, "invalid-request")
