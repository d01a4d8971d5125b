"""Segmentation uploads: images with label-map masks, in two layouts.

- Medical Segmentation Decathlon / nnU-Net (``TaskNNN_name/`` or ``DatasetNNN_name/``):
  ``imagesTr/<case>.png`` (nnU-Net's channel suffix ``<case>_0000.png`` too) with
  ``labelsTr/<case>.png``, and a ``dataset.json`` whose ``labels`` name the classes
  (``{"0": "background", "1": "nodule"}`` or nnU-Net v2's ``{"background": 0, ...}``).
  ``imagesTs/`` has no labels: noted, not imported. 2D images and single frames only.
- ``images/`` + ``masks/`` side by side, matched by file stem (and by sub-folder, so
  ``images/train/a.png`` pairs with ``masks/train/a.gif``); ``train``/``val``/``test``
  sub-folders give a pre-made split. An optional ``dataset.json`` beside them declares labels.

Masks are PNG, GIF, TIFF or DICOM label maps (pixel value = class id, 0 = background;
binary masks stored as 0/255 are read as 0/1). Their pixels are checked at import
(``shared.datasets.formats.segmentation_masks``).
"""

from __future__ import annotations

import json
import re
from pathlib import PurePosixPath

from shared.datasets.formats.base import SPLIT_NAMES, Entry, Parsed, Task, is_image, label_list
from shared.datasets.safezip import SafeArchive

MASK_SUFFIXES = {".png", ".gif", ".tif", ".tiff", ".dcm", ".dicom"}
_MAX_JSON_BYTES = 4 * 1024 * 1024
# nnU-Net names channel files <case>_0000, <case>_0001, ...; label maps are <case>.
_CHANNEL = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


def _parts(name: str) -> tuple[str, ...]:
    return PurePosixPath(name).parts


def is_msd(names: list[str]) -> bool:
    return any("labelsTr" in _parts(n)[:-1] for n in names)


def is_masks(names: list[str]) -> bool:
    dirs = {p for n in names for p in _parts(n)[:-1]}
    return "masks" in dirs and "images" in dirs


def _root(name: str, folder: str) -> str:
    parts = _parts(name)
    return str(PurePosixPath(*parts[: parts.index(folder)])) if parts.index(folder) else ""


def _under(name: str, folder: str) -> PurePosixPath:
    """Path of ``name`` below its ``folder`` component, without the suffix."""
    parts = _parts(name)
    rel = PurePosixPath(*parts[parts.index(folder) + 1 :])
    return rel.with_suffix("")


def _dataset_json(archive: SafeArchive, root: str, parsed: Parsed, *, required: bool) -> None:
    name = str(PurePosixPath(root) / "dataset.json") if root else "dataset.json"
    if name not in archive.names:
        if required:
            parsed.problem(name, "missing: an MSD/nnU-Net dataset needs dataset.json `labels`")
        return
    try:
        raw = json.loads(archive.read(name, max_bytes=_MAX_JSON_BYTES).decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError) as exc:
        parsed.problem(name, f"unreadable JSON: {exc}")
        return
    labels = label_list(raw.get("labels")) if isinstance(raw, dict) else None
    if labels is None:
        if required or (isinstance(raw, dict) and "labels" in raw):
            parsed.problem(
                name,
                '`labels` must map class ids to names, e.g. {"0": "background", "1": "nodule"}',
            )
        return
    if len(labels) < 2:
        parsed.problem(name, "`labels` needs the background and at least one class")
        return
    parsed.labels, parsed.labels_declared = labels, True
    if isinstance(raw, dict) and isinstance(raw.get("group_pattern"), str):
        parsed.group_pattern = raw["group_pattern"]


def parse_msd(archive: SafeArchive) -> Parsed:
    parsed = Parsed(task=Task.SEGMENTATION)
    labels = [n for n in archive.names if "labelsTr" in _parts(n)[:-1]]
    roots = {_root(n, "labelsTr") for n in labels}
    if len(roots) != 1:
        parsed.problem("(archive)", f"holds {len(roots)} task folders; upload one task per zip")
        return parsed
    root = roots.pop()
    _dataset_json(archive, root, parsed, required=True)
    masks: dict[str, str] = {}
    for name in labels:
        if PurePosixPath(name).suffix.lower() in MASK_SUFFIXES:
            masks[str(_under(name, "labelsTr"))] = name
    matched: set[str] = set()
    for name in archive.names:
        parts = _parts(name)
        if "imagesTs" in parts[:-1] and is_image(name):
            parsed.note(name, "imagesTs has no labels: not imported")
            continue
        if "imagesTr" not in parts[:-1] or not is_image(name):
            continue
        stem = str(_under(name, "imagesTr"))
        channel = _CHANNEL.match(stem)
        if channel and channel["channel"] != "0000":
            parsed.problem(name, "a second channel: only single-channel 2D cases are supported")
            continue
        case = channel["case"] if channel and channel["case"] in masks else stem
        if case not in masks:
            parsed.problem(name, f"no label map labelsTr/{case}.* for this image")
            continue
        matched.add(case)
        parsed.entries.append(Entry(path=name, mask=masks[case], source=masks[case]))
    for case, mask in sorted(masks.items()):
        if case not in matched:
            parsed.problem(mask, "label map without an image in imagesTr")
    return parsed


def parse_masks(archive: SafeArchive) -> Parsed:
    parsed = Parsed(task=Task.SEGMENTATION)
    images = [n for n in archive.names if "images" in _parts(n)[:-1] and is_image(n)]
    masks_by_path: dict[tuple[str, str], str] = {}
    masks_by_stem: dict[tuple[str, str], list[str]] = {}
    for name in archive.names:
        if "masks" not in _parts(name)[:-1]:
            continue
        if PurePosixPath(name).suffix.lower() not in MASK_SUFFIXES:
            continue
        root, rel = _root(name, "masks"), _under(name, "masks")
        masks_by_path[(root, str(rel))] = name
        masks_by_stem.setdefault((root, rel.name), []).append(name)
    roots = {_root(n, "images") for n in images}
    for root in sorted(roots):
        _dataset_json(archive, root, parsed, required=False)
    used: set[str] = set()
    for name in images:
        root, rel = _root(name, "images"), _under(name, "images")
        mask = masks_by_path.get((root, str(rel)))
        if mask is None:
            hits = masks_by_stem.get((root, rel.name), [])
            mask = hits[0] if len(hits) == 1 else None
            if len(hits) > 1:
                parsed.problem(name, f"several masks share its stem: {sorted(hits)[:3]}")
                continue
        if mask is None:
            parsed.problem(name, f"no mask named {rel.name}.* in masks/")
            continue
        used.add(mask)
        split = SPLIT_NAMES.get(rel.parts[0].lower()) if len(rel.parts) > 1 else None
        parsed.entries.append(Entry(path=name, mask=mask, split=split, source=mask))
    for mask in sorted(set(masks_by_path.values()) - used):
        parsed.problem(mask, "mask without an image of the same stem in images/")
    return parsed
