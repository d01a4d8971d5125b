"""Detection metrics: mAP@0.5 (overall and per class) and mAP over IoU 0.40:0.05:0.75.

Computed with torchmetrics' MeanAveragePrecision (COCO-style 101-point interpolated AP, up to
100 detections per image). The IoU 0.40-0.75 average is the RSNA Pneumonia Detection
Challenge's range.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchmetrics.detection import MeanAveragePrecision

RSNA_IOUS = [round(0.40 + 0.05 * i, 2) for i in range(8)]  # 0.40, 0.45, ..., 0.75

Detections = dict[str, torch.Tensor]


class DetectionMetrics:
    """Accumulate predictions and targets (boxes xyxy, labels = class ids 1..K)."""

    def __init__(self, labels: Sequence[str]) -> None:
        self.labels = list(labels)
        self._at_50 = MeanAveragePrecision(iou_thresholds=[0.5], class_metrics=True)
        self._rsna = MeanAveragePrecision(iou_thresholds=RSNA_IOUS)

    def update(self, preds: list[Detections], targets: list[Detections]) -> None:
        preds = [{k: v.detach().cpu() for k, v in p.items()} for p in preds]
        targets = [{k: v.detach().cpu() for k, v in t.items()} for t in targets]
        self._at_50.update(preds, targets)
        self._rsna.update(preds, targets)

    def compute(self) -> dict[str, object]:
        """``map_50``, ``map_40_75``, ``ap_50_per_class`` ({label: AP}, None: class absent)."""
        at_50 = self._at_50.compute()
        rsna = self._rsna.compute()
        per_class: dict[str, float | None] = dict.fromkeys(self.labels)
        classes = at_50["classes"].reshape(-1).tolist()
        values = at_50["map_per_class"].reshape(-1).tolist()
        for class_id, ap in zip(classes, values, strict=True):
            if 1 <= class_id <= len(self.labels):
                per_class[self.labels[class_id - 1]] = None if ap < 0 else round(float(ap), 4)
        return {
            "map_50": round(float(at_50["map"]), 4),
            "map_40_75": round(float(rsna["map"]), 4),
            "ap_50_per_class": per_class,
        }
