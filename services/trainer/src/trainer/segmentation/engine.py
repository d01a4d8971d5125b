"""Dice + cross-entropy loss and the evaluation pass in each image's own pixel grid."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from shared.ml.segmentation import decide, probabilities_to_original
from trainer.segmentation.metrics import SegmentationScores


class DiceCELoss(nn.Module):
    """Cross-entropy plus soft Dice over the foreground classes (batch-pooled, as nnU-Net).

    Cross-entropy gives every pixel a gradient from the first step; Dice counters the
    background's dominance when structures are small.
    """

    def __init__(self, smooth: float = 1.0) -> None:
        super().__init__()
        self.smooth = smooth

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        ce = F.cross_entropy(logits.float(), target)
        probs = logits.float().softmax(1)[:, 1:]
        onehot = F.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2)[:, 1:].float()
        dims = (0, 2, 3)
        inter = (probs * onehot).sum(dims)
        denom = probs.sum(dims) + onehot.sum(dims)
        dice = (2 * inter + self.smooth) / (denom + self.smooth)
        return ce + (1 - dice.mean())


@torch.inference_mode()
def evaluate(
    network: nn.Module,
    loader: Iterable[Any],
    device: torch.device,
    labels: Sequence[str],
    *,
    threshold: float | None = None,
) -> SegmentationScores:
    """Predict every case, map back to its own grid (exact letterbox inverse) and score it."""
    network.eval()
    scores = SegmentationScores(labels)
    for images, masks, geos, spacings in loader:
        probs = network(images.to(device)).float().softmax(1).cpu()
        for p, mask, geo, spacing in zip(probs, masks, geos, spacings, strict=True):
            height, width = mask.shape
            pred = decide(probabilities_to_original(p, geo, width, height), threshold)
            scores.add(pred.numpy(), mask.numpy(), spacing)
    return scores
