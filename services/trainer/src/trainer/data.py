"""Datasets over MedMNIST-style ``.npz`` files (``{split}_images`` uint8, ``{split}_labels``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from shared.storage import sha256_file as sha256_file  # one implementation; used by __main__

Transform = Callable[[torch.Tensor], torch.Tensor]


class NpzClassification(Dataset[tuple[torch.Tensor, int]]):
    """One split of a single-label MedMNIST 2D npz, as float [0,1] CxHxW tensors.

    Args:
        path: the ``.npz`` file.
        split: ``train``, ``val`` or ``test``.
        classes: label names, index = label value in the file.
        transform: applied to the [0,1] tensor (augmentation + preset).
    """

    def __init__(
        self,
        path: str | Path,
        split: str,
        classes: Sequence[str],
        transform: Transform | None = None,
    ) -> None:
        with np.load(path) as data:
            images = data[f"{split}_images"]
            labels = data[f"{split}_labels"]
        if images.dtype != np.uint8 or images.ndim not in (3, 4):
            raise ValueError(
                f"{split}_images: expected uint8 (N,H,W[,3]), got {images.dtype} {images.shape}"
            )
        # Multi-label sets (ChestMNIST) have one column per finding; this dataset is single-label.
        if labels.ndim == 2 and labels.shape[1] != 1:
            raise ValueError(f"{split}_labels has {labels.shape[1]} columns; need single-label")
        labels = labels.reshape(-1).astype(np.int64)
        if len(labels) != len(images):
            raise ValueError(f"{split}: {len(images)} images but {len(labels)} labels")
        if labels.size and (labels.min() < 0 or labels.max() >= len(classes)):
            raise ValueError(f"{split}: label values outside 0..{len(classes) - 1}")
        self.images = images
        self.labels = labels
        self.classes = list(classes)
        self.split = split
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = torch.from_numpy(self.images[index]).float().div_(255.0)
        image = image.unsqueeze(0) if image.ndim == 2 else image.permute(2, 0, 1)
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.labels[index])

    def class_counts(self) -> list[int]:
        return [int(c) for c in np.bincount(self.labels, minlength=len(self.classes))]

    def pixel_stats(self) -> tuple[float, float]:
        """Mean and std of all pixels in [0,1] (channels pooled: grayscale-replicated input)."""
        x = self.images.astype(np.float64) / 255.0
        return float(x.mean()), float(x.std())
