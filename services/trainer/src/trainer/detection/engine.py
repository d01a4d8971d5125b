"""One training epoch and one evaluation pass for torchvision-style detectors."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

import torch
from torch import nn

from shared.ml.detection import DEFAULT_MAX_DETECTIONS, DEFAULT_NMS_IOU, filter_detections
from trainer.detection.average_precision import DetectionMetrics
from trainer.detection.data import Target

Batch = tuple[list[torch.Tensor], list[Target]]
# Evaluation keeps every box the model is fairly sure of; AP integrates over the scores.
EVAL_SCORE_THRESHOLD = 0.01


def _to(device: torch.device, images: list[torch.Tensor], targets: list[Target]) -> Batch:
    return (
        [im.to(device, non_blocking=True) for im in images],
        [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in targets],
    )


def train_one_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loader: Iterable[Batch],
    device: torch.device,
    scaler: torch.amp.GradScaler | None = None,
    on_step: Callable[[int, float], None] | None = None,
) -> float:
    """Train for one pass over ``loader``; returns the mean summed loss per batch.

    Args:
        scaler: a CUDA GradScaler enables fp16 autocast (mixed precision); None trains in fp32.
        on_step: called after each step with (step index, loss), e.g. for a scheduler or
            progress reporting.

    Raises:
        FloatingPointError: the loss became NaN/inf (a diverging run must not be saved).
    """
    model.train()
    total, steps = 0.0, 0
    for step, (images, targets) in enumerate(loader):
        images, targets = _to(device, images, targets)
        with torch.autocast(device.type, dtype=torch.float16, enabled=scaler is not None):
            losses = model(images, targets)
            loss = sum(losses.values())
        value = float(loss.detach())
        if not math.isfinite(value):
            parts = {k: round(float(v), 4) for k, v in losses.items()}
            raise FloatingPointError(f"detection loss is {value} at step {step}: {parts}")
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        total, steps = total + value, steps + 1
        if on_step is not None:
            on_step(step, value)
    return total / max(steps, 1)


@torch.inference_mode()
def predict(model: nn.Module, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
    """Raw detections, filtered as a default request would be but with a low score floor."""
    model.eval()
    outputs = model(images)
    return [
        filter_detections(
            o,
            score_threshold=EVAL_SCORE_THRESHOLD,
            nms_iou=DEFAULT_NMS_IOU,
            max_detections=DEFAULT_MAX_DETECTIONS,
        )
        for o in outputs
    ]


def evaluate(
    model: nn.Module, loader: Iterable[Batch], device: torch.device, labels: Sequence[str]
) -> dict[str, object]:
    """mAP@0.5 overall and per class, and mAP over IoU 0.40:0.05:0.75, on ``loader``."""
    metrics = DetectionMetrics(labels)
    for images, targets in loader:
        images, targets = _to(device, images, targets)
        metrics.update(predict(model, images), targets)
    return metrics.compute()
