"""Segmentation masks at import: decode, check against their image, store, summarise.

A mask is a label map: one integer class id per pixel, 0 the background. Accepted files:
PNG / GIF / TIFF (grayscale, or palette images whose indices are the ids, as VOC's
SegmentationClass PNGs), or single-frame DICOM. A mask holding only 0 and 255 is a binary
mask stored for viewing and is read as 0/1. Masks are stored normalised (8-bit grayscale
PNG of class ids) so training and evaluation never see the upload's encoding.

Problems (by file name): unreadable mask, colour mask, size different from its image,
values no declared label has. Empty masks (background only) are allowed and counted.
"""

from __future__ import annotations

import io
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
import pydicom
from PIL import Image, UnidentifiedImageError

from shared.datasets.formats.base import Parsed

MAX_CLASSES = 255
BACKGROUND = "background"


@dataclass
class MaskInfo:
    """What the importer keeps of one mask: its stored key and pixel count per class id."""

    key: str
    pixels: dict[int, int]
    total: int


def decode_mask(data: bytes, *, max_pixels: int) -> np.ndarray:
    """A mask file -> H x W integer label map.

    Raises:
        ValueError: unreadable, colour, multi-frame, too large, or not integer-valued.
    """
    if data[128:132] == b"DICM":
        try:
            ds = pydicom.dcmread(io.BytesIO(data))
            if int(getattr(ds, "NumberOfFrames", 1) or 1) != 1:
                raise ValueError("a multi-frame DICOM mask: one frame per 2D image expected")
            if int(ds.Rows) * int(ds.Columns) > max_pixels:
                raise ValueError(f"larger than {max_pixels} pixels")
            array = np.asarray(ds.pixel_array)
        except ValueError:
            raise
        except Exception as exc:  # noqa: BLE001  (pydicom raises many types on bad files)
            raise ValueError(f"unreadable DICOM mask: {exc}") from None
    else:
        try:
            with Image.open(io.BytesIO(data)) as img:
                if img.size[0] * img.size[1] > max_pixels:
                    raise ValueError(f"larger than {max_pixels} pixels")
                if getattr(img, "n_frames", 1) > 1:
                    raise ValueError("an animated/multi-page mask: one frame expected")
                img.load()
                if img.mode in ("RGB", "RGBA", "LA"):
                    rgb = np.asarray(img.convert("RGB"))
                    if not (np.array_equal(rgb[..., 0], rgb[..., 1])
                            and np.array_equal(rgb[..., 0], rgb[..., 2])):  # fmt: skip
                        raise ValueError(
                            "a colour mask: give a single-channel label map (pixel = class id)"
                        )
                    array = rgb[..., 0]
                elif img.mode == "1":
                    array = np.asarray(img, dtype=np.uint8)
                else:  # L, P (palette index = class id, as VOC), I;16, I
                    array = np.asarray(img)
        except (UnidentifiedImageError, OSError, SyntaxError) as exc:
            raise ValueError(f"unreadable mask: {exc}") from None
    if array.ndim != 2:
        raise ValueError(f"a mask must be one 2D label map, not an array of shape {array.shape}")
    if not np.issubdtype(array.dtype, np.integer) and not np.issubdtype(array.dtype, np.bool_):
        raise ValueError(f"mask pixels must be integer class ids, not {array.dtype}")
    return array.astype(np.int64)


def normalise(array: np.ndarray) -> np.ndarray:
    """Binary 0/255 masks -> 0/1; other label maps unchanged (uint8 when they fit)."""
    values = np.unique(array)
    if values.size and set(values.tolist()) <= {0, 255} and 255 in values:
        array = (array == 255).astype(np.int64)
    return array


def encode_png(labels: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(labels.astype(np.uint8), mode="L").save(out, format="PNG", optimize=True)
    return out.getvalue()


def check_mask(
    path: str,
    mask_path: str,
    labels: np.ndarray,
    width: int,
    height: int,
    declared: list[str] | None,
    problems: list[dict[str, str]],
) -> bool:
    """Size and label values; problems are named after the mask file. True when usable."""
    if labels.shape != (height, width):
        problems.append(
            {
                "file": mask_path,
                "problem": f"mask is {labels.shape[1]}x{labels.shape[0]} but its image "
                f"{path} is {width}x{height}",
            }
        )
        return False
    values = np.unique(labels)
    limit = len(declared) if declared else MAX_CLASSES + 1
    bad = [int(v) for v in values if v < 0 or v >= limit]
    if bad:
        what = f"labels declares ids 0-{limit - 1}" if declared else "ids must be 0-255"
        problems.append(
            {"file": mask_path, "problem": f"label values {bad[:10]} not declared ({what})"}
        )
        return False
    return True


def finish(
    parsed: Parsed, masks: list[MaskInfo | None], problems: list[dict[str, str]]
) -> list[str]:
    """The version's labels; problems for declared classes no mask uses.

    Undeclared labels are ``background`` plus ``class_<id>`` up to the largest id found
    (``foreground`` for plain binary masks).
    """
    used: Counter[int] = Counter()
    for m in masks:
        for value, count in (m.pixels if m else {}).items():
            if value and count:
                used[value] += 1
    if parsed.labels_declared:
        for value, label in enumerate(parsed.labels[1:], start=1):
            if used[value] == 0:
                problems.append({"file": "(dataset)", "problem": f"class {label!r} is in no mask"})
        return parsed.labels
    top = max(used, default=0)
    if top == 0:
        problems.append({"file": "(dataset)", "problem": "every mask is empty: nothing to learn"})
        return [BACKGROUND, "foreground"]
    if top == 1:
        return [BACKGROUND, "foreground"]
    return [BACKGROUND, *(f"class_{v}" for v in range(1, top + 1))]


def mask_stats(
    masks: list[MaskInfo | None], splits: list[str], labels: list[str]
) -> dict[str, Any]:
    """Per split: images containing each class, mean foreground fraction per class, empties."""
    out: dict[str, Any] = {"empty_masks": {}, "images_with_class": {}, "foreground_fraction": {}}
    for split in ("train", "validation", "test"):
        chosen = [m for m, s in zip(masks, splits, strict=True) if s == split and m]
        out["empty_masks"][split] = sum(
            1 for m in chosen if not any(c for v, c in m.pixels.items() if v)
        )
        out["images_with_class"][split] = {
            label: sum(1 for m in chosen if m.pixels.get(i)) for i, label in enumerate(labels)
            if i
        }  # fmt: skip
        out["foreground_fraction"][split] = {
            label: round(
                float(np.mean([m.pixels.get(i, 0) / m.total for m in chosen])) if chosen else 0.0,
                6,
            )
            for i, label in enumerate(labels)
            if i
        }
    return out


def read_mask(
    data: bytes,
    *,
    path: str,
    mask_path: str,
    width: int,
    height: int,
    declared: list[str] | None,
    max_pixels: int,
    problems: list[dict[str, str]],
) -> np.ndarray | None:
    """Decode, normalise and check one image's mask; None (and a problem) when unusable."""
    try:
        labels = normalise(decode_mask(data, max_pixels=max_pixels))
    except ValueError as exc:
        problems.append({"file": mask_path, "problem": str(exc)})
        return None
    if not check_mask(path, mask_path, labels, width, height, declared, problems):
        return None
    return labels


def pixel_counts(labels: np.ndarray) -> dict[int, int]:
    values, counts = np.unique(labels, return_counts=True)
    return {int(v): int(c) for v, c in zip(values, counts, strict=True)}
