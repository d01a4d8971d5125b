"""Segmentation training data: dataset items with stored label maps, paired transforms.

Every geometric step is applied to the image and its mask with the same parameters (the
mask with nearest-neighbour sampling, so class ids never blend); intensity jitter touches
the image only.
"""

from __future__ import annotations

import io
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset

from shared.imaging.decode import decode_image
from shared.imaging.geometry import Letterbox
from shared.ml.presets import to_chw
from shared.ml.segmentation import letterbox_tensor
from shared.schemas.models import InputSpec
from shared.storage import BlobStore
from trainer.items import ItemRef


@dataclass(frozen=True)
class Sample:
    """A decoded case at its own size: 1 or 3 x H x W in [0, 1], H x W class ids."""

    image: torch.Tensor
    mask: torch.Tensor
    spacing: tuple[float, float] | None


def read_sample(store: BlobStore, item: ItemRef, *, max_pixels: int) -> Sample:
    decoded = decode_image(store.get(item.storage_key), max_pixels=max_pixels)
    assert item.mask_key is not None, "a segmentation item without a mask"
    with Image.open(io.BytesIO(store.get(item.mask_key))) as img:
        mask = torch.from_numpy(np.asarray(img, dtype=np.int64))
    spacing = tuple(decoded.pixel_spacing) if decoded.pixel_spacing else None
    return Sample(to_chw(decoded.pixels), mask, spacing)  # type: ignore[arg-type]


def _normalise(image: torch.Tensor, spec: InputSpec) -> torch.Tensor:
    rgb = image.expand(3, -1, -1) if image.shape[0] == 1 else image
    mean = torch.tensor(spec.mean * 3 if len(spec.mean) == 1 else spec.mean).view(3, 1, 1)
    std = torch.tensor(spec.std * 3 if len(spec.std) == 1 else spec.std).view(3, 1, 1)
    return (rgb - mean) / std


def letterbox_pair(
    image: torch.Tensor, mask: torch.Tensor, spec: InputSpec
) -> tuple[torch.Tensor, torch.Tensor, Letterbox]:
    """Normalise, then letterbox image (bilinear) and mask (nearest); padding = 0 / background."""
    x, geo = letterbox_tensor(_normalise(image, spec), spec.size)
    m, _ = letterbox_tensor(mask.unsqueeze(0).float(), spec.size, mode="nearest")
    return x, m[0].long(), geo


class SegmentationPresetTrain:
    """Random affine (scale 0.8-1.2, rotation +-15 deg, shift 10 %), optional flips,
    brightness/contrast jitter and, on 30 % of images, a gamma in 0.7-1.5 (nnU-Net's range:
    ultrasound and CT/MR windows differ mostly in their tone curve); applied before the
    letterbox so the whole field of view moves."""

    def __init__(self, spec: InputSpec, *, hflip_prob: float = 0.0) -> None:
        self.spec, self.hflip_prob = spec, hflip_prob

    def __call__(
        self, image: torch.Tensor, mask: torch.Tensor, rng: random.Random
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if rng.random() < self.hflip_prob:
            image, mask = image.flip(-1), mask.flip(-1)
        angle = math.radians(rng.uniform(-15, 15))
        scale = rng.uniform(0.8, 1.2)
        tx, ty = rng.uniform(-0.1, 0.1) * 2, rng.uniform(-0.1, 0.1) * 2
        cos, sin = math.cos(angle) / scale, math.sin(angle) / scale
        theta = torch.tensor([[cos, -sin, tx], [sin, cos, ty]], dtype=torch.float32)
        grid = F.affine_grid(theta.unsqueeze(0), [1, 1, *image.shape[-2:]], align_corners=False)
        image = F.grid_sample(image.unsqueeze(0), grid, mode="bilinear", align_corners=False)[0]
        mask = F.grid_sample(mask[None, None].float(), grid, mode="nearest", align_corners=False)[
            0, 0
        ].long()
        contrast, brightness = rng.uniform(0.8, 1.2), rng.uniform(-0.1, 0.1)
        image = ((image - image.mean()) * contrast + image.mean() + brightness).clamp(0, 1)
        if rng.random() < 0.3:
            image = image ** rng.uniform(0.7, 1.5)
        x, m, _ = letterbox_pair(image, mask, self.spec)
        return x, m


class SegmentationDataset(Dataset[Any]):
    """Train mode: augmented, letterboxed pairs. Eval mode: also the original mask and geometry
    so predictions are scored in each image's own pixel grid."""

    def __init__(
        self,
        store: BlobStore,
        items: Sequence[ItemRef],
        spec: InputSpec,
        *,
        max_pixels: int,
        train: SegmentationPresetTrain | None = None,
        seed: int = 0,
    ) -> None:
        self.store, self.items, self.spec = store, list(items), spec
        self.max_pixels, self.train, self.seed = max_pixels, train, seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Any:
        sample = read_sample(self.store, self.items[i], max_pixels=self.max_pixels)
        if self.train is not None:
            # Seeded per (epoch, item): a resumed job sees the same augmentation stream.
            rng = random.Random(hash((self.seed, self.epoch, i)) & 0xFFFFFFFF)
            return self.train(sample.image, sample.mask, rng)
        x, _, geo = letterbox_pair(sample.image, sample.mask, self.spec)
        return x, sample.mask, geo, sample.spacing


def collate_eval(batch: list[Any]) -> tuple[torch.Tensor, list[Any], list[Any], list[Any]]:
    xs, masks, geos, spacings = zip(*batch, strict=True)
    return torch.stack(xs), list(masks), list(geos), list(spacings)
