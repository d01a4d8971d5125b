"""Content-addressed blob store on a local (or shared, mounted) folder.

Keys are relative paths, so the store can move or be mounted at another path on
another host without rewriting the database.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import BinaryIO


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, key: str) -> Path:
        resolved = (self.root / key).resolve()
        if not resolved.is_relative_to(self.root.resolve()):
            raise ValueError(f"blob key escapes the store: {key!r}")
        return resolved

    def put(self, data: bytes, *, prefix: str, suffix: str = "") -> tuple[str, str]:
        """Store bytes under their sha256 and return (key, sha256 hex).

        Args:
            data: the blob.
            prefix: folder inside the store, e.g. ``"images"``.
            suffix: file-name suffix kept for humans browsing the store, e.g. ``".dcm"``.

        Returns:
            The relative key and the sha256 hex digest.
        """
        digest = hashlib.sha256(data).hexdigest()
        key = f"{prefix}/{digest[:2]}/{digest}{suffix}"
        target = self.path(key)
        if not self._touch(target):
            target.parent.mkdir(parents=True, exist_ok=True)
            # Write-then-rename: a crash never leaves a half-written blob under its final name.
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, target)
        return key, digest

    @staticmethod
    def _touch(target: Path) -> bool:
        """Refresh an existing blob's mtime; False when there is none.

        The mtime is when a blob was last written *or re-used*: shared.deletion leaves blobs
        younger than its grace period alone, since the row that re-uses one may not be
        committed yet. A blob renamed away by a deletion meanwhile counts as missing.
        """
        try:
            os.utime(target)
        except FileNotFoundError:
            return False
        return True

    def put_fileobj(self, source: BinaryIO, *, prefix: str, suffix: str = "") -> tuple[str, str]:
        """Like `put`, streaming from a file object (large uploads never sit in memory)."""
        h = hashlib.sha256()
        staging = self.root / prefix
        staging.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=staging, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                for chunk in iter(lambda: source.read(1 << 20), b""):
                    h.update(chunk)
                    fh.write(chunk)
            digest = h.hexdigest()
            key = f"{prefix}/{digest[:2]}/{digest}{suffix}"
            target = self.path(key)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return key, digest

    def put_file(self, source: Path, *, prefix: str, suffix: str = "") -> tuple[str, str]:
        return self.put(source.read_bytes(), prefix=prefix, suffix=suffix)

    def get(self, key: str) -> bytes:
        return self.path(key).read_bytes()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
