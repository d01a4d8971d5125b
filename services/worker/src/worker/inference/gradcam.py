"""Grad-CAM (Selvaraju et al., ICCV 2017) for the torchvision classifiers we serve.

The heatmap is the ReLU of the target layer's activations weighted by the spatially
averaged gradients of the predicted class's logit. Gradients are enabled for that one
image only; the batched forward pass stays under inference_mode.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from shared.schemas.models import InputSpec

# The last convolutional block of each family: spatial, and closest to the decision.
_TARGET_LAYERS = {
    "resnet": "layer4",
    "densenet": "features",
    "efficientnet": "features",
    "mobilenet": "features",
}


def target_layer(network: nn.Module, architecture: str) -> nn.Module:
    """The module whose output Grad-CAM explains; falls back to the last Conv2d."""
    for prefix, name in _TARGET_LAYERS.items():
        if architecture.startswith(prefix) and hasattr(network, name):
            return getattr(network, name)  # type: ignore[no-any-return]
    convs = [m for m in network.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError(f"{architecture} has no convolutional layer to explain")
    return convs[-1]


def grad_cam(
    network: nn.Module, layer: nn.Module, image: torch.Tensor, class_index: int
) -> np.ndarray:
    """CxHxW input (preprocessed) -> HxW float heatmap in [0, 1] at the input size."""
    captured: dict[str, torch.Tensor] = {}

    def keep(_module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
        output.retain_grad()
        captured["activations"] = output

    device = next(network.parameters()).device
    handle = layer.register_forward_hook(keep)
    try:
        with torch.inference_mode(False), torch.enable_grad():
            x = image.clone().unsqueeze(0).to(device)
            logits = network(x)
            network.zero_grad(set_to_none=True)
            logits[0, class_index].backward()
            acts = captured["activations"]
            assert acts.grad is not None
            weights = acts.grad.mean(dim=(2, 3), keepdim=True)
            cam = F.relu((weights * acts).sum(dim=1, keepdim=True))
            cam = F.interpolate(cam, size=image.shape[-2:], mode="bilinear", align_corners=False)
    finally:
        handle.remove()
        network.zero_grad(set_to_none=True)
    cam = cam[0, 0].detach().float().cpu()
    peak = float(cam.max())
    return (cam / peak if peak > 0 else cam).numpy()


def _colormap(values: np.ndarray) -> np.ndarray:
    """[0, 1] -> RGB uint8, a jet-like ramp (blue, cyan, yellow, red)."""
    v = np.clip(values, 0, 1)[..., None]
    r = np.clip(1.5 - np.abs(4 * v - 3), 0, 1)
    g = np.clip(1.5 - np.abs(4 * v - 2), 0, 1)
    b = np.clip(1.5 - np.abs(4 * v - 1), 0, 1)
    return (np.concatenate([r, g, b], axis=-1) * 255).astype(np.uint8)


def heatmap_in_image(cam: np.ndarray, spec: InputSpec, height: int, width: int) -> np.ndarray:
    """Map a heatmap over the network input back onto an HxW image.

    Undoes the preset's geometry: center_crop looked at the central square only (the
    rest gets 0), squash stretched the whole image.
    """
    if spec.resize == "squash":
        return _resize(cam, width, height)
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    full = np.zeros((height, width), dtype=np.float32)
    full[top : top + side, left : left + side] = _resize(cam, side, side)
    return full


def _resize(values: np.ndarray, width: int, height: int) -> np.ndarray:
    image = Image.fromarray(values.astype(np.float32), mode="F")
    return np.asarray(image.resize((width, height), Image.Resampling.BILINEAR))


def overlay(pixels: np.ndarray, heat: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """Blend a [0, 1] heatmap (HxW) over decoded pixels (HxW or HxWx3 in [0, 1]) -> RGB uint8."""
    gray = pixels if pixels.ndim == 3 else np.repeat(pixels[..., None], 3, axis=-1)
    base = np.clip(gray, 0, 1) * 255
    weight = alpha * heat[..., None]  # cold regions keep the image readable
    blended = base * (1 - weight) + _colormap(heat).astype(np.float32) * weight
    return blended.round().astype(np.uint8)


def to_original_size(rgb: np.ndarray, width: int, height: int) -> np.ndarray:
    """The decoder may have reduced a large image; the artifact matches the upload's size."""
    if rgb.shape[1] == width and rgb.shape[0] == height:
        return rgb
    return np.asarray(Image.fromarray(rgb).resize((width, height), Image.Resampling.BILINEAR))
