"""Paired champion/challenger statistics for the gate (numpy only; see trainer.gate).

The interval of the difference comes from the trainer's own percentile bootstrap
(`classification_scores.bootstrap_ci`) over both versions' scores stacked per image, so
each resample draws the same images for both: a paired comparison.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from shared.learning.gate_rule import Comparison, GateReport, decide
from trainer import classification_scores as M

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
