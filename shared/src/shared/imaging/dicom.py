"""DICOM support for `shared.imaging.decode`: sniffing, header probe and first-frame decode.

Grayscale display pipeline (PS3.3 C.11): modality transform (Modality LUT or Rescale Slope /
Intercept), then VOI transform (VOI LUT or the first Window Center / Width), then scale to
[0, 1], then invert MONOCHROME1 so bright always means high attenuation. Rescale, linear window
and inversion are each affine, so they are composed into one float32 multiply-add plus a clip:
same result as pydicom's `apply_modality_lut` + `apply_windowing` (tested), without their
float64 copies and boolean masks. LUT-based transforms go through pydicom.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from io import BytesIO
from typing import Any

import numpy as np
import numpy.typing as npt
import pydicom
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.pixels.decoders.base import Decoder, get_decoder
from pydicom.pixels.processing import apply_color_lut, apply_modality_lut, apply_voi
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from shared.errors import ImageTooLarge, InvalidImage

_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_PIXEL_DATA_TAG_LE = b"\xe0\x7f\x10\x00"  # (7FE0,0010) as little-endian bytes
_VRS = frozenset(
    b"AE AS AT CS DA DS DT FD FL IS LO LT OB OD OF OL OV PN SH SL SQ SS ST SV TM UC UI UL UN "
    b"UR US UT UV".split()
)


@dataclass(frozen=True)
class DicomPixels:
    pixels: npt.NDArray[np.float32]
    width: int
    height: int
    pixel_spacing: tuple[float, float] | None
    meta: dict[str, Any]


def looks_like_bare_dataset(data: bytes) -> bool:
    """True for a preamble-less DICOM stream (no 128-byte preamble, no "DICM").

    Conservative: the first tag must be little-endian group 0002 or 0008 followed by a known VR
    (explicit VR) or by a length that fits in the data (implicit VR), and pydicom must parse a
    non-empty header from it.
    """
    if len(data) < 8 or data[:2] not in (b"\x02\x00", b"\x08\x00"):
        return False
    if data[4:6] not in _VRS and int.from_bytes(data[4:8], "little") > len(data) - 8:
        return False
    try:
        ds = pydicom.dcmread(BytesIO(data), force=True, stop_before_pixels=True)
    except Exception:
        return False
    return len(ds) > 0


def probe(data: bytes, *, max_pixels: int) -> tuple[int, int, int]:
    """(width, height, frames) from the header; pixel bytes are deferred, never decoded."""
    ds = _read(data, defer_size=1024)
    _require_pixel_data(ds, data)
    rows, cols = _dimensions(ds, max_pixels)
    _decoder(ds)  # reject transfer syntaxes we cannot decode at upload time
    return cols, rows, _frames(ds)


def decode(data: bytes, *, max_pixels: int) -> DicomPixels:
    """Decode the first frame and map it to float32 in [0, 1]."""
    ds = _read(data)
    _require_pixel_data(ds, data)
    rows, cols = _dimensions(ds, max_pixels)  # before decoding: a bomb never allocates
    decoder = _decoder(ds)
    tsyntax = ds.file_meta.TransferSyntaxUID
    try:
        arr, props = decoder.as_array(ds, index=0)
    except Exception as exc:  # pyo3 panics are caught by decode.py's guard
        reason = " ".join(str(exc).split())[:300]
        raise InvalidImage(
            f"DICOM pixel data could not be decoded ({tsyntax.name}): {reason}"
        ) from exc
    photometric = str(props.get("photometric_interpretation", "")).upper()
    spp = int(props.get("samples_per_pixel", 1))
    expected = (rows, cols) if spp == 1 else (rows, cols, 3)
    if spp not in (1, 3) or arr.shape != expected:
        raise InvalidImage(
            f"DICOM pixel array has unexpected shape {arr.shape} "
            f"(Rows={rows}, Columns={cols}, SamplesPerPixel={spp})"
        )
    meta: dict[str, Any] = {
        "bits_stored": _int_or_none(ds.get("BitsStored")),
        "photometric": str(ds.get("PhotometricInterpretation", photometric)),
        "modality": str(ds.get("Modality")) if ds.get("Modality") else None,
        "frames": _frames(ds),
        "transfer_syntax": str(tsyntax),
        "window": None,
    }
    try:
        if photometric in ("MONOCHROME1", "MONOCHROME2") and spp == 1:
            pixels = _grayscale(arr, ds, invert=photometric == "MONOCHROME1", meta=meta)
        elif photometric == "PALETTE COLOR" and spp == 1:
            rgb = apply_color_lut(arr, ds)
            pixels = _scale(rgb, float(np.iinfo(rgb.dtype).max))
            meta["mode"] = "palette"
        elif photometric == "RGB" and spp == 3:
            bits = meta["bits_stored"] or arr.dtype.itemsize * 8
            pixels = _scale(arr, float((1 << bits) - 1))
            meta["mode"] = "scale"
        else:
            raise InvalidImage(
                f"DICOM photometric interpretation {photometric!r} with {spp} samples per pixel"
                " is not supported"
            )
    except InvalidImage:
        raise
    except Exception as exc:
        raise InvalidImage(f"DICOM pixel values could not be converted: {exc}") from exc
    return DicomPixels(pixels, cols, rows, _pixel_spacing(ds), meta)


def _read(data: bytes, *, defer_size: int | None = None) -> Dataset:
    # force=True: sniff_format already accepted the bytes, including preamble-less files.
    try:
        ds = pydicom.dcmread(BytesIO(data), force=True, defer_size=defer_size)
    except Exception as exc:
        raise InvalidImage(f"DICOM file is truncated or corrupt: {exc}") from exc
    if "TransferSyntaxUID" not in ds.file_meta:
        # Preamble-less files have no file meta: name the encoding pydicom detected.
        implicit, little = ds.original_encoding
        ds.file_meta.TransferSyntaxUID = (
            ImplicitVRLittleEndian
            if implicit
            else (ExplicitVRLittleEndian if little else ExplicitVRBigEndian)
        )
    return ds


def _require_pixel_data(ds: Dataset, data: bytes) -> None:
    if any(keyword in ds for keyword in _PIXEL_KEYWORDS):
        return
    if _PIXEL_DATA_TAG_LE in data:
        # pydicom silently drops a PixelData element that runs past the end of the file.
        raise InvalidImage("DICOM file is truncated or corrupt: its PixelData cannot be read")
    raise InvalidImage("DICOM file has no pixel data (PixelData element missing)")


def _dimensions(ds: Dataset, max_pixels: int) -> tuple[int, int]:
    rows, cols = _int_or_none(ds.get("Rows")), _int_or_none(ds.get("Columns"))
    if rows is None or cols is None:
        raise InvalidImage("DICOM file has pixel data but no Rows/Columns")
    if rows <= 0 or cols <= 0:
        raise InvalidImage(f"DICOM image has zero size ({cols}x{rows})")
    if rows * cols > max_pixels:
        raise ImageTooLarge(
            f"DICOM image is {cols}x{rows} = {rows * cols:,} pixels; the limit is {max_pixels:,}",
            width=cols,
            height=rows,
            max_pixels=max_pixels,
        )
    return rows, cols


def _decoder(ds: Dataset) -> Decoder:
    uid: UID = ds.file_meta.TransferSyntaxUID
    label = f"{uid.name} ({uid})" if uid.name != str(uid) else repr(str(uid))
    try:
        decoder = get_decoder(uid)
    except NotImplementedError:
        raise InvalidImage(
            f"DICOM transfer syntax {label} is not supported: no decoder exists for it"
        ) from None
    if not decoder.is_available:
        raise InvalidImage(f"DICOM transfer syntax {label} has no installed decoder")
    return decoder


def _grayscale(
    arr: npt.NDArray[Any], ds: Dataset, *, invert: bool, meta: dict[str, Any]
) -> npt.NDArray[np.float32]:
    slope, intercept = 1.0, 0.0
    values: npt.NDArray[Any] = arr
    if ds.get("ModalityLUTSequence"):
        values = apply_modality_lut(arr, ds)
    else:
        slope = _float_or(ds.get("RescaleSlope"), 1.0) or 1.0
        intercept = _float_or(ds.get("RescaleIntercept"), 0.0)
        if (slope, intercept) != (1.0, 0.0):
            meta["rescale"] = (slope, intercept)
    if ds.get("VOILUTSequence"):
        if not np.issubdtype(values.dtype, np.integer) or (slope, intercept) != (1.0, 0.0):
            values = np.rint(values * slope + intercept).astype(np.int64)
        values, slope, intercept = apply_voi(values, ds), 1.0, 0.0
        window = None
        meta["mode"] = "voi_lut"
    else:
        window = _first_window(ds)
    function = str(ds.get("VOILUTFunction") or "LINEAR").upper()
    if window is not None and function == "SIGMOID":
        # PS3.3 C.11.2.1.3.1: y = 1 / (1 + exp(-4 (x - c) / w)); 1 - y flips the sign.
        center, width = window
        k = (4.0 if invert else -4.0) / width
        out = _affine(values, slope * k, (intercept - center) * k)
        with np.errstate(over="ignore"):
            np.exp(out, out=out)
        out += 1.0
        np.reciprocal(out, out=out)
        meta.update(window=window, mode="window")
        return out
    if window is not None:
        center, width = window
        if function == "LINEAR_EXACT":  # C.11.2.1.3.2
            lo, span = center - width / 2, width
        else:  # LINEAR, C.11.2.1.2.1: (x - (c - 0.5)) / (w - 1) + 0.5
            lo, span = center - 0.5 - (width - 1) / 2, max(width - 1.0, 1e-6)
        meta.update(window=window, mode="window")
    else:
        vmin, vmax = float(values.min()), float(values.max())
        ends = (vmin * slope + intercept, vmax * slope + intercept)
        lo, span = min(ends), (max(ends) - min(ends)) or 1.0
        meta.setdefault("mode", "minmax")
    scale, offset = slope / span, (intercept - lo) / span
    if invert:
        scale, offset = -scale, 1.0 - offset
    out = _affine(values, scale, offset)
    np.clip(out, 0.0, 1.0, out=out)
    return out


def _affine(values: npt.NDArray[Any], scale: float, offset: float) -> npt.NDArray[np.float32]:
    # One pass converts to float32 and scales, a second adds: no float64 intermediate.
    out: npt.NDArray[np.float32] = np.multiply(values, np.float32(scale), dtype=np.float32)
    out += np.float32(offset)
    return out


def _scale(values: npt.NDArray[Any], maximum: float) -> npt.NDArray[np.float32]:
    out: npt.NDArray[np.float32] = np.divide(values, np.float32(maximum), dtype=np.float32)
    if values.dtype.kind in "ui" and maximum < np.iinfo(values.dtype).max:
        # BitsStored can understate the data; keep the [0, 1] promise.
        np.minimum(out, 1.0, out=out)
    return out


def _first_window(ds: Dataset) -> tuple[float, float] | None:
    center = _float_or(_first(ds.get("WindowCenter")), math.nan)
    width = _float_or(_first(ds.get("WindowWidth")), math.nan)
    if not (math.isfinite(center) and math.isfinite(width)) or width <= 0:
        return None
    return center, width


def _pixel_spacing(ds: Dataset) -> tuple[float, float] | None:
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = ds.get(keyword)
        if isinstance(value, MultiValue | list | tuple) and len(value) == 2:
            row, col = _float_or(value[0], math.nan), _float_or(value[1], math.nan)
            if row > 0 and col > 0 and math.isfinite(row) and math.isfinite(col):
                return row, col
    return None  # absent, or 0/garbage as some CR files carry


def _frames(ds: Dataset) -> int:
    return max(1, _int_or_none(ds.get("NumberOfFrames")) or 1)


def _first(value: Any) -> Any:
    if isinstance(value, MultiValue | list | tuple):
        return value[0] if len(value) else None
    return value


def _float_or(value: Any, default: float) -> float:
    try:
        return float(value) if value not in (None, "") else default
    except (TypeError, ValueError):
        return default


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None
