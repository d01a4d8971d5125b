"""Letterbox geometry: fit an image into a square network input and map boxes back exactly.

Torch-free (NumPy only) so the API and tests can reason about coordinates without a model.
Boxes are ``[x1, y1, x2, y2]`` in pixel-corner coordinates: a box covering the whole image
``W x H`` is ``[0, 0, W, H]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Boxes = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Letterbox:
    """Where an ``width x height`` image lands inside a ``size x size`` input.

    The image is scaled by one factor (aspect kept) to ``resized_width x resized_height`` and
    centred; the rest is padding.
    """

    width: int
    height: int
    size: int
    resized_width: int
    resized_height: int
    pad_left: int
    pad_top: int

    @property
    def scale_x(self) -> float:
        # Per axis: rounding the resized size makes the two factors differ slightly.
        return self.resized_width / self.width

    @property
    def scale_y(self) -> float:
        return self.resized_height / self.height

    def to_input(self, boxes: npt.ArrayLike) -> Boxes:
        """Original-image boxes -> network-input boxes."""
        b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        scale = np.array([self.scale_x, self.scale_y, self.scale_x, self.scale_y])
        offset = np.array([self.pad_left, self.pad_top, self.pad_left, self.pad_top])
        mapped: Boxes = b * scale + offset
        return mapped

    def to_original(self, boxes: npt.ArrayLike) -> Boxes:
        """Network-input boxes -> original-image boxes, clipped to the image."""
        b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        scale = np.array([self.scale_x, self.scale_y, self.scale_x, self.scale_y])
        offset = np.array([self.pad_left, self.pad_top, self.pad_left, self.pad_top])
        out = (b - offset) / scale
        return clip_boxes(out, self.width, self.height)


def letterbox(width: int, height: int, size: int) -> Letterbox:
    """Geometry of fitting ``width x height`` into ``size x size`` (long side = size).

    Raises:
        ValueError: a non-positive dimension.
    """
    if width <= 0 or height <= 0 or size <= 0:
        raise ValueError(f"letterbox needs positive sizes, got {width}x{height} -> {size}")
    scale = size / max(width, height)
    resized_width = min(size, max(1, round(width * scale)))
    resized_height = min(size, max(1, round(height * scale)))
    return Letterbox(
        width=width,
        height=height,
        size=size,
        resized_width=resized_width,
        resized_height=resized_height,
        pad_left=(size - resized_width) // 2,
        pad_top=(size - resized_height) // 2,
    )


def clip_boxes(boxes: npt.ArrayLike, width: int, height: int) -> Boxes:
    """Clip boxes to ``[0, width] x [0, height]``."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4).copy()
    b[:, 0::2] = b[:, 0::2].clip(0, width)
    b[:, 1::2] = b[:, 1::2].clip(0, height)
    return b


def box_sizes_mm(
    boxes: npt.ArrayLike, pixel_spacing: tuple[float, float]
) -> npt.NDArray[np.float64]:
    """Width and height of each box in millimetres.

    Args:
        boxes: ``[x1, y1, x2, y2]`` in original pixels.
        pixel_spacing: DICOM PixelSpacing, ``(row spacing, column spacing)`` in mm: the
            vertical then the horizontal distance between pixel centres.

    Returns:
        ``N x 2`` array of (width mm, height mm).
    """
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    row_mm, col_mm = pixel_spacing
    return np.stack([(b[:, 2] - b[:, 0]) * col_mm, (b[:, 3] - b[:, 1]) * row_mm], axis=1)
