"""Paired champion/challenger statistics for the gate (no broker needed; see trainer.gate).

The interval of the difference comes from the trainer's own percentile bootstrap
(`classification_scores.bootstrap_ci`) over both versions' scores stacked per image, so
each resample draws the same images for both: a paired comparison.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torchvision.ops import box_iou

from shared.learning.gate_rule import Comparison, GateReport, decide
from trainer import classification_scores as M
from trainer.detection.average_precision import DetectionMetrics

SEED = 0


@dataclass(frozen=True)
class Scored:
    ref: str
    probs: np.ndarray  # (N, C)
    threshold: float  # the card's operating point (binary), else argmax


def _metrics(probs: np.ndarray, labels: np.ndarray, threshold: float) -> tuple[float, float]:
    """(AUROC or macro AUROC, sensitivity: at the operating point, or macro recall)."""
    if probs.shape[1] == 2:
        return M.auroc(probs[:, 1], labels), M.sensitivity(probs[:, 1], labels, threshold)
    pred = probs.argmax(axis=1)
    recall = [float((pred[labels == c] == c).mean()) for c in np.unique(labels)]
    return M.macro_auroc(probs, labels), float(np.mean(recall))


def compare(
    champion: Scored, challenger: Scored, labels: np.ndarray, *, margin: float, samples: int
) -> GateReport:
    """Paired comparison on the same images; `decide` then applies the rule."""
    stacked = np.stack([champion.probs, challenger.probs], axis=1)  # (N, 2, C)
    thresholds = (champion.threshold, challenger.threshold)

    def diff(index: int) -> Callable[[np.ndarray, np.ndarray], float]:
        def metric(s: np.ndarray, y: np.ndarray) -> float:
            a = _metrics(s[:, 0], y, thresholds[0])[index]
            return _metrics(s[:, 1], y, thresholds[1])[index] - a

        return metric

    old, new = (
        _metrics(champion.probs, labels, thresholds[0]),
        _metrics(challenger.probs, labels, thresholds[1]),
    )
    binary = champion.probs.shape[1] == 2
    comparisons = []
    for index, name in enumerate(
        ("auroc" if binary else "macro_auroc", "sensitivity" if binary else "macro_recall")
    ):
        ci = M.bootstrap_ci(diff(index), stacked, labels, samples=samples, seed=SEED)
        comparisons.append(
            Comparison(
                metric=name,
                champion=round(old[index], 6),
                challenger=round(new[index], 6),
                difference=round(new[index] - old[index], 6),
                ci95=None if ci is None else [round(ci[0], 6), round(ci[1], 6)],
            )
        )
    return decide(
        GateReport(
            champion=champion.ref,
            challenger=challenger.ref,
            test_set={"images": int(len(labels)), "positives": int((labels == 1).sum())},
            margin=margin,
            discrimination=comparisons[0],
            sensitivity=comparisons[1],
            method=f"paired percentile bootstrap over locked test images, {samples} "
            f"resamples, seed {SEED}; sensitivity at each version's own operating point",
        )
    )


# ---------------------------------------------------------------- detection (mAP)

Detections = list[dict[str, Any]]  # per image: {"boxes": (K, 4), "labels": (K,), "scores"}
# A box counts as found at the operating point: same label, IoU >= 0.5, score >= this
# (the worker's default score threshold, shared.ml.detection).
FOUND_IOU = 0.5


def _map50(preds: Detections, targets: Detections, labels: list[str], idx: np.ndarray) -> float:
    metrics = DetectionMetrics(labels)
    metrics.update([preds[i] for i in idx], [targets[i] for i in idx])
    return float(metrics.compute()["map_50"])  # type: ignore[arg-type]


def box_recall(
    preds: Detections, targets: Detections, idx: np.ndarray, score_threshold: float
) -> float:
    """Share of true boxes matched one-to-one (greedy by score) by a kept prediction."""
    found = total = 0
    for i in idx:
        truth, pred = targets[i], preds[i]
        total += len(truth["labels"])
        keep = pred["scores"] >= score_threshold
        boxes, names = pred["boxes"][keep], pred["labels"][keep]
        order = torch.argsort(pred["scores"][keep], descending=True)
        used: set[int] = set()
        iou = box_iou(boxes, truth["boxes"]) if len(boxes) and len(truth["boxes"]) else None
        for p in order.tolist():
            if iou is None:
                break
            for t in torch.argsort(iou[p], descending=True).tolist():
                if t in used or iou[p, t] < FOUND_IOU:
                    continue
                if names[p] == truth["labels"][t]:
                    used.add(t)
                    found += 1
                    break
    if total == 0:
        raise ValueError("no true boxes in this sample")
    return found / total


def compare_detection(
    champion: tuple[str, Detections],
    challenger: tuple[str, Detections],
    targets: Detections,
    labels: list[str],
    *,
    margin: float,
    samples: int,
    score_threshold: float,
) -> GateReport:
    """mAP@0.5 difference (paired over images) and box recall at the score threshold."""
    (old_ref, old), (new_ref, new) = champion, challenger
    index = np.arange(len(targets))

    def map_diff(s: np.ndarray, _: np.ndarray) -> float:
        return _map50(new, targets, labels, s) - _map50(old, targets, labels, s)

    def recall_diff(s: np.ndarray, _: np.ndarray) -> float:
        return box_recall(new, targets, s, score_threshold) - box_recall(
            old, targets, s, score_threshold
        )

    pairs = [
        ("map_50", _map50(old, targets, labels, index), _map50(new, targets, labels, index),
         map_diff),
        ("box_recall", box_recall(old, targets, index, score_threshold),
         box_recall(new, targets, index, score_threshold), recall_diff),
    ]  # fmt: skip
    comparisons = []
    for name, a, b, metric in pairs:
        ci = M.bootstrap_ci(metric, index, np.zeros(len(index)), samples=samples, seed=SEED)
        comparisons.append(
            Comparison(
                metric=name,
                champion=round(a, 6),
                challenger=round(b, 6),
                difference=round(b - a, 6),
                ci95=None if ci is None else [round(ci[0], 6), round(ci[1], 6)],
            )
        )
    return decide(
        GateReport(
            champion=old_ref,
            challenger=new_ref,
            test_set={"images": len(targets), "boxes": sum(len(t["labels"]) for t in targets)},
            margin=margin,
            discrimination=comparisons[0],
            sensitivity=comparisons[1],
            method=f"paired percentile bootstrap over locked test images, {samples} resamples, "
            f"seed {SEED}; mAP@0.5 (torchmetrics), box recall at IoU {FOUND_IOU} and score "
            f">= {score_threshold}",
        )
    )
