"""Training data from a dataset version's items: rows in Postgres, pixels in the blob store."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from sqlalchemy import select
from sqlalchemy.orm import Session
from torch.utils.data import Dataset

from shared.db.models import DatasetItem, Split
from shared.imaging.decode import decode_image
from shared.ml.presets import to_chw
from shared.storage import BlobStore

Transform = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class ItemRef:
    """What training needs of a dataset item, detached from the database session."""

    storage_key: str
    label: str | None
    boxes: list[dict[str, object]] | None
    width: int
    height: int
    mask_key: str | None = None  # segmentation label map
    group: str | None = None  # patient/study pseudonym: cross-validation keeps it in one fold


def load_items(session: Session, dataset_version_id: uuid.UUID) -> dict[str, list[ItemRef]]:
    """Items per split (train / validation / test), in a stable order (by sha256)."""
    rows = session.execute(
        select(
            DatasetItem.split,
            DatasetItem.storage_key,
            DatasetItem.label,
            DatasetItem.boxes,
            DatasetItem.width,
            DatasetItem.height,
            DatasetItem.mask_key,
            DatasetItem.group_id,
        )
        .where(DatasetItem.dataset_version_id == dataset_version_id)
        .order_by(DatasetItem.split, DatasetItem.sha256)
    ).all()
    splits: dict[str, list[ItemRef]] = {s.value: [] for s in Split}
    for split, key, label, boxes, width, height, mask_key, group in rows:
        splits[split].append(ItemRef(key, label, boxes, width, height, mask_key, group))
    return splits


def decode_item(store: BlobStore, item: ItemRef, *, max_pixels: int, size: int) -> torch.Tensor:
    """Decoded [0,1] float CxHxW tensor of an item (large JPEGs reduced while decoding)."""
    decoded = decode_image(store.get(item.storage_key), max_pixels=max_pixels, target_size=size)
    return to_chw(decoded.pixels)


class ItemsClassification(Dataset[tuple[torch.Tensor, int]]):
    """Single-label classification over dataset items; decodes each image on access."""

    def __init__(
        self,
        store: BlobStore,
        items: Sequence[ItemRef],
        labels: Sequence[str],
        transform: Transform,
        *,
        max_pixels: int,
        decode_size: int,
    ) -> None:
        index = {name: i for i, name in enumerate(labels)}
        unknown = {it.label for it in items if it.label not in index}
        if unknown:
            raise ValueError(f"items carry labels outside the dataset's labels: {unknown}")
        self.store = store
        self.items = list(items)
        self.targets = np.array([index[str(it.label)] for it in items], dtype=np.int64)
        self.num_classes = len(labels)
        self.transform = transform
        self.max_pixels = max_pixels
        self.decode_size = decode_size

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        image = decode_item(
            self.store, self.items[i], max_pixels=self.max_pixels, size=self.decode_size
        )
        return self.transform(image), int(self.targets[i])

    def class_counts(self) -> list[int]:
        return [int(c) for c in np.bincount(self.targets, minlength=self.num_classes)]

    def pixel_stats(self, limit: int = 512) -> tuple[float, float]:
        """Mean and std of [0,1] pixels over up to ``limit`` images (channels pooled)."""
        total = total_sq = count = 0.0
        for item in self.items[:limit]:
            x = decode_item(self.store, item, max_pixels=self.max_pixels, size=self.decode_size)
            x = x.double()
            total += float(x.sum())
            total_sq += float((x * x).sum())
            count += x.numel()
        mean = total / max(count, 1)
        return mean, max(total_sq / max(count, 1) - mean * mean, 1e-12) ** 0.5
