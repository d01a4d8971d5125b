"""One training epoch and one evaluation pass (after vision's references/classification)."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

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
    scaler: torch.amp.GradScaler | None = None,
    on_step: Callable[[int, float], None] | None = None,
) -> float:
    """Train for one pass over ``loader``; returns the sample-weighted mean training loss.

    Args:
        scaler: enables mixed precision (autocast to fp16 on CUDA) with loss scaling.
        on_step: called after every optimiser step with (1-based step, loss); it may raise
            to stop the epoch (cancellation).
    """
    model.train()
    total, n = 0.0, 0
    for step, (images, targets) in enumerate(loader, start=1):
        images, targets = images.to(device), targets.to(device)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.float16, enabled=scaler is not None):
            loss = criterion(model(images), targets)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        total += loss.item() * len(targets)
        n += len(targets)
        if on_step is not None:
            on_step(step, loss.item())
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


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    # No decay on biases and norm scales: shrinking them only fights BatchNorm.
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0},
    ]
