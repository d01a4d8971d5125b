"""trainer.classification_scores against cases small enough to compute by hand."""

from __future__ import annotations

import numpy as np
import pytest

from trainer import classification_scores as M

# 4 positives (0.9, 0.8, 0.6, 0.3) and 3 negatives (0.7, 0.2, 0.1).
SCORES = [0.9, 0.8, 0.7, 0.6, 0.3, 0.2, 0.1]
LABELS = [1, 1, 0, 1, 1, 0, 0]


def test_auroc_hand_computed() -> None:
    # Pairs won by the positive: 0.9 -> 3, 0.8 -> 3, 0.6 -> 2, 0.3 -> 2 = 10 of 4 * 3.
    assert M.auroc(SCORES, LABELS) == pytest.approx(10 / 12)
    # The classic 4-sample example (sklearn's docs): 3 of 4 pairs ordered correctly.
    assert M.auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)


def test_auroc_ties_count_half() -> None:
    # Positive 0.5 vs negative 0.5 is a tie: 1 + 0.5 + 2 = 3.5 of 4 pairs.
    assert M.auroc([0.2, 0.5, 0.5, 0.9], [0, 0, 1, 1]) == pytest.approx(0.875)
    assert M.auroc([0.5, 0.5, 0.5, 0.5], [0, 1, 0, 1]) == pytest.approx(0.5)


def test_auroc_extremes_and_errors() -> None:
    assert M.auroc([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == 1.0
    assert M.auroc([0.1, 0.2, 0.8, 0.9], [1, 1, 0, 0]) == 0.0
    with pytest.raises(ValueError, match="both"):
        M.auroc([0.1, 0.2], [1, 1])
    with pytest.raises(ValueError, match="0 or 1"):
        M.auroc([0.1, 0.2], [0, 2])
    with pytest.raises(ValueError, match="length"):
        M.auroc([0.1, 0.2, 0.3], [0, 1])


def test_roc_curve_points() -> None:
    fpr, tpr, thr = M.roc_curve([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1])
    np.testing.assert_allclose(thr, [np.inf, 0.8, 0.4, 0.35, 0.1])
    np.testing.assert_allclose(tpr, [0, 0.5, 0.5, 1, 1])
    np.testing.assert_allclose(fpr, [0, 0, 0.5, 0.5, 1])
    # Tied scores collapse into one point (a diagonal step).
    fpr, tpr, thr = M.roc_curve([0.2, 0.5, 0.5, 0.9], [0, 0, 1, 1])
    np.testing.assert_allclose(thr, [np.inf, 0.9, 0.5, 0.2])
    np.testing.assert_allclose(tpr, [0, 0.5, 1, 1])
    np.testing.assert_allclose(fpr, [0, 0, 0.5, 1])


def test_auroc_equals_area_under_roc_curve() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 300)
    scores = np.round(rng.random(300) * 0.5 + labels * 0.3, 2)  # rounding creates ties
    fpr, tpr, _ = M.roc_curve(scores, labels)
    area = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
    assert M.auroc(scores, labels) == pytest.approx(area)


def test_confusion_matrix_and_report() -> None:
    # Threshold 0.5 calls the first four positive: tp 3 (0.9, 0.8, 0.6), fp 1 (0.7),
    # fn 1 (0.3), tn 2 (0.2, 0.1).
    np.testing.assert_array_equal(M.confusion_matrix(SCORES, LABELS, 0.5), [[2, 1], [1, 3]])
    r = M.binary_report(SCORES, LABELS, 0.5)
    assert (r.tn, r.fp, r.fn, r.tp, r.n) == (2, 1, 1, 3, 7)
    assert r.accuracy == pytest.approx(5 / 7)
    assert r.sensitivity == pytest.approx(3 / 4)
    assert r.specificity == pytest.approx(2 / 3)
    assert r.precision == pytest.approx(3 / 4)
    assert r.f1 == pytest.approx(0.75)
    assert r.balanced_accuracy == pytest.approx((3 / 4 + 2 / 3) / 2)
    d = r.as_dict()
    assert d["confusion_matrix"] == [[2, 1], [1, 3]]
    assert d["accuracy"] == round(5 / 7, 4)
    assert M.accuracy(SCORES, LABELS) == r.accuracy
    assert M.sensitivity(SCORES, LABELS) == r.sensitivity
    assert M.specificity(SCORES, LABELS) == r.specificity


def test_threshold_is_inclusive_and_zero_division_is_zero() -> None:
    assert M.confusion_matrix([0.5], [1], 0.5).tolist() == [[0, 0], [0, 1]]
    r = M.binary_report([0.1, 0.2], [0, 1], 0.9)  # nothing called positive
    assert r.precision == 0.0
    assert r.f1 == 0.0
    assert r.specificity == 1.0


def test_threshold_for_sensitivity() -> None:
    # Positive scores, descending: 0.9, 0.8, 0.6, 0.3.
    assert M.threshold_for_sensitivity(SCORES, LABELS, 0.5) == 0.8
    assert M.threshold_for_sensitivity(SCORES, LABELS, 0.75) == 0.6
    assert M.threshold_for_sensitivity(SCORES, LABELS, 0.76) == 0.3
    assert M.threshold_for_sensitivity(SCORES, LABELS, 1.0) == 0.3
    for target in (0.1, 0.5, 0.75, 0.95, 1.0):
        t = M.threshold_for_sensitivity(SCORES, LABELS, target)
        assert M.sensitivity(SCORES, LABELS, t) >= target
    with pytest.raises(ValueError):
        M.threshold_for_sensitivity(SCORES, LABELS, 0.0)


def test_youden_threshold() -> None:
    # J per threshold: 0.9 .25, 0.8 .5, 0.7 .17, 0.6 .42, 0.3 .67, 0.2 .33, 0.1 0.
    assert M.youden_threshold(SCORES, LABELS) == 0.3
