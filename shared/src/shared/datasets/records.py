"""Per-image checks of an import: decode, hash, boxes, groups; then duplicates and statistics."""

from __future__ import annotations

import hashlib
import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from io import BytesIO
from typing import Any

import pydicom

from shared import safe_regex
from shared.datasets.formats.base import Entry, Parsed, Task
from shared.datasets.formats.segmentation_masks import MaskInfo, mask_stats
from shared.errors import AppError, InvalidRequest
from shared.imaging.decode import decode_image
from shared.pseudonyms import pseudonym

# Annotation tools round corners to whole pixels, VOC is 1-based: a pixel of slack.
BOX_TOLERANCE = 1.0
GROUP_SOURCES = ("auto", "none", "patient", "study", "pattern")


@dataclass
class Record:
    """An image that decoded, with everything a DatasetItem row needs."""

    path: str
    sha256: str
    format: str
    width: int
    height: int
    label: str | None
    boxes: list[dict[str, Any]] | None
    split: str | None
    group: str | None
    extra: dict[str, str] = field(default_factory=dict)  # pseudonymised DICOM ids
    storage_key: str = ""
    mask: MaskInfo | None = None  # segmentation: the stored, checked label map


def _dicom_ids(data: bytes, secret: bytes) -> dict[str, str]:
    """PatientID / StudyInstanceUID, pseudonymised: identifiers are never stored in clear."""
    try:
        ds = pydicom.dcmread(
            BytesIO(data),
            stop_before_pixels=True,
            force=True,
            specific_tags=["PatientID", "StudyInstanceUID"],
        )
    except Exception:  # noqa: BLE001  (the full decode already accepted the file)
        return {}
    ids = {}
    for key, tag in (("patient", "PatientID"), ("study", "StudyInstanceUID")):
        value = str(getattr(ds, tag, "") or "").strip()
        if value:
            ids[key] = pseudonym(key, value, secret)
    return ids


def _boxes(
    entry: Entry, width: int, height: int, problems: list[dict[str, str]]
) -> list[dict[str, Any]]:
    kept = []
    for box in entry.boxes or []:
        x1, y1, x2, y2 = box.in_pixels(width, height)
        shown = f"{box.label} [{x1:g}, {y1:g}, {x2:g}, {y2:g}]"
        if x2 <= x1 or y2 <= y1:
            problems.append({"file": entry.path, "problem": f"degenerate box {shown}: no area"})
        elif (
            x1 < -BOX_TOLERANCE
            or y1 < -BOX_TOLERANCE
            or x2 > width + BOX_TOLERANCE
            or (y2 > height + BOX_TOLERANCE)
        ):
            problems.append(
                {"file": entry.path, "problem": f"box {shown} outside the {width}x{height} image"}
            )
        else:  # within the tolerance: clip, so trainers get boxes inside the image
            box_px = [max(x1, 0.0), max(y1, 0.0), min(x2, float(width)), min(y2, float(height))]
            kept.append({"label": box.label, "box": [round(v, 2) for v in box_px]})
    return kept


def read_entry(
    entry: Entry,
    data: bytes,
    *,
    max_pixels: int,
    problems: list[dict[str, str]],
    secret: bytes = b"",
) -> Record | None:
    """Decode one image fully (a truncated file must fail here, not in training).

    `secret` keys the pseudonyms of the DICOM patient and study ids.
    """
    try:
        decoded = decode_image(data, max_pixels=max_pixels)
    except AppError as exc:
        problems.append({"file": entry.path, "problem": f"unreadable image: {exc.detail}"})
        return None
    width, height = decoded.original_width, decoded.original_height
    boxes = _boxes(entry, width, height, problems) if entry.boxes is not None else None
    return Record(
        path=entry.path,
        sha256=hashlib.sha256(data).hexdigest(),
        format=decoded.format,
        width=width,
        height=height,
        label=entry.label,
        boxes=boxes,
        split=entry.split,
        group=entry.group,
        extra=_dicom_ids(data, secret) if decoded.format == "dicom" else {},
    )


def resolve_groups(
    records: list[Record],
    group_by: str,
    pattern: str | None,
    problems: list[dict[str, str]],
    secret: bytes = b"",
) -> str:
    """Set each record's group from the chosen source; returns the source actually used.

    Groups taken from file names (`group_pattern`) or from the format's own patient ids
    (COCO/RSNA/Label Studio) are pseudonymised with `secret`, like DICOM ids, so no
    patient id is stored or returned in clear.

    auto: the pattern when one is given, else DICOM PatientID, else the format's own id
    (RSNA patientId, Label Studio/COCO patient_id), else none.
    """
    if group_by == "auto":
        if pattern:
            group_by = "pattern"
        elif any("patient" in r.extra for r in records):
            group_by = "patient"
        elif any(r.group for r in records):
            group_by = "format"
        else:
            group_by = "none"
    if group_by == "pattern":
        if not pattern:
            problems.append(
                {"file": "(options)", "problem": "group_by=pattern needs group_pattern"}
            )
            return group_by
        try:
            # RE2 (linear time): the pattern may come from the zip's own spec file too.
            regex = safe_regex.compile_pattern(pattern, field="group_pattern", max_groups=1)
        except InvalidRequest as exc:
            problems.append({"file": "(options)", "problem": exc.detail})
            return group_by
        for r in records:
            # The file name first (`pat007_img1.png`), then the whole path (`pat007/img1.png`).
            match = regex.search(r.path.rsplit("/", 1)[-1]) or regex.search(r.path)
            if match is None:
                problems.append(
                    {"file": r.path, "problem": f"does not match group_pattern {pattern!r}"}
                )
            else:
                captured = match.group(1) if regex.groups else match.group(0)
                r.group = pseudonym("group", captured, secret)
    elif group_by in ("patient", "study"):
        for r in records:
            fallback = pseudonym("group", r.group, secret) if r.group is not None else None
            r.group = r.extra.get(group_by) or fallback
            if r.group is None:
                problems.append({"file": r.path, "problem": f"no DICOM {group_by} id to group by"})
    elif group_by == "none":
        for r in records:
            r.group = None
    else:  # "format": the annotation file's own patient ids
        for r in records:
            r.group = pseudonym("group", r.group, secret) if r.group is not None else None
    return group_by


def drop_duplicates(
    records: list[Record], *, drop: bool, problems: list[dict[str, str]]
) -> tuple[list[Record], list[dict[str, str]]]:
    """Images with the same content hash: errors, or (drop=True) keep the first of each."""
    first: dict[str, str] = {}
    kept: list[Record] = []
    dropped: list[dict[str, str]] = []
    for r in records:
        if r.sha256 in first:
            pair = {"file": r.path, "problem": f"same content (sha256) as {first[r.sha256]}"}
            (dropped if drop else problems).append(pair)
            continue
        first[r.sha256] = r.path
        kept.append(r)
    return kept, dropped


def check_labels(records: list[Record], parsed: Parsed, problems: list[dict[str, str]]) -> None:
    """Unknown labels (classes not declared) and empty classes (declared, never used)."""
    used: Counter[str] = Counter()
    for r in records:
        if r.label is not None:
            used[r.label] += 1
        for b in r.boxes or []:
            used[b["label"]] += 1
    if parsed.labels_declared:
        declared = set(parsed.labels)
        for r in records:
            if r.label is not None and r.label not in declared:
                problems.append({"file": r.path, "problem": f"label {r.label!r} not in `labels`"})
        for label in parsed.labels:
            if used[label] == 0:
                problems.append({"file": "(dataset)", "problem": f"class {label!r} is empty"})
    if parsed.task == Task.CLASSIFICATION and len(used) < 2:
        problems.append(
            {"file": "(dataset)", "problem": f"a classifier needs >= 2 classes; found {len(used)}"}
        )


def _summary(values: list[int]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def compute_stats(
    records: list[Record], splits: list[str], task: Task, labels: list[str] | None = None
) -> dict[str, Any]:
    """Counts per class and split, boxes per class, groups per split, image-size statistics."""
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    boxes: dict[str, Counter[str]] = defaultdict(Counter)
    images: Counter[str] = Counter()
    groups: dict[str, set[str]] = defaultdict(set)
    for r, split in zip(records, splits, strict=True):
        images[split] += 1
        if r.group is not None:
            groups[split].add(r.group)
        if task == Task.CLASSIFICATION and r.label is not None:
            counts[split][r.label] += 1
        for label in {b["label"] for b in r.boxes or []}:
            counts[split][label] += 1  # detection: images containing the class
        for b in r.boxes or []:
            boxes[split][b["label"]] += 1
    stats: dict[str, Any] = {
        "images": len(records),
        "images_per_split": {s: images[s] for s in ("train", "validation", "test")},
        "counts": {s: dict(sorted(counts[s].items())) for s in ("train", "validation", "test")},
        "groups_per_split": {s: len(groups[s]) for s in ("train", "validation", "test")},
        "formats": dict(Counter(r.format for r in records)),
    }
    if task == Task.DETECTION:
        stats["boxes"] = {
            s: dict(sorted(boxes[s].items())) for s in ("train", "validation", "test")
        }
        stats["images_without_boxes"] = sum(1 for r in records if not r.boxes)
    if task == Task.SEGMENTATION:
        stats["masks"] = mask_stats([r.mask for r in records], splits, labels or [])
        for split in ("train", "validation", "test"):  # images containing each class
            stats["counts"][split] = stats["masks"]["images_with_class"][split]
    if records:
        stats["image_size"] = {
            "width": _summary([r.width for r in records]),
            "height": _summary([r.height for r in records]),
        }
    return stats
