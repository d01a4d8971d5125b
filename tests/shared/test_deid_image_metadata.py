"""PNG/JPEG metadata stripping: names in EXIF, XMP, comments and text chunks gone, pixels same."""

from __future__ import annotations

import zlib
from io import BytesIO

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from shared.errors import InvalidImage
from shared.imaging.strip_metadata import strip_jpeg, strip_metadata, strip_png

NAME = "Doe^Jane MRN-4711"


def _image(mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(0)
    shape = (48, 64, 3) if mode == "RGB" else (48, 64)
    return Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8), mode)


def _exif() -> Image.Exif:
    exif = Image.Exif()
    exif[0x013B] = NAME  # Artist
    exif[0x010E] = f"chest of {NAME}"  # ImageDescription
    return exif


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data).to_bytes(4, "big")
    return len(data).to_bytes(4, "big") + kind + data + crc


def png_with_text(mode: str = "RGB") -> bytes:
    info = PngImagePlugin.PngInfo()
    info.add_text("Patient", NAME)
    info.add_text("Comment", NAME, zip=True)  # zTXt
    info.add_itxt("Author", NAME, lang="en", tkey="Author")
    info.add(b"tIME", bytes([7, 234, 1, 2, 3, 4, 5]))
    out = BytesIO()
    _image(mode).save(out, "PNG", pnginfo=info, exif=_exif())
    data = out.getvalue()
    # A private ancillary chunk after the image data, before IEND.
    iend = data.rindex(b"IEND") - 4
    return data[:iend] + _chunk(b"prVt", NAME.encode()) + data[iend:]


def jpeg_with_exif(*, progressive: bool = False, mode: str = "RGB") -> bytes:
    out = BytesIO()
    _image(mode).save(
        out,
        "JPEG",
        quality=90,
        exif=_exif(),
        comment=NAME.encode(),
        xmp=f"<x:xmpmeta><dc:creator>{NAME}</dc:creator></x:xmpmeta>".encode(),
        progressive=progressive,
    )
    return out.getvalue() + NAME.encode()  # a vendor trailer after EOI


def _pixels(data: bytes) -> np.ndarray:
    with Image.open(BytesIO(data)) as im:
        return np.asarray(im.convert(im.mode))


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_png_text_chunks_are_removed_and_pixels_identical(mode: str) -> None:
    original = png_with_text(mode)
    assert NAME.encode() in original and b"eXIf" in original and b"tIME" in original
    stripped = strip_png(original)
    for marker in (b"Doe", b"MRN", b"tEXt", b"zTXt", b"iTXt", b"eXIf", b"tIME", b"prVt"):
        assert marker not in stripped, marker
    np.testing.assert_array_equal(_pixels(stripped), _pixels(original))
    idat = [original[i : i + 4] for i in range(len(original)) if original[i : i + 4] == b"IDAT"]
    assert len(idat) >= 1 and stripped.count(b"IDAT") == len(idat)  # data copied, not redone


@pytest.mark.parametrize("progressive", [False, True])
@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_jpeg_app_and_comment_segments_are_removed_without_reencoding(
    progressive: bool, mode: str
) -> None:
    original = jpeg_with_exif(progressive=progressive, mode=mode)
    assert original.count(NAME.encode()) >= 3  # EXIF, XMP, COM, trailer
    stripped = strip_jpeg(original)
    assert b"Doe" not in stripped and b"MRN" not in stripped
    assert b"Exif" not in stripped and b"http://ns.adobe.com/xap" not in stripped
    assert stripped.endswith(b"\xff\xd9")
    np.testing.assert_array_equal(_pixels(stripped), _pixels(original))
    scan = original.index(b"\xff\xda")
    assert original[scan:].split(b"\xff\xd9")[0] in stripped  # scans byte for byte


def test_jfif_header_is_kept_and_other_formats_pass_through() -> None:
    stripped = strip_metadata(jpeg_with_exif(), "jpeg")
    assert stripped[6:11] == b"JFIF\x00"
    assert strip_metadata(b"DICM-bytes", "dicom") == b"DICM-bytes"
    with pytest.raises(InvalidImage):
        strip_png(b"not a png")
    with pytest.raises(InvalidImage):
        strip_jpeg(b"\xff\xd8\xff\xe1\xff\xff")  # a segment longer than the file
