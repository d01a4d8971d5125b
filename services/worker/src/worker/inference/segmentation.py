"""Segmentation inference: letterbox, forward, the mask back in the uploaded image's pixel grid.

The result per image::

    {"segmentation": {"width", "height", "classes": [{"label", "class_id", "area_px",
      "area_mm2", "fraction", "components", "polygons": [[[x, y], ...], ...]}]},
     "params": {"threshold", "min_area"}}

Masks and polygons are in the *uploaded* image's pixel grid (after EXIF orientation), whatever
size the decoder reduced it to. Polygon vertices are pixel-corner coordinates, like detection
boxes: the pixel in column ``i``, row ``j`` covers ``[i, i+1] x [j, j+1]``, and its outline
passes through the midpoints of its edges (marching squares at level 0.5 over pixel centres).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from contourpy import LineType, contour_generator
from PIL import Image, ImageDraw
from scipy import ndimage
from torch import nn

from shared.imaging.overlay import PALETTE, to_uint8_rgb
from shared.ml.architectures import load_state_dict
from shared.ml.segmentation import (
    DEFAULT_THRESHOLD,
    SegmentationPresetEval,
    build_segmenter,
    decide,
    probabilities_to_original,
)
from shared.schemas.jobs import JobParams
from shared.schemas.models import ModelCard
from worker.inference.letterboxed import LetterboxedModel, load_strictly

DEFAULT_MIN_AREA = 0
OVERLAY_ALPHA = 0.4


@dataclass
class LoadedSegmenter(LetterboxedModel):
    preset: SegmentationPresetEval

    @torch.inference_mode()
    def segment(
        self, pixels: list[np.ndarray], infos: list[dict[str, Any]], params: list[JobParams]
    ) -> tuple[list[dict[str, Any]], list[np.ndarray]]:
        """One forward pass over a batch; returns the outputs and each image's label map."""
        inputs, geometries = zip(*(self.preset(p) for p in pixels), strict=True)
        probs = self.network(torch.stack(inputs).to(self.device)).float().softmax(1).cpu()
        outputs, masks = [], []
        for p, geo, info, param in zip(probs, geometries, infos, params, strict=True):
            full = probabilities_to_original(p, geo, info["width"], info["height"])
            mask = label_map(full, param)
            outputs.append(segmentation_output(mask, info, param, self.card.labels))
            masks.append(mask)
        return outputs, masks


def load_segmenter(
    path: Path, card: ModelCard, ref: str, version_id: uuid.UUID, device: torch.device
) -> LoadedSegmenter:
    """Build the card's U-Net and load its weights strictly.

    Raises:
        ModelUnavailable: unknown architecture or weights that do not fit it.
    """

    def build() -> nn.Module:
        network: nn.Module = build_segmenter(card.architecture, len(card.labels))
        network.load_state_dict(load_state_dict(str(path)), strict=True)
        return network

    return LoadedSegmenter(
        version_id=version_id,
        ref=ref,
        card=card,
        network=load_strictly(ref, device, build),
        device=device,
        preset=SegmentationPresetEval(card.input),
    )


def _chosen(params: JobParams) -> dict[str, Any]:
    return {
        "threshold": DEFAULT_THRESHOLD if params.threshold is None else params.threshold,
        "min_area": DEFAULT_MIN_AREA if params.min_area is None else params.min_area,
    }


def label_map(probs: torch.Tensor, params: JobParams) -> np.ndarray:
    """Class id per pixel; connected regions (8-connected) under ``min_area`` px removed."""
    chosen = _chosen(params)
    mask = decide(probs, chosen["threshold"]).numpy()
    if chosen["min_area"] > 0:
        for k in np.unique(mask[mask > 0]):
            regions, n = ndimage.label(mask == k, structure=np.ones((3, 3)))
            sizes = np.bincount(regions.ravel(), minlength=n + 1)
            small = np.flatnonzero(sizes < chosen["min_area"])
            mask[np.isin(regions, small[small > 0])] = 0
    return mask


def polygons(binary: np.ndarray) -> list[list[list[float]]]:
    """Closed outlines of a boolean mask, in pixel-corner coordinates (see module doc)."""
    padded = np.pad(binary.astype(np.float64), 1)
    gen = contour_generator(z=padded, line_type=LineType.Separate)
    # Pixel centre (row r, col c) of the padded array is at (c - 1 + 0.5, r - 1 + 0.5).
    return [
        [[round(float(x) - 0.5, 2), round(float(y) - 0.5, 2)] for x, y in line]
        for line in gen.lines(0.5)
        if len(line) >= 3
    ]


def segmentation_output(
    mask: np.ndarray, info: dict[str, Any], params: JobParams, labels: list[str]
) -> dict[str, Any]:
    spacing = info.get("pixel_spacing")
    pixel_mm2 = float(spacing[0]) * float(spacing[1]) if spacing else None
    classes = []
    for k, label in enumerate(labels[1:], start=1):
        binary = mask == k
        area = int(binary.sum())
        _, components = ndimage.label(binary, structure=np.ones((3, 3)))
        classes.append(
            {
                "label": label,
                "class_id": k,
                "area_px": area,
                "area_mm2": None if pixel_mm2 is None else round(area * pixel_mm2, 3),
                "fraction": round(area / mask.size, 6),
                "components": int(components),
                "polygons": polygons(binary) if area else [],
            }
        )
    return {
        "segmentation": {"width": int(mask.shape[1]), "height": int(mask.shape[0]),
                         "classes": classes},
        "params": _chosen(params),
    }  # fmt: skip


def overlay_image(
    pixels: np.ndarray, info: dict[str, Any], mask: np.ndarray, output: dict[str, Any]
) -> np.ndarray:
    """The image at its uploaded size with each class tinted and outlined (uint8 RGB)."""
    rgb = to_uint8_rgb(pixels)
    if rgb.shape[:2] != (info["height"], info["width"]):  # the decoder reduced it
        resized = Image.fromarray(rgb).resize((info["width"], info["height"]), Image.BILINEAR)
        rgb = np.asarray(resized)
    out = rgb.astype(np.float32)
    for cls in output["segmentation"]["classes"]:
        colour = np.array(PALETTE[(cls["class_id"] - 1) % len(PALETTE)], dtype=np.float32)
        where = mask == cls["class_id"]
        out[where] = (1 - OVERLAY_ALPHA) * out[where] + OVERLAY_ALPHA * colour
    image = Image.fromarray(out.round().astype(np.uint8))
    draw = ImageDraw.Draw(image)
    width = max(1, round(max(image.size) / 400))
    for cls in output["segmentation"]["classes"]:
        colour = PALETTE[(cls["class_id"] - 1) % len(PALETTE)]
        for polygon in cls["polygons"]:
            draw.line([tuple(p) for p in polygon] + [tuple(polygon[0])], fill=colour, width=width)
    return np.asarray(image)


def mask_png(mask: np.ndarray) -> np.ndarray:
    """The label map as an 8-bit image (pixel = class id), for the mask artifact."""
    return mask.astype(np.uint8)
