"""Segmentation metrics against hand-computed cases, including empty masks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchmetrics.functional.segmentation import hausdorff_distance

from shared.imaging.geometry import letterbox
from shared.ml.segmentation import decide, letterbox_tensor, probabilities_to_original
from trainer.segmentation.metrics import SegmentationScores, case_scores, hd95


def _square(shape: tuple[int, int], top: int, left: int, side: int) -> np.ndarray:
    m = np.zeros(shape, dtype=np.int64)
    m[top : top + side, left : left + side] = 1
    return m


def test_dice_iou_hand_computed() -> None:
    pred = _square((10, 10), 0, 0, 4)  # 16 px
    target = np.zeros((10, 10), dtype=np.int64)
    target[0:4, 0:2] = 1  # 8 px, all inside pred
    s = case_scores(pred, target, 2, None)
    assert s["dice"][0] == pytest.approx(2 * 8 / (16 + 8))
    assert s["iou"][0] == pytest.approx(8 / 16)


def test_empty_vs_empty_is_perfect_and_one_empty_is_zero() -> None:
    empty = np.zeros((6, 6), dtype=np.int64)
    both = case_scores(empty, empty, 2, (0.5, 0.5))
    assert both == {"dice": [1.0], "iou": [1.0], "hd95_px": [0.0], "hd95_mm": [0.0]}
    missed = case_scores(empty, _square((6, 6), 1, 1, 2), 2, None)
    assert missed["dice"] == [0.0] and missed["iou"] == [0.0] and missed["hd95_px"] == [None]


def test_hd95_shifted_square_and_spacing() -> None:
    a, b = _square((20, 20), 5, 5, 6), _square((20, 20), 5, 8, 6)  # shifted 3 columns
    # Every boundary pixel is at most 3 px from the other boundary; many are exactly 3.
    assert hd95(a, b) == pytest.approx(3.0)
    assert hd95(a, b, (1.0, 0.5)) == pytest.approx(1.5)  # column spacing 0.5 mm
    # The maximum (HD100) agrees with torchmetrics' Hausdorff distance.
    tm = hausdorff_distance(
        torch.from_numpy(a)[None], torch.from_numpy(b)[None], num_classes=2, input_format="index"
    )
    assert float(tm) == pytest.approx(3.0)


def test_report_means_over_cases_with_interval() -> None:
    scores = SegmentationScores(["background", "lesion"])
    scores.add(_square((8, 8), 0, 0, 4), _square((8, 8), 0, 0, 4))  # Dice 1
    scores.add(np.zeros((8, 8), np.int64), _square((8, 8), 0, 0, 4))  # Dice 0, HD undefined
    report = scores.report(samples=200)
    assert report["dice"] == 0.5 and report["n_cases"] == 2
    low, high = report["dice_ci95"]
    assert 0.0 <= low <= 0.5 <= high <= 1.0
    assert report["hd95_px"] == 0.0 and report["hd95_px_undefined"] == 1
    assert report["per_class"]["lesion"]["dice"] == 0.5


def test_letterbox_round_trip_is_exact_on_a_non_square_image() -> None:
    """A mask letterboxed into the network grid comes back pixel for pixel."""
    height, width, size = 120, 200, 100  # 2:1 downscale keeps every edge on the grid
    mask = torch.zeros((height, width), dtype=torch.long)
    mask[20:60, 40:140] = 1
    boxed, geo = letterbox_tensor(mask[None].float(), size, mode="nearest")
    assert geo == letterbox(width, height, size) and geo.pad_top == 20 and geo.pad_left == 0
    probs = torch.cat([1 - boxed, boxed])  # a perfect network on the input grid
    back = decide(probabilities_to_original(probs, geo, width, height))
    assert back.shape == (height, width)
    assert torch.equal(back.long(), mask)
