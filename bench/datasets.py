"""Pack the real datasets in ../shared/data into the upload format of POST /v1/datasets.

Each packer writes a zip in the team convention, already split into
`train/`, `validation/`, `test/` class folders, keeping the split the dataset's own README
documents so results compare with its published baselines. File names carry the patient or
case id, so the import's group check can prove no patient spans two splits.
"""

from __future__ import annotations

import csv
import io
import json
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
_SPLITS = {"train": "train", "val": "validation", "test": "test"}


def _png(pixels: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG", optimize=True)
    return out.getvalue()


def pack_pneumoniamnist(out: Path, data_dir: Path = SHARED_DATA / "pneumoniamnist") -> Path:
    """The official-split reconstruction, 28 px PNGs: Task001_pneumoniamnist/<split>/<class>/."""
    data = np.load(data_dir / "pneumoniamnist_28_full_reconstructed.npz")
    labels = ["normal", "pneumonia"]
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for prefix, split in _SPLITS.items():
            images, targets = data[f"{prefix}_images"], data[f"{prefix}_labels"][:, 0]
            for index, (pixels, target) in enumerate(zip(images, targets, strict=True)):
                name = f"Task001_pneumoniamnist/{split}/{labels[target]}/{prefix}_{index:05d}.png"
                archive.writestr(name, _png(pixels))
        archive.writestr(
            "Task001_pneumoniamnist/dataset.json",
            json.dumps({"task": "classification", "labels": labels}),
        )
    return out


def pack_ddti(out: Path, data_dir: Path = SHARED_DATA / "ddti_thyroid") -> Path:
    """DDTI crops with TI-RADS-derived labels and the README's case-grouped split.

    Unlabelled cases are left out. Names are `<case>_<image>.png`: `group_pattern`
    `^(\\d+)_` recovers the case (patient) id.
    """
    labels = ["benign", "malignant"]
    with (
        zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive,
        (data_dir / "labels.csv").open() as rows,
    ):
        for row in csv.DictReader(rows):
            if row["split"] not in _SPLITS or row["label"] == "":
                continue
            image = data_dir / row["image"]
            name = f"Task002_thyroid/{_SPLITS[row['split']]}/{labels[int(row['label'])]}/"
            archive.write(image, name + image.name)
        archive.writestr(
            "Task002_thyroid/dataset.json",
            json.dumps({"task": "classification", "labels": labels, "group_pattern": r"^(\d+)_"}),
        )
    return out


def pack_ddti_seg(out: Path, data_dir: Path = SHARED_DATA / "ddti_thyroid") -> Path:
    """All 654 DDTI crops with their nodule masks, `images/` + `masks/` (segmentation).

    Not pre-split: the platform splits 70/15/15, seeded and grouped by case (`group_pattern`
    `^(\\d+)_`), so no patient's nodule is in two splits; byte-identical crops are dropped at
    upload (`on_duplicate=drop`).
    """
    with (
        zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive,
        (data_dir / "labels.csv").open() as rows,
    ):
        for row in csv.DictReader(rows):
            image, mask = data_dir / row["image"], data_dir / row["mask"]
            archive.write(image, f"ddti_seg/images/{image.name}")
            archive.write(mask, f"ddti_seg/masks/{mask.name}")
        archive.writestr(
            "ddti_seg/dataset.json",
            json.dumps({"labels": {"0": "background", "1": "nodule"}, "group_pattern": r"^(\d+)_"}),
        )
    return out


PACKERS: dict[str, Callable[[Path], Path]] = {
    "pneumoniamnist": pack_pneumoniamnist,
    "ddti": pack_ddti,
    "ddti-seg": pack_ddti_seg,
}
# The training task of each packed set (classification unless listed).
TASKS: dict[str, str] = {"ddti-seg": "segmentation"}
