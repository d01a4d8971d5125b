"""Annotation formats: auto-detection from cheap looks at the archive, and one parser each."""

from __future__ import annotations

from collections.abc import Callable

from shared.datasets.formats import coco, folders, labelstudio, rsna, segmentation, voc
from shared.datasets.formats.base import FORMAT_TASK, Parsed, SourceFormat, Task
from shared.datasets.safezip import SafeArchive
from shared.errors import InvalidDataset

PARSERS: dict[SourceFormat, Callable[[SafeArchive], Parsed]] = {
    SourceFormat.FOLDERS: folders.parse,
    SourceFormat.VOC: voc.parse,
    SourceFormat.COCO: coco.parse,
    SourceFormat.RSNA: rsna.parse,
    SourceFormat.LABELSTUDIO: labelstudio.parse,
    SourceFormat.MSD: segmentation.parse_msd,
    SourceFormat.MASKS: segmentation.parse_masks,
}
_SNIFF = 4096
_COCO_KEYS = ('"images"', '"annotations"', '"categories"')

__all__ = ["PARSERS", "SourceFormat", "Task", "detect_format", "task_of"]


def _head(archive: SafeArchive, name: str) -> str:
    return archive.read(name, max_bytes=_SNIFF).decode("utf-8-sig", "replace").lstrip()


def detect_format(archive: SafeArchive) -> SourceFormat:
    """Guess the format from file names and the first bytes of annotation files.

    VOC: XML files with an `<annotation>` root; COCO: a JSON object with `images`; Label
    Studio: a JSON list; RSNA: a CSV whose header has patientId,x,y,width,height,Target;
    MSD/nnU-Net: a `labelsTr/` folder; masks: `images/` beside `masks/`; otherwise class
    folders.
    """
    if segmentation.is_msd(archive.names):
        return SourceFormat.MSD
    if segmentation.is_masks(archive.names):
        return SourceFormat.MASKS
    for name in archive.names:
        lower = name.lower()
        if lower.endswith(".xml") and "<annotation" in _head(archive, name):
            return SourceFormat.VOC
        if lower.endswith(".csv") and rsna.has_rsna_header(_head(archive, name).split("\n")[0]):
            return SourceFormat.RSNA
        if lower.endswith(".json") and not lower.endswith("dataset.json"):
            head = _head(archive, name)
            if head.startswith("[") and '"data"' in head:
                return SourceFormat.LABELSTUDIO
            if head.startswith("{") and any(k in head for k in _COCO_KEYS):
                return SourceFormat.COCO
    return SourceFormat.FOLDERS


def task_of(fmt: SourceFormat, requested: Task | None) -> Task | None:
    """The task a format implies, checked against the one requested.

    Returns None for Label Studio exports, which hold either (known once parsed).

    Raises:
        InvalidDataset: the requested task contradicts the format.
    """
    implied = FORMAT_TASK.get(fmt)
    if implied is not None and requested is not None and implied != requested:
        raise InvalidDataset(
            f"a {fmt.value} upload is a {implied.value} dataset, but task {requested.value!r} "
            "was requested"
        )
    return implied or requested
