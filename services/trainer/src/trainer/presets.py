"""Training transforms: augmentation on the [0,1] image, then the shared eval preset.

Training must feed the network exactly as the worker will (``shared.ml.presets``), so the
augmentation runs first, at the native resolution, and the eval preset does the rest
(crop, reduce to native size, resize, channels, normalise).
"""

from __future__ import annotations

import numpy as np
import torch
from torchvision.transforms import v2

from shared.ml.presets import ClassificationPresetEval, to_chw
from shared.schemas.models import InputSpec


class ClassificationPresetTrain:
    """Mild geometric and intensity augmentation suited to grayscale chest X-rays.

    Horizontal flips are off by default: the heart sits on the patient's left, so a flipped
    chest film is not a plausible image (dextrocardia aside); enable with ``hflip_prob``.
    """

    def __init__(
        self,
        spec: InputSpec,
        *,
        degrees: float = 10.0,
        translate: float = 0.05,
        scale: tuple[float, float] = (0.9, 1.1),
        brightness: float = 0.2,
        contrast: float = 0.2,
        hflip_prob: float = 0.0,
    ) -> None:
        steps: list[torch.nn.Module] = [
            v2.RandomAffine(
                degrees=degrees,
                translate=(translate, translate),
                scale=scale,
                interpolation=v2.InterpolationMode.BILINEAR,
            )
        ]
        if hflip_prob > 0:
            steps.append(v2.RandomHorizontalFlip(hflip_prob))
        if brightness > 0 or contrast > 0:
            steps.append(v2.ColorJitter(brightness=brightness, contrast=contrast))
        self.augment = v2.Compose(steps)
        self.eval = ClassificationPresetEval(spec)

    def __call__(self, image: torch.Tensor | np.ndarray) -> torch.Tensor:
        t = to_chw(image) if isinstance(image, np.ndarray) else image
        augmented: torch.Tensor = self.augment(t)
        return self.eval(augmented.clamp_(0.0, 1.0))


__all__ = ["ClassificationPresetEval", "ClassificationPresetTrain"]
