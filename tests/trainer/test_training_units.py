"""Pieces of training jobs checked against hand-computed cases (no stack needed)."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.models import get_model_weights

from shared.schemas.training import (
    CLASSIFICATION_ARCHITECTURES,
    DETECTION_ARCHITECTURES,
    IMAGENET_FILES,
    TrainingJobCreate,
    TrainingParams,
)
from shared.storage import BlobStore
from trainer import classification_scores as M
from trainer.evaluation import improved, multiclass_test_report, validation_roc
from trainer.fit_state import FitState, load_checkpoint, save_checkpoint
from trainer.publish import Incumbent, promotion_decision
from trainer.starting_points import _imagenet, head_name, replace_head


def test_bootstrap_ci_brackets_the_estimate_and_is_reproducible() -> None:
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 200)
    scores = labels * 0.3 + rng.random(200) * 0.8  # informative but overlapping
    point = M.auroc(scores, labels)
    ci = M.bootstrap_ci(M.auroc, scores, labels, samples=500, seed=3)
    assert ci is not None and ci[0] < point < ci[1]
    assert ci == M.bootstrap_ci(M.auroc, scores, labels, samples=500, seed=3)
    wide = M.bootstrap_ci(M.auroc, scores[:40], labels[:40], samples=500, seed=3)
    assert wide is not None and wide[1] - wide[0] > ci[1] - ci[0]  # fewer cases, wider


def test_bootstrap_ci_of_a_perfect_classifier_is_a_point() -> None:
    labels = np.array([0, 0, 0, 1, 1, 1])
    scores = np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9])
    assert M.bootstrap_ci(M.auroc, scores, labels, samples=200) == (1.0, 1.0)
    assert M.bootstrap_ci(M.auroc, scores, labels, samples=0) is None


def test_bootstrap_skips_undefined_resamples() -> None:
    # 1 positive in 20: many resamples miss it and AUROC is undefined there; still an answer.
    labels = np.array([1] + [0] * 19)
    scores = np.linspace(1, 0, 20)
    assert M.bootstrap_ci(M.auroc, scores, labels, samples=300) == (1.0, 1.0)
    assert M.bootstrap_ci(M.auroc, scores, np.zeros(20, dtype=int), samples=50) is None


def test_macro_auroc_and_confusion_by_hand() -> None:
    probs = np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.3, 0.3, 0.4], [0.5, 0.4, 0.1]])
    labels = np.array([0, 1, 2, 1])
    # One-vs-rest: class 0 scores 0.8,0.2,0.3,0.5 vs labels 1,0,0,0 -> 1.0; class 1:
    # 0.1,0.7,0.3,0.4 vs 0,1,0,1 -> (1+1+1+1)/4 = 1.0; class 2: 0.1,0.1,0.4,0.1 -> 1.0.
    assert M.macro_auroc(probs, labels) == 1.0
    assert M.multiclass_confusion(probs, labels).tolist() == [[1, 0, 0], [1, 1, 0], [0, 0, 1]]
    report = multiclass_test_report(probs, labels, ["a", "b", "c"], samples=50, seed=0)
    assert report["accuracy"] == 0.75
    assert report["per_class"]["b"] == {
        "n": 2,
        "sensitivity": 0.5,
        "specificity": 1.0,
        "precision": 1.0,
        "f1": 0.6667,
    }


def test_validation_roc_points_are_monotone_and_bounded() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 500)
    scores = np.clip(labels * 0.3 + rng.random(500) * 0.7, 0, 1)
    points = validation_roc(scores, labels, limit=50)
    assert 2 <= len(points) <= 50
    thresholds = [p["threshold"] for p in points]
    assert thresholds == sorted(thresholds, reverse=True)
    sens = [p["sensitivity"] for p in points]
    assert sens == sorted(sens) and sens[-1] == 1.0


def test_monitor_direction_and_promotion() -> None:
    assert improved(0.8, 0.7, "auroc") and not improved(0.7, 0.8, "auroc")
    assert improved(0.2, 0.3, "loss") and not improved(None, 0.3, "auroc")
    assert promotion_decision("auroc", 0.9, None) == (True, "no production version yet")
    assert promotion_decision("auroc", 0.9, Incumbent("m:1", 0.8))[0] is True
    assert promotion_decision("auroc", 0.8, Incumbent("m:1", 0.8))[0] is False  # ties keep
    assert promotion_decision("loss", 0.5, Incumbent("m:1", 0.4))[0] is False
    assert promotion_decision("auroc", None, Incumbent("m:1", 0.8))[0] is False


def test_imagenet_file_names_match_torchvision() -> None:
    for architecture, name in IMAGENET_FILES.items():
        url = get_model_weights(architecture).IMAGENET1K_V1.url  # type: ignore[attr-defined]
        assert url.rsplit("/", 1)[1] == name
    assert "efficientnet_lite0" in CLASSIFICATION_ARCHITECTURES


def test_detection_catalogue_matches_the_builders() -> None:
    from shared.ml.detection import DETECTORS

    assert set(DETECTORS) == DETECTION_ARCHITECTURES


def test_wheel_imagenet_start_gets_a_new_head() -> None:
    start = _imagenet("efficientnet_lite0", 3)
    assert start.mean == pytest.approx([127 / 255] * 3)
    head = start.network.get_submodule(head_name(start.network))
    assert head.out_features == 3
    replace_head(start.network, 5)
    assert start.network.get_submodule(head_name(start.network)).out_features == 5


def test_params_defaults_and_limits() -> None:
    params = TrainingParams()
    assert params.epochs == 10 and params.lr_scheduler == "cosine" and params.amp
    with pytest.raises(ValueError):
        TrainingParams(epochs=0)
    with pytest.raises(ValueError):
        TrainingJobCreate.model_validate({"dataset": "x", "params": {"lr": 0.1, "bogus": 1}})


def test_checkpoint_restores_model_optimiser_and_random_streams(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=5)
    model(torch.randn(3, 4)).sum().backward()
    optimizer.step()
    scheduler.step()
    generator = torch.Generator().manual_seed(7)
    state = FitState(epoch=3, best_value=0.9, best_epoch=2, stale=1, history=[{"epoch": 1}])
    key = save_checkpoint(
        store,
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        scaler=None,
        state=state,
        generator=generator,
    )
    expected = (random.random(), np.random.rand(), torch.rand(1))
    expected_loader = torch.rand(1, generator=generator)

    fresh = torch.nn.Linear(4, 2)
    fresh_opt = torch.optim.AdamW(fresh.parameters(), lr=0.1)
    fresh_sched = torch.optim.lr_scheduler.CosineAnnealingLR(fresh_opt, T_max=5)
    fresh_gen = torch.Generator().manual_seed(99)
    random.seed(5)
    torch.manual_seed(5)
    restored = load_checkpoint(
        store,
        key,
        model=fresh,
        optimizer=fresh_opt,
        scheduler=fresh_sched,
        scaler=None,
        generator=fresh_gen,
    )
    assert (restored.epoch, restored.best_value, restored.stale) == (3, 0.9, 1)
    assert torch.equal(fresh.weight, model.weight)
    assert fresh_sched.last_epoch == 1 and fresh_opt.state_dict()["state"]
    again = (random.random(), np.random.rand(), torch.rand(1))
    assert again[0] == expected[0] and again[1] == expected[1]
    assert torch.equal(again[2], expected[2])
    assert torch.equal(torch.rand(1, generator=fresh_gen), expected_loader)
