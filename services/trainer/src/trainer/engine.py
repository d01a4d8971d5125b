"""One training epoch and one evaluation pass (after vision's references/classification)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class EvalOutput:
    probs: np.ndarray  # (N, C) softmax probabilities
    labels: np.ndarray  # (N,) int
    loss: float  # mean unweighted cross-entropy


def make_criterion(
    class_counts: Sequence[int] | None = None, *, label_smoothing: float = 0.0
) -> nn.CrossEntropyLoss:
    """Cross-entropy, optionally weighted inversely to class frequency ("balanced").

    Balanced weights make each class contribute equally, so the decision boundary at 0.5 is
    not pulled towards the majority class of the training set.
    """
    weight = None
    if class_counts is not None:
        counts = torch.tensor(class_counts, dtype=torch.float32)
        if (counts == 0).any():
            raise ValueError(f"a class has no training examples: {list(class_counts)}")
        weight = counts.sum() / (len(counts) * counts)
    return nn.CrossEntropyLoss(weight=weight, label_smoothing=label_smoothing)


def train_one_epoch(
    model: nn.Module,
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    device: torch.device,
    *,
    channels_last: bool = False,
) -> float:
    """Train for one pass over ``loader``; returns the sample-weighted mean training loss."""
    model.train()
    total, n = 0.0, 0
    for images, targets in loader:
        images, targets = images.to(device), targets.to(device)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        loss = criterion(model(images), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.item() * len(targets)
        n += len(targets)
    return total / max(n, 1)


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    device: torch.device,
    *,
    channels_last: bool = False,
) -> EvalOutput:
    """Softmax probabilities and labels for every sample, in loader order."""
    model.eval()
    probs, labels, total = [], [], 0.0
    for images, targets in loader:
        images = images.to(device)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        logits = model(images).float().cpu()
        total += nn.functional.cross_entropy(logits, targets, reduction="sum").item()
        probs.append(logits.softmax(dim=1).numpy())
        labels.append(targets.numpy())
    p = np.concatenate(probs) if probs else np.empty((0, 0), dtype=np.float32)
    y = np.concatenate(labels) if labels else np.empty(0, dtype=np.int64)
    return EvalOutput(probs=p, labels=y, loss=total / max(len(y), 1))
