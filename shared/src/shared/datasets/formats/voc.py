"""Pascal VOC: one `Annotations/*.xml` per image (`<filename>`, `<object><name><bndbox>`).

Images are looked up next to the XML's folder (`JPEGImages/`), beside it, or by unique file
name. `ImageSets/Main/{train,val,test}.txt` (when all present) give a pre-made split.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import PurePosixPath

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring as safe_fromstring

from shared.datasets.formats.base import SPLIT_NAMES, Box, Entry, ImageIndex, Parsed, Task
from shared.datasets.safezip import SafeArchive

_MAX_XML_BYTES = 4 * 1024 * 1024


def _float(node: ET.Element, tag: str) -> float:
    text = node.findtext(tag)
    if text is None:
        raise ValueError(f"<bndbox> has no <{tag}>")
    return float(text)


def _read_xml(archive: SafeArchive, name: str) -> ET.Element:
    data = archive.read(name, max_bytes=_MAX_XML_BYTES + 1)
    if len(data) > _MAX_XML_BYTES:
        raise ValueError("annotation file is larger than 4 MiB")
    # defusedxml: no DTD at all (entity expansion, external entities: none has a place in
    # a VOC file), whatever the encoding hides from a byte search.
    try:
        root: ET.Element = safe_fromstring(data, forbid_dtd=True)
    except DefusedXmlException as exc:
        raise ValueError(f"XML DTDs and entity declarations are not accepted ({exc})") from None
    return root


def _splits(archive: SafeArchive) -> dict[str, str]:
    lists = {
        PurePosixPath(n).stem: n
        for n in archive.names
        if "ImageSets/Main/" in n and PurePosixPath(n).stem in ("train", "val", "test")
    }
    if set(lists) != {"train", "val", "test"}:
        return {}
    split_of: dict[str, str] = {}
    for stem, name in lists.items():
        for line in archive.read(name).decode("utf-8", "replace").split():
            split_of[line.strip()] = SPLIT_NAMES[stem]
    return split_of


def parse(archive: SafeArchive) -> Parsed:
    parsed = Parsed(task=Task.DETECTION)
    index = ImageIndex(archive.names)
    split_of = _splits(archive)
    annotated: set[str] = set()
    labels: set[str] = set()
    for xml_name in (n for n in archive.names if n.lower().endswith(".xml")):
        try:
            root = _read_xml(archive, xml_name)
        except (ET.ParseError, ValueError) as exc:
            parsed.problem(xml_name, f"unreadable VOC annotation: {exc}")
            continue
        if root.tag != "annotation":
            parsed.note(xml_name, "not a VOC <annotation> file: ignored")
            continue
        filename = root.findtext("filename") or PurePosixPath(xml_name).stem + ".jpg"
        sibling = str(PurePosixPath(xml_name).parent.parent / "JPEGImages" / filename)
        image = index.find(sibling) or index.find(filename, near=xml_name)
        if image is None:
            parsed.problem(xml_name, f"refers to image {filename!r}, which is not in the archive")
            continue
        boxes: list[Box] = []
        for obj in root.iter("object"):
            name, bndbox = (obj.findtext("name") or "").strip(), obj.find("bndbox")
            if not name or bndbox is None:
                parsed.problem(xml_name, "an <object> lacks <name> or <bndbox>")
                continue
            try:
                x1, y1, x2, y2 = (_float(bndbox, t) for t in ("xmin", "ymin", "xmax", "ymax"))
            except ValueError as exc:
                parsed.problem(xml_name, f"object {name!r}: {exc}")
                continue
            # Named, not *coords: a fifth value would silently become `relative`.
            boxes.append(Box(name, x1, y1, x2, y2))
            labels.add(name)
        annotated.add(image)
        split = split_of.get(PurePosixPath(xml_name).stem) if split_of else None
        parsed.entries.append(Entry(path=image, boxes=boxes, split=split, source=xml_name))
    for image in index.paths:
        if image not in annotated:
            parsed.note(image, "no annotation file: imported as an image without objects")
            split = split_of.get(PurePosixPath(image).stem) if split_of else None
            parsed.entries.append(Entry(path=image, boxes=[], split=split))
    parsed.labels = sorted(labels)
    return parsed
