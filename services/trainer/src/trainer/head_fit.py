"""Head-only fine-tuning: a frozen pretrained backbone, features computed once, a linear head.

With a few hundred training images, moving millions of pretrained weights mostly fits noise;
training only the classification head on the frozen ImageNet features is the standard
small-data transfer recipe, and it costs one backbone pass per image instead of one per
image and epoch. The fit loop (early stopping, checkpoints, per-epoch rows, cancellation)
is the same as full fine-tuning; the result is the whole network with the trained head.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from shared.schemas.training import CLASSIFICATION_LR, TrainingParams
from shared.storage import BlobStore
from trainer.engine import make_criterion, param_groups
from trainer.evaluation import classification_val_metrics
from trainer.fit import FitHooks, Loop, fit, make_scheduler
from trainer.fit_state import FitState
from trainer.starting_points import head_name


@dataclass(frozen=True)
class Features:
    """Backbone features of a set of images (and of their mirrors, for test-time flips)."""

    plain: torch.Tensor  # (N, D)
    flipped: torch.Tensor  # (N, D)
    labels: torch.Tensor  # (N,)

    def subset(self, index: np.ndarray) -> Features:
        i = torch.as_tensor(index, dtype=torch.long)
        return Features(self.plain[i], self.flipped[i], self.labels[i])


def _split(network: nn.Module) -> tuple[nn.Module, nn.Linear, str]:
    """(backbone with the head replaced by Identity, a copy of the head, the head's name)."""
    name = head_name(network)
    backbone = copy.deepcopy(network)
    parent_path, _, attr = name.rpartition(".")
    parent = backbone.get_submodule(parent_path) if parent_path else backbone
    head = copy.deepcopy(getattr(parent, attr))
    setattr(parent, attr, nn.Identity())
    return backbone, head, name


@torch.inference_mode()
def extract(
    network: nn.Module,
    ds: Dataset[tuple[torch.Tensor, int]],
    device: torch.device,
    *,
    on_batch: Callable[[int, int], None] | None = None,
) -> Features:
    """Features of every image and its mirror (the backbone in eval mode, BatchNorm frozen)."""
    backbone, _, _ = _split(network)
    backbone.eval().to(device)
    plain, flipped, labels = [], [], []
    loader = DataLoader(ds, 32)
    for i, (images, targets) in enumerate(loader, start=1):
        images = images.to(device)
        plain.append(backbone(images).float().cpu())
        flipped.append(backbone(torch.flip(images, dims=[3])).float().cpu())
        labels.append(targets)
        if on_batch is not None:
            on_batch(i, len(loader))
    return Features(torch.cat(plain), torch.cat(flipped), torch.cat(labels))


def head_probs(head_state: dict[str, torch.Tensor], x: torch.Tensor) -> np.ndarray:
    """Softmax probabilities of a linear head given its state (weight, bias) and features."""
    logits = x @ head_state["weight"].float().T + head_state["bias"].float()
    return logits.softmax(dim=1).numpy()


def full_state(network: nn.Module, head_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The whole network's state dict with the trained head in place."""
    name = head_name(network)
    state = {k: v.detach().cpu().clone() for k, v in network.state_dict().items()}
    for k, v in head_state.items():
        state[f"{name}.{k}"] = v.detach().cpu().clone()
    return state


def fit_head(
    network: nn.Module,
    train: Features,
    val: Features,
    *,
    class_counts: list[int],
    params: TrainingParams,
    monitor: str,
    store: BlobStore,
    resume_key: str | None,
    hooks: FitHooks,
    meta: dict[str, Any] | None = None,
) -> FitState:
    """Train the head on cached features; ``best_state`` is the head's (weight, bias).

    The head trains on features standardised with the training set's mean and deviation
    (every feature then moves the logits at the same rate, whatever its scale); the
    standardisation is folded into the returned weight and bias, so they apply to raw features.
    """
    mean = train.plain.mean(dim=0)
    std = train.plain.std(dim=0).clamp_min(1e-6)
    train, val = _standardised(train, mean, std), _standardised(val, mean, std)
    _, head, _ = _split(network)
    nn.init.zeros_(head.weight)  # every class starts at equal probability
    nn.init.zeros_(head.bias)
    generator = torch.Generator().manual_seed(params.seed)
    criterion = make_criterion(
        class_counts if params.class_weights == "balanced" else None,
        label_smoothing=params.label_smoothing,
    )
    lr = params.lr if params.lr is not None else CLASSIFICATION_LR
    optimizer = torch.optim.AdamW(param_groups(head, params.weight_decay), lr=lr)
    n = len(train.labels)
    batch = min(params.batch_size, n)
    drop_last = n > batch and n % batch == 1
    steps = n // batch if drop_last else -(-n // batch)

    def train_epoch(on_step: Callable[[int, float], None]) -> float:
        head.train()
        order = torch.randperm(n, generator=generator)
        # The mirror is a free augmentation here: each step sees a random half mirrored.
        mirror = torch.rand(n, generator=generator) < params.hflip_prob
        total = 0.0
        for step in range(steps):
            idx = order[step * batch : (step + 1) * batch]
            x = torch.where(mirror[idx, None], train.flipped[idx], train.plain[idx])
            loss = criterion(head(x), train.labels[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
            on_step(step + 1, loss.item())
        return total / max(steps * batch if drop_last else n, 1)

    @torch.inference_mode()
    def validate() -> tuple[float | None, dict[str, float | None]]:
        head.eval()
        logits = head(val.plain)
        loss = float(nn.functional.cross_entropy(logits, val.labels).item())
        probs = logits.softmax(dim=1).numpy()
        return loss, classification_val_metrics(probs, val.labels.numpy(), loss)

    loop = Loop(
        head,
        optimizer,
        make_scheduler(optimizer, params, monitor),
        None,
        generator,
        steps,
        train_epoch,
        validate,
    )
    state = fit(
        loop,
        params=params,
        monitor=monitor,
        store=store,
        resume_key=resume_key,
        hooks=hooks,
        meta=meta,
    )
    assert state.best_state is not None
    weight = state.best_state["weight"] / std  # w . (x - m) / s + b = (w / s) . x + b'
    bias = state.best_state["bias"] - weight @ mean
    state.best_state = {"weight": weight, "bias": bias}
    return state


def _standardised(features: Features, mean: torch.Tensor, std: torch.Tensor) -> Features:
    return Features((features.plain - mean) / std, (features.flipped - mean) / std, features.labels)
