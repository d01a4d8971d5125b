"""VOC annotations are parsed with defusedxml: no DTD, no entities, in any encoding."""

from __future__ import annotations

import io
import zipfile

import pytest

from shared.config import Settings
from shared.datasets.formats import voc
from shared.datasets.safezip import ZipLimits, open_archive
from tests.fixtures.datasets import bccd_tiny_zip

GOOD = (
    "<annotation><filename>a.jpg</filename><object><name>rbc</name><bndbox>"
    "<xmin>1</xmin><ymin>2</ymin><xmax>3</xmax><ymax>4</ymax></bndbox></object></annotation>"
)
LAUGHS = (
    '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
    '<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>'
    "<annotation><filename>&lol2;</filename></annotation>"
)
EXTERNAL = (
    '<?xml version="1.0"?><!DOCTYPE a [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
    "<annotation><filename>&xxe;</filename></annotation>"
)
BARE_DTD = (
    '<?xml version="1.0"?><!DOCTYPE annotation SYSTEM "http://example.org/voc.dtd"><annotation/>'
)


def _parse(files: dict[str, bytes]) -> voc.Parsed:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    buffer.seek(0)
    with open_archive(buffer, ZipLimits.from_settings(Settings())) as archive:
        return voc.parse(archive)


@pytest.mark.parametrize(
    "xml",
    [
        LAUGHS.encode(),
        EXTERNAL.encode(),
        BARE_DTD.encode(),
        # UTF-16 hides "<!ENTITY" from a byte search; the parser still sees it.
        LAUGHS.replace('version="1.0"', 'version="1.0" encoding="UTF-16"').encode("utf-16"),
    ],
)
def test_dtds_and_entities_are_refused(xml: bytes) -> None:
    parsed = _parse({"Annotations/a.xml": xml, "JPEGImages/a.jpg": b"x"})
    problems = [p for p in parsed.problems if p["file"] == "Annotations/a.xml"]
    assert problems and "DTDs and entity declarations are not accepted" in problems[0]["problem"]
    assert not any(e.boxes for e in parsed.entries)


def test_plain_voc_still_parses_with_named_coordinates() -> None:
    parsed = _parse({"Annotations/a.xml": GOOD.encode(), "JPEGImages/a.jpg": b"x"})
    (entry,) = parsed.entries
    (box,) = entry.boxes
    assert (box.label, box.x1, box.y1, box.x2, box.y2, box.relative) == ("rbc", 1, 2, 3, 4, False)


def test_the_bccd_fixture_parses() -> None:
    buffer = io.BytesIO(bccd_tiny_zip())
    with open_archive(buffer, ZipLimits.from_settings(Settings())) as archive:
        parsed = voc.parse(archive)
    assert parsed.entries and not parsed.problems
