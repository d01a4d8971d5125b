"""RSNA Pneumonia style CSV: `patientId,x,y,width,height,Target`, one row per box.

`Target` 0 rows are images without findings. Each `patientId` names an image file
(`<patientId>.dcm`, `.png` or `.jpg`) anywhere in the archive and is also the group id, so one
patient never lands in two splits. An optional `class` (or `label`) column names the box
class; the default is `opacity`.
"""

from __future__ import annotations

import csv
import io

from shared.datasets.formats.base import Box, Entry, ImageIndex, Parsed, Task
from shared.datasets.safezip import SafeArchive

REQUIRED = ("patientId", "x", "y", "width", "height", "Target")
DEFAULT_LABEL = "opacity"


def has_rsna_header(first_line: str) -> bool:
    columns = {c.strip() for c in first_line.split(",")}
    return set(REQUIRED) <= columns


def _number(value: str | None) -> float | None:
    return float(value) if value not in (None, "", "nan", "NaN") else None


def parse(archive: SafeArchive) -> Parsed:
    parsed = Parsed(task=Task.DETECTION)
    index = ImageIndex(archive.names)
    entries: dict[str, Entry] = {}
    found = False
    for name in (n for n in archive.names if n.lower().endswith(".csv")):
        text = archive.read(name).decode("utf-8-sig", "replace")
        reader = csv.DictReader(io.StringIO(text))
        if not set(REQUIRED) <= set(reader.fieldnames or []):
            parsed.note(name, f"not an RSNA box CSV (needs {', '.join(REQUIRED)}): ignored")
            continue
        found = True
        for line, row in enumerate(reader, start=2):
            pid = (row["patientId"] or "").strip()
            where = f"{name}:{line}"
            path = index.find(pid, by_stem=True)
            if path is None:
                parsed.problem(where, f"no image file named {pid!r} (.dcm/.png/.jpg)")
                continue
            entry = entries.setdefault(pid, Entry(path=path, boxes=[], group=pid, source=name))
            try:
                target = int(float(row["Target"]))
                x, y = _number(row["x"]), _number(row["y"])
                w, h = _number(row["width"]), _number(row["height"])
            except ValueError as exc:
                parsed.problem(where, f"non-numeric value: {exc}")
                continue
            if target == 0:
                continue
            if None in (x, y, w, h):
                parsed.problem(where, "Target is 1 but x, y, width or height is empty")
                continue
            assert x is not None and y is not None and w is not None and h is not None
            label = (row.get("class") or row.get("label") or DEFAULT_LABEL).strip()
            assert entry.boxes is not None
            entry.boxes.append(Box(label, x, y, x + w, y + h))
    if not found:
        parsed.problem("(archive)", f"no CSV with the columns {', '.join(REQUIRED)}")
    parsed.entries = list(entries.values())
    listed = {e.path for e in parsed.entries}
    for image in index.paths:
        if image not in listed:
            parsed.note(image, "not listed in the CSV: ignored")
    parsed.labels = sorted({b.label for e in parsed.entries for b in e.boxes or []})
    if not parsed.labels:
        parsed.labels = [DEFAULT_LABEL]
    return parsed
