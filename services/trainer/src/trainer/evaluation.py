"""Validation metrics per epoch and the test-split report with 95% bootstrap intervals."""

from __future__ import annotations

from typing import Any

import numpy as np

from shared.schemas.training import LOWER_IS_BETTER
from trainer import classification_scores as M
from trainer.card import summarise_split


def _safe(metric: Any, *args: Any) -> float | None:
    try:
        return round(float(metric(*args)), 4)
    except ValueError:  # undefined on this split (e.g. one class only)
        return None


def classification_val_metrics(
    probs: np.ndarray, labels: np.ndarray, loss: float
) -> dict[str, float | None]:
    """AUROC (binary, or macro one-vs-rest), accuracy at argmax, and loss."""
    if probs.shape[1] == 2:
        auroc = _safe(M.auroc, probs[:, 1], labels)
    else:
        auroc = _safe(M.macro_auroc, probs, labels)
    accuracy = float((probs.argmax(axis=1) == labels).mean()) if len(labels) else None
    return {
        "auroc": auroc,
        "accuracy": None if accuracy is None else round(accuracy, 4),
        "loss": round(loss, 4),
    }


def improved(value: float | None, best: float | None, monitor: str) -> bool:
    """Whether ``value`` of the monitored metric beats ``best`` (None never beats anything)."""
    if value is None:
        return False
    if best is None:
        return True
    return value < best if monitor in LOWER_IS_BETTER else value > best


def _ci(metric: Any, scores: np.ndarray, labels: np.ndarray, samples: int, seed: int) -> Any:
    interval = M.bootstrap_ci(metric, scores, labels, samples=samples, seed=seed)
    return None if interval is None else [round(interval[0], 4), round(interval[1], 4)]


def binary_test_report(
    scores: np.ndarray, labels: np.ndarray, threshold: float, *, samples: int, seed: int
) -> dict[str, Any]:
    """`summarise_split` plus 95% bootstrap intervals (cases resampled with replacement)."""
    report = summarise_split(scores, labels, threshold)

    def at_op(name: str) -> Any:
        return lambda s, y: getattr(M.binary_report(s, y, threshold), name)

    report["ci95"] = {
        "method": f"percentile bootstrap, {samples} resamples of the test cases, seed {seed}",
        "auroc": _ci(M.auroc, scores, labels, samples, seed),
        **{
            f"{name}_at_operating_point": _ci(at_op(name), scores, labels, samples, seed)
            for name in ("accuracy", "sensitivity", "specificity", "precision", "f1")
        },
    }
    return report


def multiclass_test_report(
    probs: np.ndarray, labels: np.ndarray, names: list[str], *, samples: int, seed: int
) -> dict[str, Any]:
    """Accuracy, macro AUROC (with 95% CIs), per-class one-vs-rest metrics, confusion."""

    def accuracy(p: np.ndarray, y: np.ndarray) -> float:
        return float((p.argmax(axis=1) == y).mean())

    pred = probs.argmax(axis=1)
    per_class = {}
    for c, name in enumerate(names):
        r = M.binary_report((pred == c).astype(float), (labels == c).astype(int), 0.5)
        per_class[name] = {
            "n": int((labels == c).sum()),
            "sensitivity": round(r.sensitivity, 4),
            "specificity": round(r.specificity, 4),
            "precision": round(r.precision, 4),
            "f1": round(r.f1, 4),
        }
    return {
        "n": int(len(labels)),
        "accuracy": round(accuracy(probs, labels), 4),
        "macro_auroc": _safe(M.macro_auroc, probs, labels),
        "per_class": per_class,
        "confusion_matrix": M.multiclass_confusion(probs, labels).tolist(),
        "ci95": {
            "method": f"percentile bootstrap, {samples} resamples of the test cases, seed {seed}",
            "accuracy": _ci(accuracy, probs, labels, samples, seed),
            "macro_auroc": _ci(M.macro_auroc, probs, labels, samples, seed),
        },
    }


def validation_roc(
    scores: np.ndarray, labels: np.ndarray, limit: int = 101
) -> list[dict[str, float]]:
    """Validation ROC points (threshold, sensitivity, specificity), thinned to ``limit``."""
    fpr, tpr, thresholds = M.roc_curve(scores, labels)
    points = [
        {"threshold": float(min(t, 1.0)), "sensitivity": float(s), "specificity": float(1 - f)}
        for f, s, t in zip(fpr[1:], tpr[1:], thresholds[1:], strict=True)
    ]
    if len(points) > limit:
        keep = np.unique(np.linspace(0, len(points) - 1, limit).round().astype(int))
        points = [points[i] for i in keep]
    return [{k: round(v, 6) for k, v in p.items()} for p in points]
