"""Zip vetting without a stack: limits, paths, links, lying sizes."""

from __future__ import annotations

import io
import random
import zipfile

import pytest

from shared.datasets.safezip import ZipLimits, open_archive
from shared.errors import ArchiveTooLarge, InvalidArchive, UnsafeArchive, UnsupportedArchive

LIMITS = ZipLimits(
    max_members=10,
    max_total_bytes=1024 * 1024,
    max_ratio=100,
    ratio_min_bytes=64 * 1024,
    max_member_bytes=512 * 1024,
)


def _zip(*members: tuple[zipfile.ZipInfo | str, bytes]) -> io.BytesIO:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for info, data in members:
            archive.writestr(info, data)
    buffer.seek(0)
    return buffer


def test_clean_archive_lists_files_and_skips_os_clutter() -> None:
    source = _zip(
        ("a/b.png", b"png"), ("__MACOSX/a/._b.png", b"x"), (".DS_Store", b"x"), ("a/", b"")
    )
    with open_archive(source, LIMITS) as archive:
        assert archive.names == ["a/b.png"]
        assert archive.read("a/b.png") == b"png"
        assert archive.read("a/b.png", max_bytes=2) == b"pn"


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("../evil.png", "outside the archive"),
        ("a/../../evil.png", "outside the archive"),
        ("/etc/passwd", "absolute path"),
        ("C:/evil.png", "absolute path"),
        ("a\\..\\evil.png", "backslashes"),
    ],
)
def test_unsafe_paths(name: str, words: str) -> None:
    with pytest.raises(UnsafeArchive, match=words):
        open_archive(_zip((name, b"x")), LIMITS)


def test_symlink_and_duplicate_names() -> None:
    link = zipfile.ZipInfo("a/link.png")
    link.create_system, link.external_attr = 3, 0o120777 << 16
    with pytest.raises(UnsafeArchive, match="symbolic link"):
        open_archive(_zip((link, b"/etc/passwd")), LIMITS)
    with pytest.warns(UserWarning), pytest.raises(UnsafeArchive, match="appears twice"):
        open_archive(_zip(("a.png", b"1"), ("a.png", b"2")), LIMITS)


def test_limits() -> None:
    with pytest.raises(ArchiveTooLarge, match="11 members"):
        open_archive(_zip(*((f"{i}.png", b"x") for i in range(11))), LIMITS)
    with pytest.raises(ArchiveTooLarge, match="zip bomb"):
        open_archive(_zip(("a.png", bytes(500 * 1024))), LIMITS)
    with pytest.raises(ArchiveTooLarge, match="limit per file"):
        open_archive(_zip(("a.png", bytes(600 * 1024))), LIMITS)
    rng = random.Random(0)
    noise = [(f"{i}.png", rng.randbytes(250_000)) for i in range(5)]  # incompressible
    with pytest.raises(ArchiveTooLarge, match="unpacks to"):
        open_archive(_zip(*noise), LIMITS)


def test_not_a_zip_and_encrypted() -> None:
    with pytest.raises(UnsupportedArchive):
        open_archive(io.BytesIO(b"\x89PNG\r\n\x1a\n not a zip"), LIMITS)
    encrypted = _zip(("a.png", b"x"))
    data = bytearray(encrypted.getvalue())
    for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        at = data.index(signature)
        data[at + offset] |= 0x1  # general-purpose flag bit 0: encrypted
    with pytest.raises(InvalidArchive, match="encrypted"):
        open_archive(io.BytesIO(bytes(data)), LIMITS)


def test_a_member_that_lies_about_its_size_is_refused_while_reading() -> None:
    data = bytearray(_zip(("a.png", b"y" * 5000)).getvalue())
    for signature, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        at = data.index(signature)
        data[at + offset : at + offset + 4] = (100).to_bytes(4, "little")  # claims 100 bytes
    with open_archive(io.BytesIO(bytes(data)), LIMITS) as archive:
        assert archive.size("a.png") == 100
        with pytest.raises(InvalidArchive, match="cannot be unpacked"):
            archive.read("a.png")
