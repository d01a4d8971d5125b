"""Read untrusted dataset zips without extracting them to disk.

`open_archive` vets the central directory (fast: nothing is inflated): member count, declared
sizes, compression ratios (zip bombs), paths (absolute, `..`, drive letters, backslashes),
symlinks, encryption, duplicate names. `SafeArchive.read` then streams one member with a byte
cap, because declared sizes can lie. Members are never written under their own names, so a
path can never escape anywhere; the checks make the refusal explicit instead.
"""

from __future__ import annotations

import re
import stat
import zipfile
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import IO

from shared.config import Settings
from shared.errors import ArchiveTooLarge, InvalidArchive, UnsafeArchive, UnsupportedArchive

_DRIVE = re.compile(r"^[A-Za-z]:")
_UNIX = 3  # ZipInfo.create_system of archives made on Unix (mode bits in external_attr)
# OS clutter that zip tools add; skipped silently, never imported.
_JUNK_PARTS = {"__MACOSX", ".DS_Store", "Thumbs.db", "desktop.ini"}
_CHUNK = 1 << 20


@dataclass(frozen=True)
class ZipLimits:
    max_members: int
    max_total_bytes: int
    max_ratio: int
    ratio_min_bytes: int
    max_member_bytes: int

    @classmethod
    def from_settings(cls, settings: Settings) -> ZipLimits:
        return cls(
            max_members=settings.zip_max_members,
            max_total_bytes=settings.zip_max_total_bytes,
            max_ratio=settings.zip_max_ratio,
            ratio_min_bytes=settings.zip_ratio_min_bytes,
            max_member_bytes=settings.max_file_bytes,
        )


def _mib(n: int) -> str:
    return f"{n / (1024 * 1024):.0f} MiB"


def _check_path(name: str) -> None:
    if "\x00" in name:
        raise UnsafeArchive(f"member name {name!r} contains a NUL byte")
    if "\\" in name:
        raise UnsafeArchive(f"member {name!r} uses backslashes; zip paths must use '/'")
    if name.startswith("/") or _DRIVE.match(name):
        raise UnsafeArchive(f"member {name!r} has an absolute path")
    if ".." in PurePosixPath(name).parts:
        raise UnsafeArchive(f"member {name!r} points outside the archive ('..' in its path)")


def _is_symlink(info: zipfile.ZipInfo) -> bool:
    return info.create_system == _UNIX and stat.S_ISLNK(info.external_attr >> 16)


def is_junk(name: str) -> bool:
    """OS clutter (`__MACOSX/`, `.DS_Store`) and hidden files, skipped on import."""
    parts = PurePosixPath(name).parts
    return any(p in _JUNK_PARTS or p.startswith(".") for p in parts)


def _check_member(info: zipfile.ZipInfo, limits: ZipLimits) -> None:
    name = info.filename
    _check_path(name)
    if _is_symlink(info):
        raise UnsafeArchive(f"member {name!r} is a symbolic link; links are not accepted")
    if info.flag_bits & 0x1:
        raise InvalidArchive(f"member {name!r} is encrypted; upload an unencrypted zip")
    if info.file_size > limits.max_member_bytes:
        raise ArchiveTooLarge(
            f"member {name!r} unpacks to {_mib(info.file_size)}; the limit per file is "
            f"{_mib(limits.max_member_bytes)}"
        )
    if info.file_size > limits.ratio_min_bytes:
        ratio = info.file_size / max(info.compress_size, 1)
        if ratio > limits.max_ratio:
            raise ArchiveTooLarge(
                f"member {name!r} has a compression ratio of {ratio:.0f}:1 (limit "
                f"{limits.max_ratio}:1): refused as a possible zip bomb"
            )


def _check_totals(infos: list[zipfile.ZipInfo], archive_bytes: int, limits: ZipLimits) -> None:
    total = sum(i.file_size for i in infos)
    if total > limits.max_total_bytes:
        raise ArchiveTooLarge(
            f"the archive unpacks to {_mib(total)}; the limit is {_mib(limits.max_total_bytes)}"
        )
    if total > limits.ratio_min_bytes and total / max(archive_bytes, 1) > limits.max_ratio:
        raise ArchiveTooLarge(
            f"the archive unpacks to {total / max(archive_bytes, 1):.0f} times its size (limit "
            f"{limits.max_ratio}:1): refused as a possible zip bomb"
        )


class SafeArchive:
    """A vetted zip: the file members that are not OS clutter, readable with byte caps."""

    def __init__(self, zf: zipfile.ZipFile, members: dict[str, zipfile.ZipInfo], limits: ZipLimits):
        self._zf = zf
        self._members = members
        self._limits = limits
        self._bytes_read = 0

    @property
    def names(self) -> list[str]:
        """Member file names in archive order (directories and clutter excluded)."""
        return list(self._members)

    def size(self, name: str) -> int:
        return self._members[name].file_size

    def read(self, name: str, *, max_bytes: int | None = None) -> bytes:
        """Inflate one member, refusing it as soon as it grows past its cap.

        Args:
            name: a member from `names`.
            max_bytes: a smaller cap than the declared size (e.g. to sniff a header).

        Returns:
            The member's bytes (at most `max_bytes` when given).

        Raises:
            ArchiveTooLarge: the member inflates past its declared size or the archive past
                the total limit.
            InvalidArchive: the compressed data is corrupt (CRC or deflate error).
        """
        info = self._members[name]
        cap = info.file_size if max_bytes is None else min(max_bytes, info.file_size)
        chunks: list[bytes] = []
        got = 0
        try:
            with self._zf.open(info) as fh:
                while got < cap + 1:
                    chunk = fh.read(min(_CHUNK, cap + 1 - got))
                    if not chunk:
                        break
                    chunks.append(chunk)
                    got += len(chunk)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError) as exc:
            raise InvalidArchive(f"member {name!r} cannot be unpacked: {exc}") from None
        if got > cap and max_bytes is None:
            raise ArchiveTooLarge(f"member {name!r} unpacks to more than its declared size")
        self._bytes_read += got
        if self._bytes_read > self._limits.max_total_bytes:
            raise ArchiveTooLarge(
                f"the archive unpacked past the {_mib(self._limits.max_total_bytes)} limit"
            )
        return b"".join(chunks)[:cap]

    def close(self) -> None:
        self._zf.close()

    def __enter__(self) -> SafeArchive:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def open_archive(source: IO[bytes], limits: ZipLimits) -> SafeArchive:
    """Vet a zip's central directory and return it ready to read.

    Args:
        source: a seekable binary file (the upload, or the stored blob).
        limits: member count, total size, ratio and per-file limits.

    Returns:
        The vetted archive; close it (or use it as a context manager).

    Raises:
        UnsupportedArchive: not a zip file.
        InvalidArchive: a corrupt central directory or encrypted members.
        UnsafeArchive: absolute or `..` paths, backslashes, symlinks, duplicate names.
        ArchiveTooLarge: too many members, too many bytes, a bomb-like compression ratio.
    """
    source.seek(0, 2)
    archive_bytes = source.tell()
    source.seek(0)
    if not zipfile.is_zipfile(source):
        raise UnsupportedArchive("the upload is not a zip archive (no zip central directory)")
    source.seek(0)
    try:
        zf = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError) as exc:
        raise InvalidArchive(f"the zip archive is corrupt: {exc}") from None
    try:
        infos = zf.infolist()
        if len(infos) > limits.max_members:
            raise ArchiveTooLarge(
                f"the archive has {len(infos)} members; the limit is {limits.max_members}"
            )
        members: dict[str, zipfile.ZipInfo] = {}
        for info in infos:
            _check_member(info, limits)
            if info.filename in members:
                raise UnsafeArchive(f"member {info.filename!r} appears twice in the archive")
            if not info.is_dir() and not is_junk(info.filename):
                members[info.filename] = info
        _check_totals(infos, archive_bytes, limits)
    except BaseException:
        zf.close()
        raise
    return SafeArchive(zf, members, limits)
