"""Decode uploaded PNG, JPEG and DICOM files into float32 pixels in [0, 1].

`probe_image` reads headers only, so the API can reject bad uploads fast; `decode_image` runs
per image in the worker. Both check width * height against `max_pixels` from the header before
any pixel is decoded, and turn every library error into `InvalidImage` / `UnsupportedImage` /
`ImageTooLarge` with a human-readable message.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from io import BytesIO
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import ExifTags, Image, ImageFile, ImageOps, UnidentifiedImageError

from shared.errors import AppError, ImageTooLarge, InvalidImage, UnsupportedImage
from shared.imaging import dicom

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SOI = b"\xff\xd8\xff"
_LABELS = {"png": "PNG", "jpeg": "JPEG", "dicom": "DICOM"}
# Only to name what was sent in the error message; none of these is accepted.
_OTHER_SIGNATURES = {
    b"GIF87a": "GIF",
    b"GIF89a": "GIF",
    b"II*\x00": "TIFF",
    b"MM\x00*": "TIFF",
    b"%PDF": "PDF",
    b"BM": "BMP",
    b"RIFF": "RIFF (WebP?)",
    b"\x00\x00\x00\x0cjP  ": "JPEG 2000",
}
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")


@dataclass(frozen=True)
class ImageInfo:
    """Header-only facts about an upload."""

    format: str  # "png" | "jpeg" | "dicom"
    width: int
    height: int
    frames: int = 1


@dataclass(frozen=True)
class DecodedImage:
    """Decoded pixels plus the few facts the worker reports back.

    `pixels` is float32 in [0, 1], shaped (H, W) for grayscale or (H, W, 3) for colour.
    `original_width`/`original_height` are the full-resolution size (after EXIF rotation for
    JPEG), even when JPEG draft mode decoded a smaller image. `meta` holds non-identifying
    facts only (bit depth, photometric, modality, window used...), never patient data.
    """

    pixels: npt.NDArray[np.float32]
    format: str
    original_width: int
    original_height: int
    pixel_spacing: tuple[float, float] | None  # (row mm, col mm), DICOM only
    meta: dict[str, Any]


def sniff_format(data: bytes) -> str | None:
    """Return "png", "jpeg" or "dicom" from the file's magic bytes, else None."""
    if data[128:132] == b"DICM":  # checked first: a DICOM preamble may hold anything
        return "dicom"
    if data.startswith(PNG_SIGNATURE):
        return "png"
    if data.startswith(JPEG_SOI):
        return "jpeg"
    if dicom.looks_like_bare_dataset(data):
        return "dicom"
    return None


def probe_image(data: bytes, *, max_pixels: int) -> ImageInfo:
    """Read only the header: format, size and frame count.

    Args:
        data: the uploaded file.
        max_pixels: largest accepted width * height (of one frame).

    Returns:
        The image's format, width, height and number of frames.

    Raises:
        UnsupportedImage: not a PNG, JPEG or DICOM file.
        InvalidImage: a supported format whose header is corrupt, a PNG whose chunks fail
            their CRC, or a DICOM file without decodable pixel data.
        ImageTooLarge: width * height exceeds `max_pixels`.
    """
    fmt = _require_format(data)
    with _library_errors(fmt):
        if fmt == "dicom":
            width, height, frames = dicom.probe(data, max_pixels=max_pixels)
            return ImageInfo(fmt, width, height, frames)
        img = _open(data, fmt, max_pixels)
        info = ImageInfo(fmt, img.width, img.height, getattr(img, "n_frames", 1))
        if fmt == "png":
            img.verify()  # walks the chunks and checks their CRCs, without inflating IDAT
    return info


def decode_image(data: bytes, *, max_pixels: int, target_size: int | None = None) -> DecodedImage:
    """Decode an image to float32 pixels in [0, 1].

    Args:
        data: the stored upload.
        max_pixels: largest accepted width * height, checked from the header before decoding.
        target_size: the model's input size. A JPEG at least twice as large on its shortest
            side is decoded at 1/2, 1/4 or 1/8 scale (libjpeg DCT scaling), keeping the
            shortest side >= target_size. Other formats are returned at full size.

    Returns:
        The decoded image; see `DecodedImage`.

    Raises:
        UnsupportedImage: not a PNG, JPEG or DICOM file.
        InvalidImage: truncated or corrupt data, a DICOM file without pixel data or whose
            transfer syntax cannot be decoded, or an image of zero size.
        ImageTooLarge: width * height exceeds `max_pixels`.
    """
    fmt = _require_format(data)
    with _library_errors(fmt):
        if fmt == "dicom":
            d = dicom.decode(data, max_pixels=max_pixels)
            return DecodedImage(d.pixels, fmt, d.width, d.height, d.pixel_spacing, d.meta)
        img: Image.Image = _open(data, fmt, max_pixels)
        width, height = img.size
        meta: dict[str, Any] = {"pil_mode": img.mode, "frames": getattr(img, "n_frames", 1)}
        if fmt == "jpeg" and target_size:
            drafted = img.draft(img.mode, (target_size, target_size))
            if drafted is not None and img.size != (width, height):
                meta["draft_scale"] = round(width / drafted[1][2])
        img.load()  # inside the guard: truncated data raises here (LOAD_TRUNCATED_IMAGES off)
        if fmt == "jpeg":
            orientation = _exif_orientation(img)
            if orientation != 1:
                img = ImageOps.exif_transpose(img)
                meta["exif_orientation"] = orientation
                if orientation in (5, 6, 7, 8):  # the transposing ones
                    width, height = height, width
        pixels, meta["bits_stored"], meta["mode"] = _to_float(img)
    return DecodedImage(pixels, fmt, width, height, None, meta)


def _require_format(data: bytes) -> str:
    fmt = sniff_format(data)
    if fmt is not None:
        return fmt
    seen = next((name for sig, name in _OTHER_SIGNATURES.items() if data.startswith(sig)), None)
    what = f"this looks like a {seen} file" if seen else "the file type was not recognised"
    raise UnsupportedImage(f"Only PNG, JPEG and DICOM images are accepted; {what}")


def _open(data: bytes, fmt: str, max_pixels: int) -> ImageFile.ImageFile:
    """Lazy-open with PIL's own bomb guard tied to this call's limit, then check the size."""
    label = _LABELS[fmt]
    # MAX_IMAGE_PIXELS is process-global; every caller passes the same settings value, so
    # setting it per call ties PIL's guard to our limit instead of PIL's ~89 MP default.
    # PIL raises above 2x the limit and only warns between 1x and 2x: that warning is muted
    # because the check below rejects those images with their size in the message (a
    # catch_warnings race between threads could only mute this same warning elsewhere).
    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(BytesIO(data), formats=[label])
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(
            f"{label} image has more than twice the limit of {max_pixels:,} pixels",
            max_pixels=max_pixels,
        ) from exc
    except UnidentifiedImageError as exc:
        raise InvalidImage(f"{label} file header is corrupt: not a readable {label} image") from exc
    width, height = img.size
    if width <= 0 or height <= 0:
        raise InvalidImage(f"{label} image has zero size ({width}x{height})")
    if width * height > max_pixels:
        raise ImageTooLarge(
            f"{label} image is {width}x{height} = {width * height:,} pixels; the limit is "
            f"{max_pixels:,}",
            width=width,
            height=height,
            max_pixels=max_pixels,
        )
    return img


@contextmanager
def _library_errors(fmt: str) -> Iterator[None]:
    """Turn any Pillow/pydicom/numpy error into InvalidImage; our own errors pass through."""
    try:
        yield
    except AppError:
        raise
    except BaseException as exc:
        # pydicom converts element values lazily, so a corrupt header can fail on any access;
        # Rust decoder plugins (pylibjpeg-rle) panic with pyo3's PanicException, which
        # derives from BaseException. Anything else (KeyboardInterrupt...) propagates.
        if not isinstance(exc, Exception) and type(exc).__name__ != "PanicException":
            raise
        reason = " ".join(str(exc).split())[:300] or type(exc).__name__
        label = _LABELS[fmt]
        raise InvalidImage(f"{label} file is truncated or corrupt: {reason}") from exc


def _exif_orientation(img: Image.Image) -> int:
    try:
        value = img.getexif().get(ExifTags.Base.Orientation, 1)
        return int(value) if int(value) in range(1, 9) else 1
    except Exception:  # a broken EXIF block should not cost the whole image
        return 1


def _to_float(img: Image.Image) -> tuple[npt.NDArray[np.float32], int, str]:
    """(pixels, bits per sample, normalisation) for a loaded PIL image; alpha is dropped."""
    mode = img.mode
    if mode in _SIXTEEN_BIT_MODES:
        # 16-bit medical PNGs usually hold 10-12-bit data (a 12-bit detector tops out at 4095),
        # so dividing by 65535 would leave them nearly black: stretch min..max instead.
        arr = np.asarray(img)
        lo, hi = float(arr.min()), float(arr.max())
        out = np.subtract(arr, np.float32(lo), dtype=np.float32)
        if hi > lo:
            out /= np.float32(hi - lo)
        return out, 32 if mode in ("I", "F") else 16, "minmax"
    if mode in ("P", "PA"):
        # Index straight into a float32 palette: RGB output in one gather, no PIL convert.
        palette = np.zeros((256, 3), dtype=np.float32)
        colours = np.asarray(img.getpalette("RGB") or [], dtype=np.float32).reshape(-1, 3)
        palette[: len(colours)] = colours[:256] / 255.0
        return palette[np.asarray(img.getchannel(0) if mode == "PA" else img)], 8, "palette"
    if mode == "LA":
        arr = np.asarray(img.getchannel(0))
    elif mode in ("L", "RGB"):
        arr = np.asarray(img)
    elif mode in ("RGBA", "RGBX", "RGBa"):
        arr = np.asarray(img)[..., :3]
    else:  # "1", CMYK / YCbCr JPEG, ...: let PIL do the colour maths
        arr = np.asarray(img.convert("RGB" if len(img.getbands()) > 1 else "L"))
    return np.divide(arr, np.float32(255.0), dtype=np.float32), 8, "scale"
