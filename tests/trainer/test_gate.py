"""The champion/challenger gate's statistics and rule (issue 17 item 5), without a stack."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from shared.learning.gate_rule import Comparison, GateReport, decide
from trainer.gate_stats import Scored, box_recall, compare, compare_detection


def _probs(positive: np.ndarray) -> np.ndarray:
    return np.stack([1 - positive, positive], axis=1)


def _case(n: int = 200, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    score = np.clip(0.5 + 0.25 * (labels - 0.5) + rng.normal(0, 0.2, n), 0, 1)
    return labels, score


def test_identical_challenger_passes_with_a_zero_width_interval() -> None:
    labels, score = _case()
    same = Scored("m:1", _probs(score), 0.5)
    report = compare(same, Scored("m:2", _probs(score), 0.5), labels, margin=0.01, samples=300)
    assert report.discrimination.difference == 0 and report.discrimination.ci95 == [0.0, 0.0]
    assert report.passed and all(c["passed"] for c in report.checks)


def test_noise_makes_a_worse_challenger_fail_the_auroc_check() -> None:
    labels, score = _case()
    noisy = np.clip(score + np.random.default_rng(2).normal(0, 0.5, len(score)), 0, 1)
    report = compare(
        Scored("m:1", _probs(score), 0.5),
        Scored("m:2", _probs(noisy), 0.5),
        labels,
        margin=0.01,
        samples=300,
    )
    d = report.discrimination
    assert d.difference < 0 and d.ci95 is not None and d.ci95[1] < 0
    assert not report.checks[0]["passed"] and not report.passed


def test_the_interval_is_paired_and_brackets_the_difference() -> None:
    labels, score = _case(seed=3)
    shifted = np.clip(score + np.random.default_rng(4).normal(0, 0.05, len(score)), 0, 1)
    report = compare(
        Scored("m:1", _probs(score), 0.5),
        Scored("m:2", _probs(shifted), 0.5),
        labels,
        margin=0.05,
        samples=500,
    )
    d = report.discrimination
    assert d.ci95 is not None and d.ci95[0] <= d.difference <= d.ci95[1]
    # Paired: small perturbations give a far narrower interval than either AUROC's own.
    assert d.ci95[1] - d.ci95[0] < 0.05
    assert report.passed


def test_lower_sensitivity_at_the_operating_point_fails() -> None:
    labels, score = _case()
    # Same ranking (same AUROC), but a threshold that calls far fewer cases positive.
    report = compare(
        Scored("m:1", _probs(score), 0.5),
        Scored("m:2", _probs(score), 0.8),
        labels,
        margin=0.01,
        samples=200,
    )
    assert report.checks[0]["passed"] and not report.checks[1]["passed"]
    assert report.sensitivity.challenger < report.sensitivity.champion - 0.01
    assert not report.passed


def test_no_interval_means_no_pass() -> None:
    same = Comparison(metric="auroc", champion=0.9, challenger=0.95, difference=0.05, ci95=None)
    report = GateReport(
        champion="m:1",
        challenger="m:2",
        test_set={},
        margin=0.01,
        discrimination=same,
        sensitivity=same,
        method="",
    )
    assert not decide(report).passed


def test_multiclass_uses_macro_auroc_and_macro_recall() -> None:
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 3, 150)
    logits = rng.normal(0, 1, (150, 3))
    logits[np.arange(150), labels] += 2
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    report = compare(
        Scored("m:1", probs, 0.5), Scored("m:2", probs, 0.5), labels, margin=0.01, samples=100
    )
    assert report.discrimination.metric == "macro_auroc"
    assert report.sensitivity.metric == "macro_recall" and report.passed


def _scene(seed: int, n: int = 12) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Per image 1-3 true boxes; predictions near them (a slightly shifted copy, scored)."""
    rng = np.random.default_rng(seed)
    preds, targets = [], []
    for _ in range(n):
        k = int(rng.integers(1, 4))
        xy = rng.uniform(0, 200, (k, 2))
        boxes = torch.tensor(np.hstack([xy, xy + rng.uniform(20, 60, (k, 2))]), dtype=torch.float32)
        labels = torch.tensor(rng.integers(1, 3, k), dtype=torch.int64)
        targets.append({"boxes": boxes, "labels": labels})
        preds.append(
            {"boxes": boxes + 2.0, "labels": labels, "scores": torch.tensor(rng.uniform(0.5, 1, k))}
        )
    return preds, targets


def test_detection_gate_compares_map_and_box_recall_paired() -> None:
    preds, targets = _scene(7)
    same = compare_detection(("d:1", preds), ("d:2", preds), targets, ["RBC", "WBC"],
                             margin=0.01, samples=100, score_threshold=0.3)  # fmt: skip
    assert same.discrimination.metric == "map_50" and same.discrimination.ci95 == [0.0, 0.0]
    assert same.sensitivity.metric == "box_recall" and same.sensitivity.champion == 1.0
    assert same.passed
    # A challenger that finds only every other image's boxes: worse on both checks.
    empty = {"boxes": torch.zeros((0, 4)), "labels": torch.zeros(0, dtype=torch.int64),
             "scores": torch.zeros(0)}  # fmt: skip
    worse = [p if i % 2 else empty for i, p in enumerate(preds)]
    refused = compare_detection(("d:1", preds), ("d:2", worse), targets, ["RBC", "WBC"],
                                margin=0.01, samples=100, score_threshold=0.3)  # fmt: skip
    d = refused.discrimination
    assert d.difference < 0 and d.ci95 is not None and d.ci95[1] < 0
    assert refused.sensitivity.challenger < 0.8 and not refused.passed


def test_box_recall_needs_label_overlap_and_score() -> None:
    truth = {"boxes": torch.tensor([[0.0, 0, 10, 10]]), "labels": torch.tensor([1])}
    hit = {"boxes": torch.tensor([[1.0, 1, 10, 10]]), "labels": torch.tensor([1]),
           "scores": torch.tensor([0.9])}  # fmt: skip
    idx = np.arange(1)
    assert box_recall([hit], [truth], idx, 0.3) == 1.0
    assert box_recall([{**hit, "labels": torch.tensor([2])}], [truth], idx, 0.3) == 0.0
    assert box_recall([{**hit, "scores": torch.tensor([0.1])}], [truth], idx, 0.3) == 0.0
    far = {**hit, "boxes": torch.tensor([[20.0, 20, 30, 30]])}
    assert box_recall([far], [truth], idx, 0.3) == 0.0
