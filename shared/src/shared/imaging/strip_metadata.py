"""Strip identifying metadata from PNG and JPEG uploads without touching the pixels.

Phones, scanners and screenshot tools write patient names, dates, device serials and GPS
positions into EXIF, XMP, IPTC, comments and PNG text chunks. Both formats are rewritten at
the container level: the compressed image data is copied byte for byte, so nothing is
re-encoded (no JPEG generation loss) and the file decodes to exactly the same pixels.

- PNG: only the chunks needed to render the image are kept (IHDR, PLTE, IDAT, IEND, and the
  colour/transparency/density/animation chunks); tEXt, iTXt, zTXt, eXIf, tIME and any other
  ancillary or private chunk are dropped.
- JPEG: every APPn segment except APP0 "JFIF" and APP14 "Adobe" (which tell a decoder the
  colour transform), and every COM segment, are dropped; data after EOI is dropped.
"""

from __future__ import annotations

from shared.errors import InvalidImage

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Chunks that affect how the pixels decode or display; everything else is metadata.
_PNG_KEPT = frozenset(
    {
        b"IHDR", b"PLTE", b"IDAT", b"IEND", b"tRNS", b"gAMA", b"cHRM", b"sRGB", b"iCCP",
        b"sBIT", b"bKGD", b"pHYs", b"cICP", b"mDCV", b"cLLI", b"acTL", b"fcTL", b"fdAT",
    }
)  # fmt: skip
_JPEG_KEPT_APP = {0xE0: b"JFIF\x00", 0xEE: b"Adobe"}
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM, RST0-7: no length field


def strip_png(data: bytes) -> bytes:
    """The PNG with only its rendering chunks, in their original order and bytes."""
    if not data.startswith(PNG_SIGNATURE):
        raise InvalidImage("not a PNG file")
    out = [PNG_SIGNATURE]
    i = len(PNG_SIGNATURE)
    while i + 12 <= len(data):
        length = int.from_bytes(data[i : i + 4], "big")
        kind = data[i + 4 : i + 8]
        end = i + 12 + length
        if end > len(data):
            raise InvalidImage(f"PNG chunk {kind!r} runs past the end of the file")
        if kind in _PNG_KEPT:
            out.append(data[i:end])
        i = end
        if kind == b"IEND":
            break
    return b"".join(out)


def _entropy_end(data: bytes, i: int) -> int:
    """Index of the first marker after entropy-coded data starting at `i`."""
    n = len(data)
    while i < n - 1:
        if data[i] == 0xFF:
            nxt = data[i + 1]
            if nxt not in (0x00, 0xFF) and nxt not in _JPEG_STANDALONE:
                return i
        i += 1
    return n


def strip_jpeg(data: bytes) -> bytes:
    """The JPEG without APPn (other than JFIF/Adobe), COM and trailing data; scans untouched."""
    if not data.startswith(b"\xff\xd8"):
        raise InvalidImage("not a JPEG file")
    out = [b"\xff\xd8"]
    i, n = 2, len(data)
    while i < n:
        if data[i] != 0xFF:
            raise InvalidImage(f"JPEG marker expected at byte {i}")
        while i + 1 < n and data[i + 1] == 0xFF:  # fill bytes before a marker
            i += 1
        if i + 1 >= n:
            break
        marker = data[i + 1]
        if marker == 0xD9:  # EOI: whatever follows (vendor trailers) is dropped
            out.append(b"\xff\xd9")
            break
        if marker in _JPEG_STANDALONE:
            out.append(data[i : i + 2])
            i += 2
            continue
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        end = i + 2 + length
        if length < 2 or end > n:
            raise InvalidImage(f"JPEG segment 0x{marker:02X} runs past the end of the file")
        segment = data[i:end]
        app_kept = marker in _JPEG_KEPT_APP and segment[4:].startswith(_JPEG_KEPT_APP[marker])
        if not (0xE0 <= marker <= 0xEF or marker == 0xFE) or app_kept:
            out.append(segment)
        i = end
        if marker == 0xDA:  # start of scan: copy the compressed data as it is
            scan_end = _entropy_end(data, i)
            out.append(data[i:scan_end])
            i = scan_end
    return b"".join(out)


def strip_metadata(data: bytes, fmt: str) -> bytes:
    """`strip_png` or `strip_jpeg` by probed format; other formats are returned as they are."""
    if fmt == "png":
        return strip_png(data)
    if fmt == "jpeg":
        return strip_jpeg(data)
    return data
