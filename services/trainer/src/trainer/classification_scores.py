"""Binary classification metrics in plain numpy (no sklearn/scipy in the image).

Convention everywhere: ``scores`` are probabilities of the positive class, ``labels`` are
0/1, and a case is called positive when ``score >= threshold``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

ArrayLike = npt.ArrayLike


def _check(scores: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = np.asarray(labels).reshape(-1)
    if s.shape != y.shape:
        raise ValueError(f"scores and labels differ in length: {s.shape[0]} vs {y.shape[0]}")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 or 1")
    return s, y.astype(bool)


def _ratio(num: float, den: float) -> float:
    # Undefined ratios (e.g. precision with no predicted positives) report 0, like sklearn's
    # zero_division=0, so cards stay valid JSON (no NaN).
    return float(num) / float(den) if den else 0.0


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks; tied values share the mean of the ranks they span."""
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    # Start index of each run of equal values, and the run each sorted element belongs to.
    starts = np.flatnonzero(np.r_[True, sorted_x[1:] != sorted_x[:-1]])
    ends = np.r_[starts[1:], len(x)]
    run_rank = (starts + 1 + ends) / 2.0  # mean of ranks starts+1 .. ends
    run_of = np.repeat(np.arange(len(starts)), ends - starts)
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = run_rank[run_of]
    return ranks


def auroc(scores: ArrayLike, labels: ArrayLike) -> float:
    """Area under the ROC curve via the Mann-Whitney U statistic (ties count one half).

    Raises:
        ValueError: only one class is present.
    """
    s, y = _check(scores, labels)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUROC needs both positive and negative cases")
    rank_sum = _average_ranks(s)[y].sum()
    u = rank_sum - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def roc_curve(scores: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC points (fpr, tpr, thresholds), thresholds descending, starting at (0, 0) with +inf."""
    s, y = _check(scores, labels)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("a ROC curve needs both positive and negative cases")
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    # Last index of each run of equal scores: one ROC point per distinct threshold.
    last = np.r_[np.flatnonzero(s[1:] != s[:-1]), len(s) - 1]
    tps = np.cumsum(y)[last]
    fps = (last + 1) - tps
    tpr = np.r_[0.0, tps / n_pos]
    fpr = np.r_[0.0, fps / n_neg]
    return fpr, tpr, np.r_[np.inf, s[last]]


def confusion_matrix(scores: ArrayLike, labels: ArrayLike, threshold: float = 0.5) -> np.ndarray:
    """2x2 int matrix [[tn, fp], [fn, tp]] (rows: truth, columns: prediction)."""
    s, y = _check(scores, labels)
    pred = s >= threshold
    return np.array(
        [
            [int((~y & ~pred).sum()), int((~y & pred).sum())],
            [int((y & ~pred).sum()), int((y & pred).sum())],
        ],
        dtype=np.int64,
    )


@dataclass(frozen=True)
class BinaryReport:
    """Threshold-dependent metrics derived from one confusion matrix."""

    threshold: float
    tn: int
    fp: int
    fn: int
    tp: int

    @property
    def n(self) -> int:
        return self.tn + self.fp + self.fn + self.tp

    @property
    def accuracy(self) -> float:
        return _ratio(self.tp + self.tn, self.n)

    @property
    def sensitivity(self) -> float:
        return _ratio(self.tp, self.tp + self.fn)

    @property
    def specificity(self) -> float:
        return _ratio(self.tn, self.tn + self.fp)

    @property
    def precision(self) -> float:
        return _ratio(self.tp, self.tp + self.fp)

    @property
    def f1(self) -> float:
        return _ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn)

    @property
    def balanced_accuracy(self) -> float:
        return (self.sensitivity + self.specificity) / 2.0

    def as_dict(self, digits: int = 4) -> dict[str, Any]:
        r = round
        return {
            "threshold": self.threshold,
            "accuracy": r(self.accuracy, digits),
            "sensitivity": r(self.sensitivity, digits),
            "specificity": r(self.specificity, digits),
            "precision": r(self.precision, digits),
            "f1": r(self.f1, digits),
            "balanced_accuracy": r(self.balanced_accuracy, digits),
            "confusion_matrix": [[self.tn, self.fp], [self.fn, self.tp]],
        }


def binary_report(scores: ArrayLike, labels: ArrayLike, threshold: float = 0.5) -> BinaryReport:
    (tn, fp), (fn, tp) = confusion_matrix(scores, labels, threshold).tolist()
    return BinaryReport(threshold=float(threshold), tn=tn, fp=fp, fn=fn, tp=tp)


def accuracy(scores: ArrayLike, labels: ArrayLike, threshold: float = 0.5) -> float:
    return binary_report(scores, labels, threshold).accuracy


def sensitivity(scores: ArrayLike, labels: ArrayLike, threshold: float = 0.5) -> float:
    return binary_report(scores, labels, threshold).sensitivity


def specificity(scores: ArrayLike, labels: ArrayLike, threshold: float = 0.5) -> float:
    return binary_report(scores, labels, threshold).specificity


def threshold_for_sensitivity(scores: ArrayLike, labels: ArrayLike, target: float) -> float:
    """Highest threshold whose sensitivity is at least ``target`` (so specificity is maximal).

    Raises:
        ValueError: target outside (0, 1] or no positive cases.
    """
    if not 0.0 < target <= 1.0:
        raise ValueError("target sensitivity must be in (0, 1]")
    s, y = _check(scores, labels)
    pos = np.sort(s[y])[::-1]
    if pos.size == 0:
        raise ValueError("no positive cases")
    # Calling the k highest-scoring positives positive reaches the target; ties only add more.
    k = math.ceil(target * pos.size - 1e-9)
    return float(pos[k - 1])


def youden_threshold(scores: ArrayLike, labels: ArrayLike) -> float:
    """Threshold maximising Youden's J = sensitivity + specificity - 1 (first/highest on ties)."""
    fpr, tpr, thresholds = roc_curve(scores, labels)
    j = tpr[1:] - fpr[1:]  # skip the +inf point, which calls nothing positive
    return float(thresholds[1:][int(np.argmax(j))])


def bootstrap_ci(
    metric: Callable[[np.ndarray, np.ndarray], float],
    scores: ArrayLike,
    labels: ArrayLike,
    *,
    samples: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> tuple[float, float] | None:
    """Percentile bootstrap interval of ``metric(scores, labels)`` over cases drawn with
    replacement (``scores`` may be 1-D or one row per case).

    Resamples on which the metric is undefined (e.g. AUROC of a one-class draw) are skipped.

    Returns:
        (low, high) of the ``1 - alpha`` interval, or None when ``samples`` is 0 or fewer
        than half of the resamples were defined.
    """
    s = np.asarray(scores)
    y = np.asarray(labels).reshape(-1)
    if samples <= 0 or len(y) == 0:
        return None
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(samples):
        idx = rng.integers(0, len(y), len(y))
        try:
            values.append(metric(s[idx], y[idx]))
        except ValueError:
            continue
    if len(values) < samples / 2:
        return None
    low, high = np.quantile(np.asarray(values), [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def macro_auroc(probs: ArrayLike, labels: ArrayLike) -> float:
    """Mean one-vs-rest AUROC over the classes present (probs: one column per class).

    Raises:
        ValueError: fewer than two classes present.
    """
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels).reshape(-1)
    present = [c for c in range(p.shape[1]) if (y == c).any()]
    if len(present) < 2:
        raise ValueError("AUROC needs at least two classes present")
    return float(np.mean([auroc(p[:, c], (y == c).astype(int)) for c in present]))


def multiclass_confusion(probs: ArrayLike, labels: ArrayLike) -> np.ndarray:
    """KxK int matrix of argmax predictions (rows: truth, columns: prediction)."""
    p = np.asarray(probs)
    y = np.asarray(labels).reshape(-1).astype(np.int64)
    k = p.shape[1]
    return np.bincount(y * k + p.argmax(axis=1), minlength=k * k).reshape(k, k)
