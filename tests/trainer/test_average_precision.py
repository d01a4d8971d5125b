"""Detection metrics against hand-computed average precision (COCO 101-point interpolation)."""

from __future__ import annotations

import pytest
import torch

from trainer.detection.average_precision import RSNA_IOUS, DetectionMetrics

LABELS = ["cell", "platelet"]


def _det(boxes: list[list[float]], labels: list[int], scores: list[float] | None = None):
    out = {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor(labels, dtype=torch.int64),
    }
    if scores is not None:
        out["scores"] = torch.tensor(scores, dtype=torch.float32)
    return out


def test_perfect_detections_score_one() -> None:
    m = DetectionMetrics(LABELS)
    target = _det([[0, 0, 10, 10], [20, 20, 40, 40]], [1, 2])
    m.update([_det([[0, 0, 10, 10], [20, 20, 40, 40]], [1, 2], [0.9, 0.8])], [target])
    r = m.compute()
    assert r["map_50"] == pytest.approx(1.0)
    assert r["map_40_75"] == pytest.approx(1.0)
    assert r["ap_50_per_class"] == {"cell": 1.0, "platelet": 1.0}


def test_ranked_hit_miss_hit_matches_hand_computation() -> None:
    # Two ground-truth cells; detections by score: hit (0.9), false positive (0.8), hit (0.7).
    # Precision/recall: (1, 0.5), (0.5, 0.5), (2/3, 1). Interpolated precision is 1 for
    # recall <= 0.5 (51 of the 101 recall points) and 2/3 above (50 points):
    # AP = (51 * 1 + 50 * 2/3) / 101.
    target = _det([[0, 0, 10, 10], [50, 50, 60, 60]], [1, 1])
    pred = _det(
        [[0, 0, 10, 10], [100, 100, 110, 110], [50, 50, 60, 60]], [1, 1, 1], [0.9, 0.8, 0.7]
    )
    m = DetectionMetrics(LABELS)
    m.update([pred], [target])
    expected = (51 + 50 * 2 / 3) / 101
    r = m.compute()
    assert r["map_50"] == pytest.approx(expected, abs=1e-4)
    assert r["ap_50_per_class"]["cell"] == pytest.approx(expected, abs=1e-4)
    assert r["ap_50_per_class"]["platelet"] is None  # absent from truth and predictions


def test_iou_range_counts_a_loose_box_only_at_low_thresholds() -> None:
    # Ground truth [0,0,10,10]; prediction [0,0,10,15] has IoU 100/150 = 0.667: a hit at
    # IoU 0.40, 0.45, ..., 0.65 (6 thresholds), a miss at 0.70 and 0.75. AP is 1 or 0 per
    # threshold, so the RSNA-range mean is 6/8.
    assert RSNA_IOUS == [0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75]
    m = DetectionMetrics(LABELS)
    m.update([_det([[0, 0, 10, 15]], [1], [0.9])], [_det([[0, 0, 10, 10]], [1])])
    r = m.compute()
    assert r["map_50"] == pytest.approx(1.0)
    assert r["map_40_75"] == pytest.approx(6 / 8, abs=1e-4)


def test_wrong_label_is_a_miss() -> None:
    # The right place with the wrong label finds no cell (AP 0). Platelet has no ground truth
    # anywhere, so its AP is undefined (COCO convention) and it does not enter the mean.
    m = DetectionMetrics(LABELS)
    m.update([_det([[0, 0, 10, 10]], [2], [0.9])], [_det([[0, 0, 10, 10]], [1])])
    r = m.compute()
    assert r["ap_50_per_class"] == {"cell": 0.0, "platelet": None}
    assert r["map_50"] == pytest.approx(0.0)
