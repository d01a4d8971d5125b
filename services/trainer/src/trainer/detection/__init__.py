"""Object detection training: data from items or VOC folders, epochs, mAP evaluation.

Entry points for the training-jobs task (task == "detection"):
- ``DetectionItem``, ``DetectionDataset``, ``DetectionPresetTrain``, ``DetectionPresetEvalBoxes``,
  ``collate``, ``read_voc``: data.
- ``train_one_epoch(model, optimizer, loader, device, scaler=None, on_step=None) -> float``
- ``evaluate(model, loader, device, labels) -> {"map_50", "map_40_75", "ap_50_per_class"}``
- ``shared.ml.detection.build_detector(architecture, labels, input_spec, pretrained_backbone=)``
"""

from trainer.detection.average_precision import DetectionMetrics
from trainer.detection.data import (
    DetectionDataset,
    DetectionItem,
    DetectionPresetEvalBoxes,
    DetectionPresetTrain,
    collate,
    read_voc,
)
from trainer.detection.engine import evaluate, predict, train_one_epoch

__all__ = [
    "DetectionDataset",
    "DetectionItem",
    "DetectionMetrics",
    "DetectionPresetEvalBoxes",
    "DetectionPresetTrain",
    "collate",
    "evaluate",
    "predict",
    "read_voc",
    "train_one_epoch",
]
