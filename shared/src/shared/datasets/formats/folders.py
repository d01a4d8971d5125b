"""Class folders: `[TaskNNN_name/]rawdata/<class>/*`, `<class>/*` or `<split>/<class>/*`.

An optional `dataset.json` next to `rawdata/` (or at the top) declares `labels`, split
ratios (`split`: {"train", "validation", "test"}), a `group_pattern` and the `task`.
"""

from __future__ import annotations

import json
from pathlib import PurePosixPath
from typing import Any

from shared.datasets.formats.base import SPLIT_NAMES, Entry, Parsed, Task, is_image, label_list
from shared.datasets.safezip import SafeArchive

_IGNORED_QUIETLY = {"dataset.json", "readme", "readme.md", "readme.txt", "license", "licence"}


def _dataset_json(archive: SafeArchive, parsed: Parsed) -> tuple[str | None, dict[str, Any]]:
    candidates = sorted(
        (n for n in archive.names if PurePosixPath(n).name == "dataset.json"),
        key=lambda n: n.count("/"),
    )
    if not candidates:
        return None, {}
    name = candidates[0]
    try:
        spec = json.loads(archive.read(name))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        parsed.problem(name, f"not valid JSON: {exc}")
        return name, {}
    if not isinstance(spec, dict):
        parsed.problem(name, "must be a JSON object")
        return name, {}
    return name, spec


def _apply_spec(name: str, spec: dict[str, Any], parsed: Parsed) -> None:
    if "labels" in spec:
        labels = label_list(spec["labels"])
        if labels is None:
            parsed.problem(name, "`labels` must be a list of names or {index: name}")
        else:
            parsed.labels, parsed.labels_declared = labels, True
    ratios = spec.get("split") or spec.get("ratios")
    if ratios is not None:
        if isinstance(ratios, dict) and all(isinstance(v, int | float) for v in ratios.values()):
            parsed.ratios = {SPLIT_NAMES.get(str(k), str(k)): float(v) for k, v in ratios.items()}
        else:
            parsed.problem(name, '`split` must be {"train": 0.7, "validation": 0.15, ...}')
    if isinstance(spec.get("group_pattern"), str):
        parsed.group_pattern = spec["group_pattern"]
    task = spec.get("task")
    if task is not None and task != Task.CLASSIFICATION:
        parsed.problem(name, f"task {task!r}: class folders hold a classification dataset")


def _relative_parts(path: str, prefix_len: int) -> tuple[str, ...]:
    parts = PurePosixPath(path).parts
    if "rawdata" in parts[:-1]:
        return parts[parts.index("rawdata") + 1 :]
    return parts[prefix_len:]


def _common_prefix_len(paths: list[str]) -> int:
    """Leading folders shared by every image, always leaving `<class>/<file>`."""
    split_paths = [PurePosixPath(p).parts for p in paths]
    n = min(len(p) for p in split_paths) - 2
    common = 0
    while common < n and len({p[common] for p in split_paths}) == 1:
        common += 1
    return max(common, 0)


def parse(archive: SafeArchive) -> Parsed:
    parsed = Parsed(task=Task.CLASSIFICATION)
    spec_name, spec = _dataset_json(archive, parsed)
    if spec_name:
        _apply_spec(spec_name, spec, parsed)
    images = [n for n in archive.names if is_image(n)]
    for name in archive.names:
        if not is_image(name) and PurePosixPath(name).name.lower() not in _IGNORED_QUIETLY:
            parsed.note(name, "not a PNG, JPEG or DICOM file: ignored")
    if not images:
        parsed.problem("(archive)", "no PNG, JPEG or DICOM images found")
        return parsed
    prefix_len = _common_prefix_len(images)
    found: set[str] = set()
    for path in images:
        parts = _relative_parts(path, prefix_len)
        split = SPLIT_NAMES.get(parts[0].lower()) if len(parts) >= 3 else None
        if split is not None:
            parts = parts[1:]
        if len(parts) < 2:
            parsed.problem(path, "image is not inside a class folder (<class>/<image>)")
            continue
        found.add(parts[0])
        parsed.entries.append(Entry(path=path, label=parts[0], split=split))
    presplit = {e.split is not None for e in parsed.entries}
    if len(presplit) > 1:
        parsed.problem("(archive)", "some images are in train/validation/test folders, some not")
    if not parsed.labels_declared:
        parsed.labels = sorted(found)
    return parsed
