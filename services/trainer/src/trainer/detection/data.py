"""Detection training data: items with pixel boxes, Pascal VOC folders, transforms, collate."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from defusedxml.ElementTree import parse as parse_xml
from torch.utils.data import Dataset
from torchvision.transforms import v2

from shared.imaging.decode import decode_image
from shared.imaging.geometry import clip_boxes
from shared.ml.detection import letterbox_tensor, to_rgb_chw

Target = dict[str, torch.Tensor]
# Boxes thinner than this (after clipping) are annotation errors (BCCD has two zero-area ones);
# torchvision's detectors refuse zero-width boxes.
MIN_BOX_SIDE = 1.0
DEFAULT_MAX_PIXELS = 50_000_000


@dataclass(frozen=True)
class DetectionItem:
    """One image and its boxes, as stored in dataset_item.boxes.

    ``boxes`` is ``[{"label": str, "box": [x1, y1, x2, y2]}]`` in pixel coordinates of the
    ``width x height`` image; ``source`` is a file path or the encoded image bytes.
    """

    source: str | Path | bytes
    boxes: list[dict[str, Any]]
    width: int
    height: int


def decode_source(item: DetectionItem) -> np.ndarray:
    data = item.source if isinstance(item.source, bytes) else Path(item.source).read_bytes()
    return decode_image(data, max_pixels=DEFAULT_MAX_PIXELS).pixels


def read_voc(folder: Path, split: str, labels: Sequence[str]) -> list[DetectionItem]:
    """Items of a Pascal VOC folder (Annotations/, JPEGImages/, ImageSets/Main/<split>.txt).

    Raises:
        ValueError: an annotation names a label outside ``labels``.
    """
    stems = (folder / "ImageSets" / "Main" / f"{split}.txt").read_text().split()
    items = []
    for stem in stems:
        # defusedxml: no DTDs or entities from a downloaded dataset's annotation files.
        root = parse_xml(folder / "Annotations" / f"{stem}.xml", forbid_dtd=True).getroot()
        size = root.find("size")
        assert size is not None, f"{stem}.xml has no <size>"
        width, height = int(size.findtext("width", "0")), int(size.findtext("height", "0"))
        boxes = []
        for obj in root.iter("object"):
            name = (obj.findtext("name") or "").strip()
            if name not in labels:
                raise ValueError(f"{stem}.xml: label {name!r} is not one of {list(labels)}")
            bb = obj.find("bndbox")
            assert bb is not None, f"{stem}.xml: object without <bndbox>"
            box = [float(bb.findtext(k, "0")) for k in ("xmin", "ymin", "xmax", "ymax")]
            boxes.append({"label": name, "box": box})
        items.append(DetectionItem(folder / "JPEGImages" / f"{stem}.jpg", boxes, width, height))
    return items


def item_target(
    item: DetectionItem, labels: Sequence[str], width: int, height: int
) -> tuple[np.ndarray, np.ndarray]:
    """Boxes (N x 4, in the decoded ``width x height`` image) and class ids (label index + 1),
    degenerate boxes dropped."""
    index = {name: i + 1 for i, name in enumerate(labels)}
    if not item.boxes:
        return np.zeros((0, 4)), np.zeros((0,), dtype=np.int64)
    boxes = np.array([b["box"] for b in item.boxes], dtype=np.float64)
    # Decoding may reduce large images: boxes follow the decoded size.
    boxes *= np.array([width / item.width, height / item.height] * 2)
    boxes = clip_boxes(boxes, width, height)
    ids = np.array([index[b["label"]] for b in item.boxes], dtype=np.int64)
    keep = ((boxes[:, 2] - boxes[:, 0]) >= MIN_BOX_SIDE) & (
        (boxes[:, 3] - boxes[:, 1]) >= MIN_BOX_SIDE
    )
    return boxes[keep], ids[keep]


class DetectionPresetTrain:
    """Letterbox, random horizontal/vertical flips and mild photometric jitter.

    Flips in both directions suit microscopy and most cross-sectional images; pass
    ``vflip_prob=0`` for data with a meaningful up/down (e.g. chest films).
    """

    def __init__(
        self,
        size: int,
        mean: Sequence[float],
        *,
        hflip_prob: float = 0.5,
        vflip_prob: float = 0.5,
        photometric: bool = True,
    ) -> None:
        self.size, self.mean = size, list(mean)
        self.hflip_prob, self.vflip_prob = hflip_prob, vflip_prob
        self.jitter = v2.ColorJitter(0.15, 0.15, 0.15, 0.02) if photometric else None

    def __call__(self, image: torch.Tensor, boxes: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
        if self.jitter is not None:
            image = self.jitter(image).clamp(0, 1)
        image, geometry = letterbox_tensor(image, self.size, self.mean)
        boxes = geometry.to_input(boxes)
        if random.random() < self.hflip_prob:
            image = image.flip(-1)
            boxes[:, [0, 2]] = self.size - boxes[:, [2, 0]]
        if random.random() < self.vflip_prob:
            image = image.flip(-2)
            boxes[:, [1, 3]] = self.size - boxes[:, [3, 1]]
        return image, boxes


class DetectionPresetEvalBoxes:
    """Letterbox only (the same geometry the worker applies)."""

    def __init__(self, size: int, mean: Sequence[float]) -> None:
        self.size, self.mean = size, list(mean)

    def __call__(self, image: torch.Tensor, boxes: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
        image, geometry = letterbox_tensor(image, self.size, self.mean)
        return image, geometry.to_input(boxes)


class DetectionDataset(Dataset[tuple[torch.Tensor, Target]]):
    """(3 x size x size image in [0, 1], {"boxes", "labels"}) pairs in network-input pixels."""

    def __init__(
        self,
        items: Sequence[DetectionItem],
        labels: Sequence[str],
        transform: Callable[[torch.Tensor, np.ndarray], tuple[torch.Tensor, np.ndarray]],
        *,
        read: Callable[[DetectionItem], np.ndarray] = decode_source,
    ) -> None:
        self.items, self.labels, self.transform, self.read = (
            list(items),
            list(labels),
            transform,
            read,
        )

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, Target]:
        item = self.items[i]
        image = to_rgb_chw(self.read(item))
        boxes, ids = item_target(item, self.labels, image.shape[-1], image.shape[-2])
        image, boxes = self.transform(image, boxes)
        target = {
            "boxes": torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.as_tensor(ids, dtype=torch.int64),
        }
        return image, target


def collate(
    batch: Sequence[tuple[torch.Tensor, Target]],
) -> tuple[list[torch.Tensor], list[Target]]:
    """Detection batches are lists: images may carry different numbers of boxes."""
    images, targets = zip(*batch, strict=True)
    return list(images), list(targets)
