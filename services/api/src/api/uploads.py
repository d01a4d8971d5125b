"""Read, check and store uploaded images before a job is created.

Files are probed from their headers only (cheap, no pixel decode), so a wrong format,
a DICOM without pixel data or a decompression bomb is refused at the door with a 4xx.
Damage only a full decode can find (a truncated JPEG) becomes a per-image error.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import UploadFile
from starlette.concurrency import run_in_threadpool

from api.crud.jobs import StoredImage
from shared.config import Settings
from shared.errors import AppError, InvalidImage, InvalidRequest, PayloadTooLarge
from shared.imaging.decode import probe_image
from shared.imaging.deid import Deidentified, deidentify
from shared.imaging.formats import STORED_SUFFIX
from shared.imaging.strip_metadata import strip_metadata
from shared.storage import BlobStore


@dataclass(frozen=True)
class _Rejected:
    index: int
    filename: str
    error: AppError


async def _read_limited(upload: UploadFile, limit: int) -> bytes:
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise PayloadTooLarge(
            f"file {upload.filename!r} is larger than the {limit // (1024 * 1024)} MiB limit"
        )
    return data


def _deidentify(data: bytes, settings: Settings) -> Deidentified:
    salt = settings.uid_salt()
    try:
        return deidentify(data, uid_salt=salt, burned_in_policy=settings.deidentify_burned_in)
    except AppError:
        raise
    except Exception as exc:  # pydicom cannot rewrite a header it could read
        raise InvalidImage(f"the DICOM header could not be de-identified: {exc}") from exc


def _store(store: BlobStore, data: bytes, fmt: str) -> tuple[str, str]:
    return store.put(data, prefix="images", suffix=STORED_SUFFIX[fmt])


async def store_uploads(
    files: list[UploadFile], *, settings: Settings, store: BlobStore
) -> list[StoredImage]:
    """Validate every upload, then store them all; reject the request if any is bad."""
    if not files:
        raise InvalidRequest("a job needs at least one image file in the `files` field")
    if len(files) > settings.max_files_per_job:
        raise PayloadTooLarge(
            f"{len(files)} files sent; a job takes at most {settings.max_files_per_job}"
        )
    accepted: list[tuple[UploadFile, bytes, str, bool]] = []
    rejected: list[_Rejected] = []
    for index, upload in enumerate(files):
        name = upload.filename or f"file-{index}"
        burned_in = False
        try:
            data = await _read_limited(upload, settings.max_file_bytes)
            if not data:
                raise InvalidRequest(f"file {name!r} is empty")
            info = await run_in_threadpool(probe_image, data, max_pixels=settings.max_image_pixels)
            if info.format == "dicom" and settings.deidentify_uploads:
                result = await run_in_threadpool(_deidentify, data, settings)
                data, burned_in = result.data, result.burned_in
            elif settings.deidentify_uploads:  # EXIF / text chunks, pixels copied as they are
                data = await run_in_threadpool(strip_metadata, data, info.format)
        except AppError as exc:
            rejected.append(_Rejected(index, name, exc))
            continue
        accepted.append((upload, data, info.format, burned_in))
    if rejected:
        _raise_rejected(rejected)
    stored = []
    for upload, data, fmt, burned_in in accepted:
        key, digest = await run_in_threadpool(_store, store, data, fmt)
        stored.append(
            StoredImage(
                filename=(upload.filename or "image")[:255],
                content_type=upload.content_type,
                format=fmt,
                size_bytes=len(data),
                sha256=digest,
                storage_key=key,
                burned_in_annotation=burned_in and settings.deidentify_burned_in == "flag",
            )
        )
    return stored


def _raise_rejected(rejected: list[_Rejected]) -> None:
    first = rejected[0].error
    errors = [
        {"index": r.index, "filename": r.filename, "type": r.error.type, "detail": r.error.detail}
        for r in rejected
    ]
    # One status for the whole request: the first file's, unless the files disagree.
    same = all(type(r.error) is type(first) for r in rejected)
    error_cls = type(first) if same else InvalidRequest
    detail = "; ".join(f"{e['filename']}: {e['detail']}" for e in errors)
    raise error_cls(
        f"{len(rejected)} of the uploaded files cannot be used: {detail}", errors=errors
    )
