"""Turn decoded pixels into network input, identically for training and inference."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from shared.schemas.models import InputSpec

# ITU-R BT.601 luma, as PIL's convert("L").
_LUMA = torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)


def to_chw(pixels: np.ndarray) -> torch.Tensor:
    """float [0,1] HxW or HxWx3 array -> float32 CxHxW tensor."""
    t = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32))
    return t.unsqueeze(0) if t.ndim == 2 else t.permute(2, 0, 1)


def _resize(t: torch.Tensor, size: int) -> torch.Tensor:
    if t.shape[-2:] == (size, size):
        return t
    return F.interpolate(
        t.unsqueeze(0), size=(size, size), mode="bilinear", antialias=True, align_corners=False
    ).squeeze(0)


class ClassificationPresetEval:
    """Eval transform for a classifier: channels, crop, resize, normalise."""

    def __init__(self, spec: InputSpec) -> None:
        self.spec = spec
        self.mean = torch.tensor(spec.mean).view(-1, 1, 1)
        self.std = torch.tensor(spec.std).view(-1, 1, 1)

    def __call__(self, image: torch.Tensor | np.ndarray) -> torch.Tensor:
        t = to_chw(image) if isinstance(image, np.ndarray) else image
        if self.spec.channels == 1 and t.shape[0] == 3:
            t = (t * _LUMA).sum(0, keepdim=True)
        if self.spec.resize == "center_crop":
            h, w = t.shape[-2:]
            side = min(h, w)
            top, left = (h - side) // 2, (w - side) // 2
            t = t[:, top : top + side, left : left + side]
        if self.spec.native_size is not None:
            t = _resize(t, self.spec.native_size)
        t = _resize(t, self.spec.size)
        if self.spec.channels == 3 and t.shape[0] == 1:
            t = t.expand(3, -1, -1)
        return (t - self.mean) / self.std
