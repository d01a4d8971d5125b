"""Detection inference: letterbox, forward, boxes back to the original image's pixels.

The result per image:
``{"detections": [{"label", "score", "box": [x1, y1, x2, y2], "size_mm": [w, h] | None}],
"counts": {label: n}, "params": {...}}`` with boxes in the *uploaded* image's pixel
coordinates (after EXIF orientation), whatever size the decoder reduced it to.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from shared.imaging.geometry import Letterbox, box_sizes_mm
from shared.imaging.overlay import draw_detections, to_uint8_rgb
from shared.ml.architectures import load_state_dict
from shared.ml.detection import (
    DEFAULT_MAX_DETECTIONS,
    DEFAULT_NMS_IOU,
    DEFAULT_SCORE_THRESHOLD,
    DetectionPresetEval,
    build_detector,
    filter_detections,
    load_detector_state,
)
from shared.schemas.jobs import JobParams
from shared.schemas.models import ModelCard
from worker.inference.letterboxed import LetterboxedModel, load_strictly


@dataclass
class LoadedDetector(LetterboxedModel):
    preset: DetectionPresetEval

    @torch.inference_mode()
    def detect(
        self, pixels: list[np.ndarray], infos: list[dict[str, Any]], params: list[JobParams]
    ) -> list[dict[str, Any]]:
        """One forward pass over a batch; per-image filtering with each job's parameters."""
        inputs, geometries = zip(*(self.preset(p) for p in pixels), strict=True)
        outputs = self.network([x.to(self.device) for x in inputs])
        return [
            detection_output(out, geo, info, p, self.card.labels)
            for out, geo, info, p in zip(outputs, geometries, infos, params, strict=True)
        ]


def load_detector(
    path: Path, card: ModelCard, ref: str, version_id: uuid.UUID, device: torch.device
) -> LoadedDetector:
    """Build the card's detector and load its weights strictly.

    Raises:
        ModelUnavailable: unknown architecture or weights that do not fit it.
    """

    def build() -> nn.Module:
        network: nn.Module = build_detector(card.architecture, card.labels, card.input)
        load_detector_state(network, load_state_dict(str(path)))
        return network

    return LoadedDetector(
        version_id=version_id,
        ref=ref,
        card=card,
        network=load_strictly(ref, device, build),
        device=device,
        preset=DetectionPresetEval(card.input),
    )


def detection_output(
    output: dict[str, torch.Tensor],
    geometry: Letterbox,
    info: dict[str, Any],
    params: JobParams,
    labels: list[str],
) -> dict[str, Any]:
    """Filter one image's raw detections and express them in original-image pixels (and mm)."""
    chosen = {
        "score_threshold": _or(params.score_threshold, DEFAULT_SCORE_THRESHOLD),
        "nms_iou": _or(params.nms_iou, DEFAULT_NMS_IOU),
        "max_detections": _or(params.max_detections, DEFAULT_MAX_DETECTIONS),
    }
    kept = filter_detections({k: v.float().cpu() for k, v in output.items()}, **chosen)
    # Letterbox -> decoded image -> uploaded image (the decoder may have reduced it).
    boxes = geometry.to_original(kept["boxes"].numpy())
    scale = np.array([info["width"] / geometry.width, info["height"] / geometry.height] * 2)
    boxes = boxes * scale
    spacing = info.get("pixel_spacing")
    sizes = box_sizes_mm(boxes, tuple(spacing)) if spacing else None
    detections = []
    for i, (box, score, label_id) in enumerate(
        zip(boxes, kept["scores"].tolist(), kept["labels"].tolist(), strict=True)
    ):
        detections.append(
            {
                "label": labels[int(label_id) - 1],
                "score": round(float(score), 4),
                "box": [round(float(v), 1) for v in box],
                "size_mm": None if sizes is None else [round(float(v), 3) for v in sizes[i]],
            }
        )
    counts = dict.fromkeys(labels, 0)
    for det in detections:
        counts[det["label"]] += 1
    return {"detections": detections, "counts": counts, "params": chosen}


def _or(value: Any, default: Any) -> Any:
    return default if value is None else value


def annotated_image(
    pixels: np.ndarray, info: dict[str, Any], output: dict[str, Any], labels: list[str]
) -> np.ndarray:
    """The image at its uploaded size with the detections drawn (uint8 RGB)."""
    from PIL import Image

    rgb = to_uint8_rgb(pixels)
    if rgb.shape[:2] != (info["height"], info["width"]):  # the decoder reduced it
        resized = Image.fromarray(rgb).resize((info["width"], info["height"]), Image.BILINEAR)
        rgb = np.asarray(resized)
    return draw_detections(rgb, output["detections"], labels)
