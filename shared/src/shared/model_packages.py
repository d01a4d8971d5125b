"""Model packages as uploaded: a card (JSON) plus weights, loose or in a .zip / .tar.gz.

Only ``card.json`` and ``weights.pt`` (at the top or inside one folder) are read from an
archive, each streamed into a fixed file name with a byte limit: member names never
become paths, so traversal and links cannot escape, and a lying or bomb-like archive
stops at the limit.
"""

from __future__ import annotations

import json
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from pydantic import ValidationError

from shared.errors import (
    InvalidModelCard,
    InvalidModelPackage,
    ModelTooLarge,
    UnsupportedModelPackage,
)
from shared.registry import CARD_FILE, WEIGHTS_FILE
from shared.schemas.models import ModelCard

MAX_CARD_BYTES = 1024 * 1024
_MAX_MEMBERS = 1000


@dataclass(frozen=True)
class Unpacked:
    card: dict[str, Any]
    weights: Path | None


def parse_card_json(raw: bytes | str) -> dict[str, Any]:
    """The card as a JSON object.

    Raises:
        InvalidModelCard: not JSON, or not an object.
    """
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidModelCard(f"the model card is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidModelCard("the model card must be a JSON object")
    return data


def validate_card(data: dict[str, Any], *, prefix: tuple[str | int, ...] = ()) -> ModelCard:
    """Validate a card; every problem is listed in ``errors`` with its field path.

    Raises:
        InvalidModelCard: the card does not validate.
    """
    try:
        return ModelCard.model_validate(data)
    except ValidationError as exc:
        raise card_errors(exc, prefix) from None


def card_errors(exc: ValidationError, prefix: tuple[str | int, ...] = ()) -> InvalidModelCard:
    errors = [
        {"field": ".".join(str(p) for p in ("card", *prefix, *e["loc"])), "message": e["msg"]}
        for e in exc.errors(include_url=False, include_input=False)
    ]
    listed = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:5])
    return InvalidModelCard(f"the model card is invalid ({listed})", errors=errors)


def copy_limited(source: IO[bytes], target: Path, limit: int, what: str) -> None:
    """Stream ``source`` into ``target``, refusing more than ``limit`` bytes."""
    written = 0
    with target.open("wb") as out:
        while chunk := source.read(1 << 20):
            written += len(chunk)
            if written > limit:
                raise ModelTooLarge(f"{what} is larger than the {_mib(limit)} limit")
            out.write(chunk)


def _mib(n: int) -> str:
    return f"{n / (1024 * 1024):.0f} MiB"


def _wanted(name: str) -> str | None:
    """card.json / weights.pt at the top of the archive or inside one folder."""
    parts = name.strip("/").split("/")
    if len(parts) <= 2 and parts[-1] in (CARD_FILE, WEIGHTS_FILE):
        return parts[-1]
    return None


def unpack_package(path: Path, dest: Path, *, max_bytes: int) -> Unpacked:
    """Read card.json (and weights.pt, absent for ensembles) from a .zip or .tar.gz.

    Raises:
        UnsupportedModelPackage: neither a zip nor a gzip'd tar.
        InvalidModelPackage: corrupt archive, no card.json, or duplicated members.
        ModelTooLarge: a member exceeds its limit.
        InvalidModelCard: card.json is not a JSON object.
    """
    with path.open("rb") as fh:
        magic = fh.read(4)
    limits = {CARD_FILE: MAX_CARD_BYTES, WEIGHTS_FILE: max_bytes}
    found: dict[str, Path] = {}

    def take(wanted: str, source: IO[bytes]) -> None:
        if wanted in found:
            raise InvalidModelPackage(f"the package holds more than one {wanted}")
        found[wanted] = dest / wanted
        copy_limited(source, found[wanted], limits[wanted], f"{wanted} in the package")

    try:
        if magic.startswith(b"PK"):
            with zipfile.ZipFile(path) as archive:
                infos = archive.infolist()[:_MAX_MEMBERS]
                for info in infos:
                    wanted = _wanted(info.filename)
                    if wanted and not info.is_dir():
                        with archive.open(info) as member:
                            take(wanted, member)
        elif magic.startswith(b"\x1f\x8b"):
            with tarfile.open(path, "r:gz") as tar:
                for count, entry in enumerate(tar):
                    if count >= _MAX_MEMBERS:
                        break
                    wanted = _wanted(entry.name)
                    if wanted and entry.isfile():
                        if entry.size > limits[wanted]:
                            raise ModelTooLarge(f"{wanted} in the package exceeds its limit")
                        source = tar.extractfile(entry)
                        if source is not None:
                            take(wanted, source)
        else:
            raise UnsupportedModelPackage(
                "`package` must be a .zip or .tar.gz holding card.json and weights.pt"
            )
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as exc:
        raise InvalidModelPackage(f"the package archive cannot be read: {exc}") from None
    if CARD_FILE not in found:
        raise InvalidModelPackage(f"the package has no {CARD_FILE}")
    return Unpacked(parse_card_json(found[CARD_FILE].read_bytes()), found.get(WEIGHTS_FILE))


def save_upload(source: IO[bytes], target: Path, limit: int, what: str) -> Path:
    """Stream an uploaded file to disk under the size limit."""
    source.seek(0)
    copy_limited(source, target, limit, what)
    return target
