"""Label Studio JSON export: a list of tasks, each `data.image` + `annotations[].result[]`.

`rectanglelabels` results (x, y, width, height in percent of the image) make a detection
set; `choices` results make a classification set. Uploaded files are matched by name,
with Label Studio's `<8 hex>-` upload prefix removed when needed. `data.patient_id` or
`data.study_id` groups images.
"""

from __future__ import annotations

import json
import re
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import unquote, urlparse

from shared.datasets.formats.base import Box, Entry, ImageIndex, Parsed, Task
from shared.datasets.safezip import SafeArchive

_UPLOAD_PREFIX = re.compile(r"^[0-9a-f]{8}-")


def is_labelstudio(doc: Any) -> bool:
    return (
        isinstance(doc, list)
        and bool(doc)
        and all(isinstance(t, dict) and "data" in t for t in doc)
    )


def _image_ref(task: dict[str, Any]) -> str | None:
    data = task.get("data") or {}
    ref = data.get("image") or next((v for v in data.values() if isinstance(v, str)), None)
    return unquote(urlparse(ref).path) if isinstance(ref, str) else None


def _find(index: ImageIndex, ref: str, near: str) -> str | None:
    name = PurePosixPath(ref).name
    return index.find(ref, near=near) or index.find(_UPLOAD_PREFIX.sub("", name), near=near)


def _results(task: dict[str, Any]) -> list[dict[str, Any]]:
    for annotation in task.get("annotations") or []:
        if not annotation.get("was_cancelled"):
            return list(annotation.get("result") or [])
    return []


def _parse_task(task: dict[str, Any], name: str, index: ImageIndex, parsed: Parsed) -> None:
    ref = _image_ref(task)
    path = _find(index, ref, name) if ref else None
    if path is None:
        parsed.problem(name, f"task {task.get('id')}: image {ref!r} is not in the archive")
        return
    data = task.get("data") or {}
    group = data.get("patient_id") or data.get("study_id")
    entry = Entry(path=path, group=str(group) if group else None, source=name)
    for result in _results(task):
        value = result.get("value") or {}
        if result.get("type") == "rectanglelabels":
            x, y = float(value["x"]), float(value["y"])
            w, h = float(value["width"]), float(value["height"])
            for label in value.get("rectanglelabels") or []:
                entry.boxes = entry.boxes or []
                entry.boxes.append(Box(str(label), x, y, x + w, y + h, relative=True))
        elif result.get("type") == "choices" and value.get("choices"):
            entry.label = str(value["choices"][0])
    parsed.entries.append(entry)


def parse(archive: SafeArchive) -> Parsed:
    parsed = Parsed(task=Task.CLASSIFICATION)
    index = ImageIndex(archive.names)
    for name in (n for n in archive.names if n.lower().endswith(".json")):
        try:
            doc = json.loads(archive.read(name))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            parsed.problem(name, f"not valid JSON: {exc}")
            continue
        if not is_labelstudio(doc):
            continue
        for task in doc:
            try:
                _parse_task(task, name, index, parsed)
            except (KeyError, TypeError, ValueError) as exc:
                parsed.problem(name, f"task {task.get('id')}: malformed result: {exc}")
    if any(e.boxes is not None for e in parsed.entries):
        parsed.task = Task.DETECTION
        for e in parsed.entries:
            if e.boxes is None:
                e.boxes = []
                parsed.note(e.path, "no rectangle in this task: an image without objects")
        labels = {b.label for e in parsed.entries for b in e.boxes or []}
    else:
        for e in parsed.entries:
            if e.label is None:
                parsed.problem(e.path, "task has no `choices` label")
        labels = {e.label for e in parsed.entries if e.label}
    if not parsed.entries and not parsed.problems:
        parsed.problem("(archive)", "no Label Studio JSON export (a list of tasks) found")
    parsed.labels = sorted(labels)
    return parsed
