"""What every annotation format parser produces: image entries plus problems found."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import PurePosixPath
from typing import Any

from shared.imaging.formats import IMAGE_SUFFIXES

SPLIT_NAMES = {
    "train": "train",
    "training": "train",
    "val": "validation",
    "valid": "validation",
    "validation": "validation",
    "test": "test",
    "testing": "test",
}


class Task(StrEnum):
    CLASSIFICATION = "classification"
    DETECTION = "detection"
    SEGMENTATION = "segmentation"


class SourceFormat(StrEnum):
    FOLDERS = "folders"
    VOC = "voc"
    COCO = "coco"
    RSNA = "rsna"
    LABELSTUDIO = "labelstudio"
    MSD = "msd"  # Medical Segmentation Decathlon / nnU-Net: imagesTr/, labelsTr/, dataset.json
    MASKS = "masks"  # images/ + masks/ matched by file stem


# The task each format implies; Label Studio exports may hold either.
FORMAT_TASK = {
    SourceFormat.FOLDERS: Task.CLASSIFICATION,
    SourceFormat.VOC: Task.DETECTION,
    SourceFormat.COCO: Task.DETECTION,
    SourceFormat.RSNA: Task.DETECTION,
    SourceFormat.MSD: Task.SEGMENTATION,
    SourceFormat.MASKS: Task.SEGMENTATION,
}


@dataclass
class Box:
    label: str
    x1: float
    y1: float
    x2: float
    y2: float
    # Label Studio gives percentages of the image size: scaled once the image is probed.
    relative: bool = False

    def in_pixels(self, width: int, height: int) -> list[float]:
        if not self.relative:
            return [self.x1, self.y1, self.x2, self.y2]
        sx, sy = width / 100, height / 100
        return [self.x1 * sx, self.y1 * sy, self.x2 * sx, self.y2 * sy]


@dataclass
class Entry:
    """One image of the upload with its annotation."""

    path: str  # member name in the archive
    label: str | None = None  # classification
    boxes: list[Box] | None = None  # detection ([] = an image with no object)
    mask: str | None = None  # segmentation: archive member holding the label map
    split: str | None = None  # pre-split uploads
    group: str | None = None  # patient/study id the format itself provides
    source: str | None = None  # annotation file it came from, for messages


@dataclass
class Parsed:
    task: Task
    entries: list[Entry] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    labels_declared: bool = False  # dataset.json / COCO categories: empty classes are errors
    problems: list[dict[str, str]] = field(default_factory=list)
    notes: list[dict[str, str]] = field(default_factory=list)
    ratios: dict[str, float] | None = None
    group_pattern: str | None = None

    def problem(self, file: str, problem: str) -> None:
        self.problems.append({"file": file, "problem": problem})

    def note(self, file: str, problem: str) -> None:
        self.notes.append({"file": file, "problem": problem})


def is_image(name: str) -> bool:
    return PurePosixPath(name).suffix.lower() in IMAGE_SUFFIXES


class ImageIndex:
    """Finds the archive member an annotation refers to: exact path, relative, or basename."""

    def __init__(self, names: list[str]) -> None:
        self.paths = [n for n in names if is_image(n)]
        self._exact = set(self.paths)
        self._by_base: dict[str, list[str]] = {}
        self._by_stem: dict[str, list[str]] = {}
        for name in self.paths:
            p = PurePosixPath(name)
            self._by_base.setdefault(p.name.lower(), []).append(name)
            self._by_stem.setdefault(p.stem.lower(), []).append(name)

    def find(self, ref: str, *, near: str | None = None, by_stem: bool = False) -> str | None:
        ref = ref.replace("\\", "/")
        if near is not None:
            joined = str(PurePosixPath(near).parent / ref)
            if joined in self._exact:
                return joined
        if ref in self._exact:
            return ref
        key = PurePosixPath(ref).stem if by_stem else PurePosixPath(ref).name
        hits = (self._by_stem if by_stem else self._by_base).get(key.lower(), [])
        return hits[0] if len(hits) == 1 else None


def label_list(raw: Any) -> list[str] | None:
    """Labels from dataset.json: a list, {"0": "normal"} (nnU-Net) or {"normal": 0}."""
    if isinstance(raw, list) and all(isinstance(x, str) for x in raw):
        return list(raw)
    if isinstance(raw, dict) and raw:
        keys, values = list(raw), list(raw.values())
        if all(str(k).isdigit() for k in keys) and all(isinstance(v, str) for v in values):
            return [str(raw[k]) for k in sorted(keys, key=int)]
        if all(isinstance(v, int) for v in values):
            return [str(k) for k in sorted(keys, key=lambda k: raw[k])]
    return None
