"""Test-time augmentation (flip averaging): measured on validation, used only if it helps.

A model's card says whether the workers average its probabilities over the image and its
horizontal mirror. ``auto`` turns that on only when it does not lower validation AUROC, so
a model whose task has laterality (where the mirror is a different case) keeps plain inference.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from trainer import evaluation as E

TtaChoice = Literal["none", "hflip"]


@torch.inference_mode()
def predict(
    network: nn.Module,
    ds: Dataset[tuple[torch.Tensor, int]],
    device: torch.device,
    *,
    hflip: bool = False,
    batch_size: int = 64,
) -> np.ndarray:
    """Softmax probabilities (N, C) in dataset order, of the mirrored images when ``hflip``."""
    network.eval()
    out = []
    for images, _ in DataLoader(ds, batch_size):
        images = images.to(device)
        if hflip:
            images = torch.flip(images, dims=[3])
        out.append(network(images).float().softmax(dim=1).cpu().numpy())
    return np.concatenate(out) if out else np.empty((0, 0), dtype=np.float32)


def _auroc(probs: np.ndarray, labels: np.ndarray) -> float | None:
    return E.classification_val_metrics(probs, labels, 0.0)["auroc"]


def decide(
    mode: str, plain: np.ndarray, flipped: np.ndarray, labels: np.ndarray
) -> tuple[TtaChoice, dict[str, Any]]:
    """Whether the model serves with flip averaging, and the evidence for the card.

    Args:
        mode: the job's ``tta`` parameter (auto, none, hflip).
        plain / flipped: validation probabilities of the images and of their mirrors.
        labels: validation labels.
    """
    averaged = (plain + flipped) / 2
    without, with_tta = _auroc(plain, labels), _auroc(averaged, labels)
    record: dict[str, Any] = {
        "mode": mode,
        "validation_auroc_without": without,
        "validation_auroc_with_hflip": with_tta,
        "n_validation": int(len(labels)),
    }
    if mode in ("none", "hflip"):
        choice: TtaChoice = "hflip" if mode == "hflip" else "none"
        record.update(used=choice, reason="set by the caller")
        return choice, record
    if without is None or with_tta is None:
        record.update(used="none", reason="validation AUROC undefined (one class): not measured")
        return "none", record
    if with_tta >= without:
        record.update(used="hflip", reason=f"validation AUROC {with_tta} >= {without} without")
        return "hflip", record
    record.update(used="none", reason=f"validation AUROC {with_tta} < {without} without")
    return "none", record


def apply(choice: TtaChoice, plain: np.ndarray, flipped: np.ndarray) -> np.ndarray:
    """The probabilities a worker serving ``choice`` would produce."""
    return (plain + flipped) / 2 if choice == "hflip" else plain
