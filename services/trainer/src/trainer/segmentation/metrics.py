"""Segmentation metrics per case: Dice and IoU (torchmetrics), HD95 (surface distances).

Definitions (per case and foreground class; the background is not scored):
- Dice = 2|P∩G| / (|P| + |G|), IoU = |P∩G| / |P∪G|, from ``torchmetrics``. When prediction
  and ground truth are both empty the model was right not to find anything: Dice = IoU = 1.0
  (torchmetrics leaves this undefined, NaN / -1). One empty, the other not: 0.0.
- HD95: the 95th percentile of the symmetric boundary-to-boundary distances (each boundary
  pixel of P to the nearest boundary pixel of G and vice versa, pooled, as MONAI's
  ``compute_hausdorff_distance(percentile=95)``), in pixels and, with the pixel spacing, in
  mm. Both empty: 0.0. Exactly one empty: undefined (None), counted in ``hd95_undefined``
  and left out of the mean rather than replaced by an arbitrary large number.
- Means are over cases (images), then over classes; bootstrap intervals resample cases.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from scipy import ndimage
from torchmetrics.functional.segmentation import dice_score, mean_iou

from trainer.classification_scores import bootstrap_ci


def _surface(mask: np.ndarray) -> np.ndarray:
    return mask & ~ndimage.binary_erosion(mask, structure=np.ones((3, 3), bool), border_value=0)


def hd95(
    pred: np.ndarray, target: np.ndarray, spacing: tuple[float, float] = (1.0, 1.0)
) -> float | None:
    """95th-percentile symmetric Hausdorff distance between two boolean masks.

    Args:
        spacing: (row, column) distance between pixel centres (DICOM PixelSpacing order).
    """
    p, g = pred.astype(bool), target.astype(bool)
    if not p.any() and not g.any():
        return 0.0
    if not p.any() or not g.any():
        return None
    sp, sg = _surface(p), _surface(g)
    to_g = ndimage.distance_transform_edt(~sg, sampling=spacing)
    to_p = ndimage.distance_transform_edt(~sp, sampling=spacing)
    distances = np.concatenate([to_g[sp], to_p[sg]])
    return float(np.percentile(distances, 95))


def case_scores(
    pred: np.ndarray, target: np.ndarray, num_classes: int, spacing: tuple[float, float] | None
) -> dict[str, list[float | None]]:
    """Dice, IoU, HD95 (px, and mm with spacing) per foreground class for one H x W case."""
    p = torch.from_numpy(pred.astype(np.int64)).unsqueeze(0)
    g = torch.from_numpy(target.astype(np.int64)).unsqueeze(0)
    dice = dice_score(p, g, num_classes=num_classes, include_background=False,
                      average="none", input_format="index")[0]  # fmt: skip
    iou = mean_iou(p, g, num_classes=num_classes, include_background=False,
                   per_class=True, input_format="index")[0]  # fmt: skip
    out: dict[str, list[float | None]] = {"dice": [], "iou": [], "hd95_px": [], "hd95_mm": []}
    for k in range(1, num_classes):
        pk, gk = pred == k, target == k
        both_empty = not pk.any() and not gk.any()
        out["dice"].append(1.0 if both_empty else float(torch.nan_to_num(dice[k - 1])))
        out["iou"].append(1.0 if both_empty else max(float(iou[k - 1]), 0.0))
        out["hd95_px"].append(hd95(pk, gk))
        out["hd95_mm"].append(hd95(pk, gk, spacing) if spacing else None)
    return out


class SegmentationScores:
    """Accumulates per-case scores; ``report`` gives means, per-class values and CIs."""

    def __init__(self, labels: Sequence[str]) -> None:
        self.labels = list(labels)
        self.cases: list[dict[str, list[float | None]]] = []

    def add(
        self, pred: np.ndarray, target: np.ndarray, spacing: tuple[float, float] | None = None
    ) -> None:
        self.cases.append(case_scores(pred, target, len(self.labels), spacing))

    def _matrix(self, name: str) -> np.ndarray:
        rows = [[np.nan if v is None else v for v in c[name]] for c in self.cases]
        return np.asarray(rows, dtype=np.float64).reshape(len(self.cases), -1)

    def summary(self) -> dict[str, float | None]:
        """Mean Dice and IoU over cases and classes (the monitored validation numbers)."""
        if not self.cases:
            return {"dice": None, "iou": None}
        return {
            "dice": round(float(np.nanmean(self._matrix("dice"))), 6),
            "iou": round(float(np.nanmean(self._matrix("iou"))), 6),
        }

    def report(self, *, samples: int = 1000, seed: int = 0) -> dict[str, Any]:
        """Test report: per-class and mean metrics with 95% bootstrap CIs over cases."""
        out: dict[str, Any] = {"n_cases": len(self.cases), "per_class": {}}
        foreground = self.labels[1:]
        for name in ("dice", "iou", "hd95_px", "hd95_mm"):
            m = self._matrix(name)
            if m.size == 0 or np.isnan(m).all():
                out[name] = None
                continue

            def mean(rows: np.ndarray, _: np.ndarray) -> float:
                if np.isnan(rows).all():  # a resample of undefined cases only: skipped
                    raise ValueError("undefined")
                value = float(np.nanmean(rows))
                if np.isnan(value):
                    raise ValueError("undefined")
                return value

            ci = bootstrap_ci(mean, m, np.zeros(len(m)), samples=samples, seed=seed)
            out[name] = round(float(np.nanmean(m)), 4)
            out[f"{name}_ci95"] = None if ci is None else [round(ci[0], 4), round(ci[1], 4)]
            for k, label in enumerate(foreground):
                column = m[:, k]
                per = out["per_class"].setdefault(label, {})
                defined = column[~np.isnan(column)]
                per[name] = round(float(defined.mean()), 4) if defined.size else None
                if name == "dice" and defined.size:
                    c = bootstrap_ci(mean, column, np.zeros(len(column)), samples=samples,
                                     seed=seed)  # fmt: skip
                    per["dice_ci95"] = None if c is None else [round(c[0], 4), round(c[1], 4)]
            if name.startswith("hd95"):
                out[f"{name}_undefined"] = int(np.isnan(m).sum())
        return out
