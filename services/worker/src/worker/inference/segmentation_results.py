"""The files a segmentation result comes with: overlay PNG, label-map PNG, DICOM SEG.

The SEG (DICOM inputs only) references the uploaded instance and lies on its pixel grid, so
a PACS viewer shows it over the image it came from.
"""

from __future__ import annotations

import logging
import uuid
from importlib.metadata import version as package_version
from typing import Any

import numpy as np

from shared.dicom_results.seg import build_seg
from worker.artifacts import encode_png
from worker.inference.segmentation import LoadedSegmenter, mask_png, overlay_image

log = logging.getLogger(__name__)
DICOM_SEG = "application/dicom"


def segmentation_artifacts(
    upload: bytes,
    pixels: np.ndarray,
    info: dict[str, Any],
    mask: np.ndarray,
    output: dict[str, Any],
    model: LoadedSegmenter,
    index: int,
    job_id: uuid.UUID,
) -> list[tuple[str, str, bytes]]:
    """(name, content type, bytes) of each artifact; names start with their kind."""
    files = [
        (
            f"overlay-{index}.png",
            "image/png",
            encode_png(overlay_image(pixels, info, mask, output)),
        ),
        (f"mask-{index}.png", "image/png", encode_png(mask_png(mask))),
    ]
    if info.get("format") == "dicom":
        try:
            seg = build_seg(upload, mask, model.card.labels, model_ref=model.ref,
                            software_version=package_version("medimg-worker"),
                            job_id=job_id, index=index)  # fmt: skip
        except (ValueError, AttributeError, KeyError, TypeError) as exc:
            # A source highdicom cannot reference (e.g. multi-frame): the mask still stands.
            log.warning("no DICOM SEG for image %d: %s", index, exc)
            output["seg_error"] = str(exc)
        else:
            files.append((f"seg-{index}.dcm", DICOM_SEG, seg))
    return files
