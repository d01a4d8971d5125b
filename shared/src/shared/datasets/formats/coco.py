"""COCO detection JSON: `images`, `annotations` (`bbox` = [x, y, width, height]), `categories`.

Several COCO files whose names say train/val/test (e.g. `instances_val.json`) give a pre-made
split. An image entry may carry `patient_id` or `study_id` for grouping.
"""

from __future__ import annotations

import json
from pathlib import PurePosixPath
from typing import Any

from shared.datasets.formats.base import SPLIT_NAMES, Box, Entry, ImageIndex, Parsed, Task
from shared.datasets.safezip import SafeArchive


def is_coco(doc: Any) -> bool:
    return isinstance(doc, dict) and {"images", "annotations", "categories"} <= doc.keys()


def _split_from_name(name: str) -> str | None:
    stem = PurePosixPath(name).stem.lower()
    hits = {v for k, v in SPLIT_NAMES.items() if k in stem.replace("-", "_").split("_")}
    return hits.pop() if len(hits) == 1 else None


def _parse_file(name: str, doc: dict[str, Any], index: ImageIndex, parsed: Parsed) -> None:
    categories = {c.get("id"): str(c.get("name")) for c in doc["categories"] if "name" in c}
    for name_of_class in categories.values():
        if name_of_class not in parsed.labels:
            parsed.labels.append(name_of_class)
    entries: dict[Any, Entry] = {}
    split = _split_from_name(name)
    for image in doc["images"]:
        file_name = str(image.get("file_name", ""))
        path = index.find(file_name, near=name)
        if path is None:
            parsed.problem(name, f"image {file_name!r} is not in the archive")
            continue
        group = image.get("patient_id") or image.get("study_id")
        entries[image.get("id")] = Entry(
            path=path, boxes=[], split=split, group=str(group) if group else None, source=name
        )
    for ann in doc["annotations"]:
        entry = entries.get(ann.get("image_id"))
        label = categories.get(ann.get("category_id"))
        bbox = ann.get("bbox")
        if entry is None:
            parsed.problem(name, f"annotation {ann.get('id')} refers to an unknown image")
        elif label is None:
            parsed.problem(entry.path, f"unknown category id {ann.get('category_id')!r}")
        elif not (isinstance(bbox, list) and len(bbox) == 4):
            parsed.problem(entry.path, f"annotation {ann.get('id')}: bbox must be [x, y, w, h]")
        else:
            x, y, w, h = (float(v) for v in bbox)
            assert entry.boxes is not None
            entry.boxes.append(Box(label, x, y, x + w, y + h))
    parsed.entries.extend(entries.values())


def parse(archive: SafeArchive) -> Parsed:
    parsed = Parsed(task=Task.DETECTION, labels_declared=True)
    index = ImageIndex(archive.names)
    docs: list[tuple[str, dict[str, Any]]] = []
    for name in (n for n in archive.names if n.lower().endswith(".json")):
        try:
            doc = json.loads(archive.read(name))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            parsed.problem(name, f"not valid JSON: {exc}")
            continue
        if is_coco(doc):
            docs.append((name, doc))
    if not docs:
        parsed.problem("(archive)", "no COCO JSON file (with images, annotations, categories)")
        return parsed
    for name, doc in docs:
        try:
            _parse_file(name, doc, index, parsed)
        except (TypeError, ValueError, AttributeError) as exc:
            parsed.problem(name, f"malformed COCO content: {exc}")
    listed = {e.path for e in parsed.entries}
    for image in index.paths:
        if image not in listed:
            parsed.note(image, "not listed in any COCO file: ignored")
    return parsed
