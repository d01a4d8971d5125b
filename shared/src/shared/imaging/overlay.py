"""Draw detection boxes on an image (Pillow only, torch-free)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

# Distinct, colour-blind-friendly colours (Okabe-Ito), one per label in card order.
PALETTE = [
    (230, 159, 0),
    (86, 180, 233),
    (0, 158, 115),
    (240, 228, 66),
    (0, 114, 178),
    (213, 94, 0),
    (204, 121, 167),
]


def to_uint8_rgb(pixels: np.ndarray) -> np.ndarray:
    """[0, 1] float HxW or HxWx3 -> uint8 HxWx3."""
    rgb = np.repeat(pixels[..., None], 3, axis=2) if pixels.ndim == 2 else pixels
    out: np.ndarray = (np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8)
    return out


def draw_detections(
    pixels: np.ndarray, detections: Sequence[dict[str, Any]], labels: Sequence[str]
) -> np.ndarray:
    """Return a uint8 RGB copy of ``pixels`` with each ``{"label", "score", "box"}`` drawn.

    Boxes are in the pixel coordinates of ``pixels``.
    """
    image = Image.fromarray(to_uint8_rgb(pixels))
    draw = ImageDraw.Draw(image)
    width = max(1, round(max(image.size) / 400))
    for det in detections:
        colour = PALETTE[list(labels).index(det["label"]) % len(PALETTE)]
        x1, y1, x2, y2 = det["box"]
        draw.rectangle([x1, y1, x2, y2], outline=colour, width=width)
        text = f"{det['label']} {det['score']:.2f}"
        left, top, right, bottom = draw.textbbox((x1, y1), text)
        y = max(0.0, y1 - (bottom - top) - 2)
        draw.rectangle([x1, y, x1 + (right - left) + 2, y + (bottom - top) + 2], fill=colour)
        draw.text((x1 + 1, y), text, fill=(0, 0, 0))
    return np.asarray(image)
