"""shared.imaging.decode on real fixtures: PNG/JPEG/DICOM paths, display pipeline, bad files."""

from __future__ import annotations

import copy
import io
import json
import struct
import warnings
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.pixels.processing import apply_color_lut, apply_modality_lut, apply_windowing
from pydicom.uid import UID

from shared.errors import AppError, ImageTooLarge, InvalidImage, UnsupportedImage
from shared.imaging.decode import (
    DecodedImage,
    ImageInfo,
    decode_image,
    probe_image,
    sniff_format,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
DICOM_DIR = FIXTURES / "dicom"
MNIST_DIR = FIXTURES / "pneumoniamnist"
MAX = 50_000_000
ALLOWED_META = {
    "bits_stored",
    "photometric",
    "modality",
    "frames",
    "transfer_syntax",
    "window",
    "rescale",
    "mode",
    "pil_mode",
    "draft_scale",
    "exif_orientation",
}


def _fixture(name: str) -> bytes:
    folder = DICOM_DIR if (DICOM_DIR / name).exists() else MNIST_DIR
    return (folder / name).read_bytes()


def _wheel(name: str) -> bytes:
    """A test file shipped inside the pydicom wheel (never downloaded)."""
    path = get_testdata_file(name, download=False)
    assert isinstance(path, str), name
    return Path(path).read_bytes()


def _original(name: str) -> npt.NDArray[np.uint8]:
    """The 8-bit PneumoniaMNIST pixels, read independently of the module under test."""
    return np.asarray(Image.open(MNIST_DIR / name).convert("L"))


def _ds(data: bytes) -> Dataset:
    return pydicom.dcmread(io.BytesIO(data))


def _to_bytes(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf)
    return buf.getvalue()


def _edited(data: bytes, **changes: Any) -> bytes:
    """Rewrite a DICOM file with some elements set (None deletes)."""
    ds = _ds(data)
    for keyword, value in changes.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    return _to_bytes(ds)


def _encode(img: Image.Image, fmt: str, **kwargs: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR (valid CRC) claims width x height, with no image data at all."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IEND", b"")


def _check_pixels(img: DecodedImage, shape: tuple[int, ...]) -> None:
    assert img.pixels.shape == shape
    assert img.pixels.dtype == np.float32
    assert float(img.pixels.min()) >= 0.0 and float(img.pixels.max()) <= 1.0
    assert set(img.meta) <= ALLOWED_META
    json.dumps(img.meta)  # stored with the result: must stay serialisable


# --- sniffing ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (_fixture("test_0001_normal.png"), "png"),
        (_fixture("test_0001_normal_16bit.png"), "png"),
        (_fixture("test_0001_normal.jpg"), "jpeg"),
        (_fixture("test_0000_pneumonia.dcm"), "dicom"),
        (_fixture("RG3_J2KI.dcm"), "dicom"),
        (_wheel("CT_small.dcm"), "dicom"),  # its preamble starts with a TIFF header
        (_wheel("ExplVR_LitEndNoMeta.dcm"), "dicom"),  # no preamble, no "DICM"
        (_encode(Image.new("L", (4, 4)), "GIF"), None),
        (_encode(Image.new("L", (4, 4)), "TIFF"), None),
        (_encode(Image.new("RGB", (4, 4)), "BMP"), None),
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n", None),
        (b"patient,label\n1,0\n" * 20, None),
        (np.random.default_rng(0).bytes(4096), None),
        (b"\x08\x00" + np.random.default_rng(1).bytes(500), None),  # group-0008 look-alike
        (b"", None),
    ],
    ids=lambda v: v if isinstance(v, str | None) else None,
)
def test_sniff_format(data: bytes, expected: str | None) -> None:
    assert sniff_format(data) == expected


# --- DICOM ------------------------------------------------------------------------------

# name: (pixels shape, stored photometric, transfer syntax, frames, normalisation)
DICOM_CASES = {
    "RG3_J2KI.dcm": ((1760, 1760), "MONOCHROME1", "1.2.840.10008.1.2.4.91", 1, "window"),
    "693_J2KR.dcm": ((512, 512), "MONOCHROME2", "1.2.840.10008.1.2.4.90", 1, "window"),
    "JLSL_16_15_1_1F.dcm": ((128, 128), "MONOCHROME2", "1.2.840.10008.1.2.4.80", 1, "minmax"),
    "emri_small_jpeg_ls_lossless.dcm": (
        (64, 64),
        "MONOCHROME2",
        "1.2.840.10008.1.2.4.80",
        10,
        "minmax",
    ),
    "JPEG-LL.dcm": ((1024, 256), "MONOCHROME2", "1.2.840.10008.1.2.4.70", 1, "minmax"),
    "emri_small_RLE.dcm": ((64, 64), "MONOCHROME2", "1.2.840.10008.1.2.5", 10, "minmax"),
    "OBXXXX1A_rle.dcm": ((600, 800, 3), "PALETTE COLOR", "1.2.840.10008.1.2.5", 1, "palette"),
    "test_0000_pneumonia.dcm": ((28, 28), "MONOCHROME2", "1.2.840.10008.1.2.1", 1, "window"),
    "test_0000_pneumonia_mono1.dcm": (
        (28, 28),
        "MONOCHROME1",
        "1.2.840.10008.1.2.1",
        1,
        "window",
    ),
}


@pytest.mark.parametrize("name", DICOM_CASES)
def test_dicom_fixture_decodes(name: str) -> None:
    shape, photometric, tsyntax, frames, mode = DICOM_CASES[name]
    data = _fixture(name)
    img = decode_image(data, max_pixels=MAX)
    _check_pixels(img, shape)
    assert img.format == "dicom"
    assert (img.original_height, img.original_width) == shape[:2]
    assert img.meta["photometric"] == photometric
    assert img.meta["transfer_syntax"] == tsyntax
    assert img.meta["frames"] == frames
    assert img.meta["mode"] == mode
    assert float(img.pixels.max() - img.pixels.min()) > 0.5  # real contrast, not a flat frame
    assert probe_image(data, max_pixels=MAX) == ImageInfo("dicom", shape[1], shape[0], frames)


@pytest.mark.parametrize("name", ["test_0000_pneumonia.dcm", "test_0000_pneumonia_mono1.dcm"])
def test_dicom_round_trip_recovers_original(name: str) -> None:
    # mono1: 12-bit inverted storage + slope 2 / intercept -100 + window; mono2: 8-bit + window.
    # Both are built so the display pipeline gives back exactly original / 255.
    img = decode_image(_fixture(name), max_pixels=MAX)
    expected = _original("test_0000_pneumonia.png") / 255.0
    np.testing.assert_allclose(img.pixels, expected, atol=1e-5)


def test_monochrome1_is_inverted() -> None:
    data = _fixture("test_0000_pneumonia_mono1.dcm")
    as_mono2 = decode_image(_edited(data, PhotometricInterpretation="MONOCHROME2"), max_pixels=MAX)
    expected = 1.0 - _original("test_0000_pneumonia.png") / 255.0
    np.testing.assert_allclose(as_mono2.pixels, expected, atol=1e-5)
    # The real CR: air (outside the body) is stored high in MONOCHROME1 and must come out dark.
    cr = decode_image(_fixture("RG3_J2KI.dcm"), max_pixels=MAX)
    raw = _ds(_fixture("RG3_J2KI.dcm")).pixel_array
    assert np.corrcoef(cr.pixels.ravel(), raw.ravel())[0, 1] < -0.9


def _pydicom_reference(ds: Dataset) -> npt.NDArray[np.float64]:
    """pydicom's own modality LUT + windowing (float64), scaled from its output range to 0..1."""
    ds = copy.deepcopy(ds)  # apply_windowing rewrites some elements
    bits, signed = int(ds.BitsStored), ds.PixelRepresentation == 1
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    if "RescaleSlope" in ds and "RescaleIntercept" in ds:
        slope, intercept = float(ds.RescaleSlope), float(ds.RescaleIntercept)
        lo, hi = lo * slope + intercept, hi * slope + intercept
    windowed = apply_windowing(apply_modality_lut(ds.pixel_array, ds), ds)
    out: npt.NDArray[np.float64] = (windowed - lo) / (hi - lo)
    return 1.0 - out if ds.PhotometricInterpretation == "MONOCHROME1" else out


@pytest.mark.parametrize(
    ("source", "changes"),
    [
        (lambda: _fixture("693_J2KR.dcm"), {}),  # CT: intercept -1024, window 40/100
        (lambda: _fixture("test_0000_pneumonia_mono1.dcm"), {}),
        (lambda: _fixture("RG3_J2KI.dcm"), {}),
        (lambda: _wheel("MR_small.dcm"), {}),  # signed, window 600/1600, no rescale
        (lambda: _wheel("CT_small.dcm"), {"WindowCenter": "40", "WindowWidth": "400"}),
        (lambda: _wheel("CT_small.dcm"), {"WindowCenter": "300", "WindowWidth": "1"}),
    ],
    ids=["693_J2KR", "mono1", "RG3_J2KI", "MR_small", "CT_small+window", "CT_small+w1"],
)
def test_rescale_then_window_matches_pydicom(source: Any, changes: dict[str, Any]) -> None:
    data = _edited(source(), **changes) if changes else source()
    img = decode_image(data, max_pixels=MAX)
    assert img.meta["mode"] == "window"
    np.testing.assert_allclose(img.pixels, _pydicom_reference(_ds(data)), atol=2e-5)


def test_ct_window_is_applied_in_hounsfield_units() -> None:
    data = _edited(_wheel("CT_small.dcm"), WindowCenter="40", WindowWidth="400")
    img = decode_image(data, max_pixels=MAX)
    assert img.meta["window"] == (40.0, 400.0)
    assert img.meta["rescale"] == (1.0, -1024.0)
    hu = _ds(data).pixel_array.astype(np.float64) - 1024.0  # RescaleIntercept -1024
    assert np.all(img.pixels[hu <= 40 - 0.5 - 199.5] == 0.0)
    assert np.all(img.pixels[hu > 40 - 0.5 + 199.5] == 1.0)
    inside = (hu > -160) & (hu <= 239)
    assert inside.sum() > 100
    np.testing.assert_allclose(img.pixels[inside], (hu[inside] - 39.5) / 399 + 0.5, atol=1e-5)


def test_first_of_several_windows_is_used() -> None:
    data = _edited(
        _fixture("test_0000_pneumonia_mono1.dcm"),
        WindowCenter=["1120.5", "500"],
        WindowWidth=["2041", "100"],
    )
    img = decode_image(data, max_pixels=MAX)
    assert img.meta["window"] == (1120.5, 2041.0)
    np.testing.assert_allclose(img.pixels, _original("test_0000_pneumonia.png") / 255, atol=1e-5)


def test_no_window_means_min_max() -> None:
    data = _edited(_fixture("test_0000_pneumonia.dcm"), WindowCenter=None, WindowWidth=None)
    img = decode_image(data, max_pixels=MAX)
    v = _original("test_0000_pneumonia.png").astype(np.float64)
    assert img.meta["mode"] == "minmax" and img.meta["window"] is None
    np.testing.assert_allclose(img.pixels, (v - v.min()) / (v.max() - v.min()), atol=1e-6)


@pytest.mark.parametrize("function", ["LINEAR_EXACT", "SIGMOID"])
def test_voi_lut_functions(function: str) -> None:
    data = _edited(
        _fixture("test_0000_pneumonia.dcm"),
        WindowCenter="120",
        WindowWidth="60",
        VOILUTFunction=function,
    )
    img = decode_image(data, max_pixels=MAX)
    x = _original("test_0000_pneumonia.png").astype(np.float64)
    if function == "SIGMOID":
        expected = 1 / (1 + np.exp(-4 * (x - 120) / 60))
    else:
        expected = np.clip((x - 120) / 60 + 0.5, 0, 1)
    np.testing.assert_allclose(img.pixels, expected, atol=1e-5)


def test_voi_lut_sequence() -> None:
    ds = _ds(_fixture("test_0000_pneumonia.dcm"))
    item = Dataset()
    item.LUTDescriptor = [256, 0, 8]
    item.add_new(0x00283006, "US", [255 - i for i in range(256)])  # LUTData: an inverting LUT
    ds.VOILUTSequence = [item]
    img = decode_image(_to_bytes(ds), max_pixels=MAX)
    v = _original("test_0000_pneumonia.png").astype(np.float64)
    assert img.meta["mode"] == "voi_lut"
    np.testing.assert_allclose(img.pixels, (v.max() - v) / (v.max() - v.min()), atol=1e-6)


def test_palette_colour() -> None:
    data = _fixture("OBXXXX1A_rle.dcm")
    img = decode_image(data, max_pixels=MAX)
    ds = _ds(data)
    rgb = apply_color_lut(ds.pixel_array, ds)
    assert rgb.dtype == np.uint16  # this file's palette has 16-bit entries
    np.testing.assert_allclose(img.pixels, rgb / 65535, atol=1e-6)
    assert np.abs(img.pixels[..., 0] - img.pixels[..., 2]).max() > 0.2  # really colour


def test_jpeg_baseline_ybr_colour() -> None:
    img = decode_image(_wheel("SC_rgb_jpeg_dcmtk.dcm"), max_pixels=MAX)
    _check_pixels(img, (100, 100, 3))
    assert img.meta["photometric"] == "YBR_FULL"  # stored as YCbCr, returned as RGB
    stripes = [(255, 0, 0), (255, 128, 128), (0, 255, 0), (128, 255, 128), (0, 0, 255)]
    for i, rgb in enumerate(stripes):
        np.testing.assert_allclose(img.pixels[10 * i + 5, 50], np.array(rgb) / 255, atol=6 / 255)
    assert img.pixel_spacing == (1.0, 1.0)


def test_multiframe_takes_first_frame_and_codecs_agree() -> None:
    rle = decode_image(_fixture("emri_small_RLE.dcm"), max_pixels=MAX)
    jls = decode_image(_fixture("emri_small_jpeg_ls_lossless.dcm"), max_pixels=MAX)
    first = _ds(_fixture("emri_small_RLE.dcm")).pixel_array[0].astype(np.float64)
    expected = (first - first.min()) / (first.max() - first.min())
    np.testing.assert_allclose(rle.pixels, expected, atol=1e-6)
    np.testing.assert_array_equal(rle.pixels, jls.pixels)  # both lossless codings of one scan
    assert rle.meta["frames"] == jls.meta["frames"] == 10


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (lambda: _fixture("693_J2KR.dcm"), (0.478516, 0.478516)),
        (lambda: _fixture("JPEG-LL.dcm"), (2.26, 2.26)),
        (lambda: _fixture("OBXXXX1A_rle.dcm"), None),
        (
            lambda: _edited(
                _wheel("CT_small.dcm"), PixelSpacing=None, ImagerPixelSpacing=["0.2", "0.3"]
            ),
            (0.2, 0.3),
        ),
        (lambda: _edited(_wheel("CT_small.dcm"), PixelSpacing=["0", "0"]), None),
    ],
    ids=["ct", "nm", "us-none", "imager-fallback", "zero-ignored"],
)
def test_pixel_spacing(data: Any, expected: tuple[float, float] | None) -> None:
    assert decode_image(data(), max_pixels=MAX).pixel_spacing == expected


def test_meta_holds_no_identifiers() -> None:
    for name in ["test_0000_pneumonia.dcm", "test_0000_pneumonia_mono1.dcm"]:
        data = _fixture(name)
        assert _ds(data).PatientName == "Anonymous"  # present in the file...
        meta = decode_image(data, max_pixels=MAX).meta
        assert not {"PatientName", "PatientID", "patient_name", "patient_id"} & set(meta)
        assert "nonymous" not in json.dumps(meta).lower()  # ...and absent from meta


# --- PNG / JPEG -------------------------------------------------------------------------


def test_png_variants_agree() -> None:
    original = _original("test_0001_normal.png") / 255.0
    png = decode_image(_fixture("test_0001_normal.png"), max_pixels=MAX)
    _check_pixels(png, (28, 28))
    np.testing.assert_allclose(png.pixels, original, atol=1e-6)
    assert png.meta["mode"] == "scale" and png.pixel_spacing is None
    # 16-bit (v * 257) is min-max stretched: same image up to an affine map.
    wide = decode_image(_fixture("test_0001_normal_16bit.png"), max_pixels=MAX)
    _check_pixels(wide, (28, 28))
    assert wide.meta["bits_stored"] == 16 and wide.meta["mode"] == "minmax"
    stretched = (original - original.min()) / (original.max() - original.min())
    np.testing.assert_allclose(wide.pixels, stretched, atol=1e-6)
    rgb = decode_image(_fixture("test_0000_pneumonia_rgb.png"), max_pixels=MAX)
    _check_pixels(rgb, (28, 28, 3))
    gray = _original("test_0000_pneumonia.png") / 255.0
    for channel in range(3):
        np.testing.assert_allclose(rgb.pixels[..., channel], gray, atol=1e-6)


@pytest.mark.parametrize("stem", ["test_0001_normal", "test_0000_pneumonia"])
def test_jpeg_close_to_png(stem: str) -> None:
    jpeg = decode_image(_fixture(f"{stem}.jpg"), max_pixels=MAX)
    _check_pixels(jpeg, (28, 28))
    diff = np.abs(jpeg.pixels - _original(f"{stem}.png") / 255.0)
    assert diff.mean() < 0.01 and diff.max() < 0.08  # quality 95


@pytest.mark.parametrize("mode", ["LA", "RGBA", "P", "P+tRNS", "1", "I;16", "RGB"])
def test_png_modes(mode: str) -> None:
    gray = Image.open(MNIST_DIR / "test_0002_pneumonia.png")
    v = np.asarray(gray).astype(np.float64)
    options: dict[str, Any] = {"transparency": 0} if mode == "P+tRNS" else {}
    if mode == "I;16":
        img = Image.fromarray((v * 16).astype(np.uint16))  # 12-bit data in a 16-bit PNG
    else:
        img = gray.convert(mode.removesuffix("+tRNS"))
    decoded = decode_image(_encode(img, "PNG", **options), max_pixels=MAX)
    colour = mode in ("RGBA", "P", "P+tRNS", "RGB")
    _check_pixels(decoded, (28, 28, 3) if colour else (28, 28))
    plane = decoded.pixels[..., 0] if colour else decoded.pixels
    if mode == "1":
        np.testing.assert_array_equal(plane, np.asarray(img, dtype=np.float32))
    elif mode == "I;16":
        np.testing.assert_allclose(plane, (v - v.min()) / (v.max() - v.min()), atol=1e-6)
    else:  # alpha dropped, palette expanded, grey preserved
        np.testing.assert_allclose(plane, v / 255, atol=1e-6)


def test_jpeg_exif_orientation() -> None:
    stored = Image.open(MNIST_DIR / "test_0003_normal.png").crop((0, 0, 28, 14))  # 28 wide
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display"
    plain = decode_image(_encode(stored, "JPEG", quality=95), max_pixels=MAX)
    rotated = decode_image(_encode(stored, "JPEG", quality=95, exif=exif), max_pixels=MAX)
    assert plain.pixels.shape == (14, 28)
    assert rotated.pixels.shape == (28, 14)
    assert (rotated.original_width, rotated.original_height) == (14, 28)
    assert rotated.meta["exif_orientation"] == 6
    np.testing.assert_array_equal(rotated.pixels, np.rot90(plain.pixels, k=-1))


def _big_jpeg(size: int) -> bytes:
    small = Image.open(MNIST_DIR / "test_0000_pneumonia.png")
    return _encode(small.resize((size, size), Image.Resampling.BILINEAR), "JPEG", quality=90)


def test_jpeg_draft_downscales_early() -> None:
    data = _big_jpeg(2048)
    full = decode_image(data, max_pixels=MAX)
    assert full.pixels.shape == (2048, 2048) and "draft_scale" not in full.meta
    small = decode_image(data, max_pixels=MAX, target_size=224)
    assert 224 <= min(small.pixels.shape) < 2048
    assert small.pixels.shape == (256, 256) and small.meta["draft_scale"] == 8
    assert (small.original_width, small.original_height) == (2048, 2048)
    # Same picture: block means of the full decode match the 1/8 decode.
    means = full.pixels.reshape(256, 8, 256, 8).mean(axis=(1, 3))
    assert np.abs(means - small.pixels).mean() < 0.01
    # A target above half the size cannot be met at 1/2 scale: full decode.
    assert decode_image(data, max_pixels=MAX, target_size=1500).pixels.shape == (2048, 2048)
    # Draft is JPEG-only: PNG ignores target_size.
    png = decode_image(_fixture("test_0001_normal.png"), max_pixels=MAX, target_size=8)
    assert png.pixels.shape == (28, 28)


# --- bad files --------------------------------------------------------------------------


def _both(data: bytes, max_pixels: int = MAX) -> list[AppError]:
    """Errors from probe_image and decode_image (probe may pass where only decode fails)."""
    errors = []
    for call in (probe_image, decode_image):
        try:
            call(data, max_pixels=max_pixels)
        except AppError as exc:
            errors.append(exc)
    return errors


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (_encode(Image.new("RGB", (8, 8)), "GIF"), "GIF"),
        (_encode(Image.new("RGB", (8, 8)), "TIFF"), "TIFF"),
        (b"%PDF-1.4\n1 0 obj\n", "PDF"),
        (b"just some text, not an image\n", None),
        (np.random.default_rng(7).bytes(2048), None),
        (b"", None),
    ],
    ids=["gif", "tiff", "pdf", "text", "random", "empty"],
)
def test_unsupported_formats(data: bytes, kind: str | None) -> None:
    errors = _both(data)
    assert len(errors) == 2 and all(isinstance(e, UnsupportedImage) for e in errors)
    assert "PNG, JPEG and DICOM" in errors[0].detail
    if kind:
        assert kind in errors[0].detail


def test_truncated_png() -> None:
    data = _fixture("test_0001_normal.png")
    errors = _both(data[: len(data) // 2])
    assert len(errors) == 2 and all(isinstance(e, InvalidImage) for e in errors)
    assert errors[1].detail.startswith("PNG file is truncated or corrupt:")


def test_png_with_bad_crc_fails_probe() -> None:
    data = bytearray(_fixture("test_0001_normal.png"))
    data[45] ^= 0xFF  # inside the IDAT payload: caught by verify()'s CRC check
    with pytest.raises(InvalidImage, match="PNG"):
        probe_image(bytes(data), max_pixels=MAX)


def test_truncated_jpeg() -> None:
    data = _big_jpeg(512)
    cut = data[: len(data) // 2]
    assert probe_image(cut, max_pixels=MAX) == ImageInfo("jpeg", 512, 512)  # header intact
    with pytest.raises(InvalidImage, match="^JPEG file is truncated or corrupt: "):
        decode_image(cut, max_pixels=MAX)


@pytest.mark.parametrize("name", ["rtplan.dcm", "ExplVR_LitEndNoMeta.dcm", "test-SR.dcm"])
def test_dicom_without_pixel_data(name: str) -> None:
    errors = _both(_wheel(name))
    assert len(errors) == 2 and all(isinstance(e, InvalidImage) for e in errors)
    assert all(
        e.detail == "DICOM file has no pixel data (PixelData element missing)" for e in errors
    )


@pytest.mark.filterwarnings("ignore::UserWarning:pydicom")
@pytest.mark.parametrize("name", ["RG3_J2KI.dcm", "test_0000_pneumonia_mono1.dcm"])
def test_truncated_dicom(name: str) -> None:
    data = _fixture(name)
    with pytest.raises(InvalidImage, match="DICOM"):
        decode_image(data[: len(data) - 600], max_pixels=MAX)


def test_corrupt_compressed_dicom() -> None:
    # A real pydicom test file whose JPEG Extended stream no installed plugin can decode.
    data = _wheel("JPEG-lossy.dcm")
    assert probe_image(data, max_pixels=MAX).width == 256  # the header alone is fine
    with pytest.raises(InvalidImage, match=r"^DICOM pixel data could not be decoded \(JPEG"):
        decode_image(data, max_pixels=MAX)


def test_dicom_transfer_syntax_without_decoder() -> None:
    ds = _ds(_fixture("test_0000_pneumonia.dcm"))
    ds.file_meta.TransferSyntaxUID = UID("1.2.840.10008.1.2.4.100")  # MPEG2: no decoder
    ds.PixelData = encapsulate([b"\x00\x00\x01\xb3" + bytes(60)])
    ds["PixelData"].VR = "OB"
    errors = _both(_to_bytes(ds))
    assert len(errors) == 2 and all(isinstance(e, InvalidImage) for e in errors)
    assert "MPEG2" in errors[0].detail and "no decoder" in errors[0].detail


def test_dicom_unsupported_photometric() -> None:
    data = _edited(_fixture("test_0000_pneumonia.dcm"), PhotometricInterpretation="HSV")
    with pytest.raises(InvalidImage, match="photometric interpretation 'HSV'"):
        decode_image(data, max_pixels=MAX)


def test_zero_sized_images() -> None:
    errors = _both(_edited(_fixture("test_0000_pneumonia.dcm"), Rows=0))
    assert len(errors) == 2 and all(isinstance(e, InvalidImage) for e in errors)
    errors = _both(_png_header_only(0, 10))
    assert len(errors) == 2 and all(isinstance(e, InvalidImage) for e in errors)


@pytest.mark.parametrize("side", [100_000, 20_000, 8_000])  # > 2x the limit: PIL's own error
def test_png_bomb_rejected_from_header(side: int) -> None:
    data = _png_header_only(side, side)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and no DecompressionBombWarning leaks out
        errors = _both(data)
    assert len(errors) == 2 and all(isinstance(e, ImageTooLarge) for e in errors)
    assert errors[0].extensions["max_pixels"] == MAX
    assert Image.MAX_IMAGE_PIXELS == MAX  # PIL's guard follows the caller's limit


def test_too_large_reports_size() -> None:
    jpeg = _big_jpeg(512)
    dcm = _fixture("693_J2KR.dcm")
    for data, fmt in ((jpeg, "JPEG"), (dcm, "DICOM")):
        errors = _both(data, max_pixels=512 * 512 - 1)
        assert len(errors) == 2 and all(isinstance(e, ImageTooLarge) for e in errors)
        assert errors[0].detail.startswith(f"{fmt} image is 512x512 = 262,144 pixels")
        assert errors[0].extensions == {"width": 512, "height": 512, "max_pixels": 262_143}
    assert decode_image(jpeg, max_pixels=512 * 512).pixels.shape == (512, 512)


@pytest.mark.filterwarnings("ignore::UserWarning:pydicom")  # pydicom warns on odd headers
@pytest.mark.parametrize(
    "name",
    [
        "test_0001_normal.png",
        "test_0001_normal_16bit.png",
        "test_0001_normal.jpg",
        "test_0000_pneumonia.dcm",
        "test_0000_pneumonia_mono1.dcm",
        "emri_small_RLE.dcm",
        "JLSL_16_15_1_1F.dcm",
    ],
)
def test_damaged_files_only_raise_app_errors(name: str) -> None:
    """Cut and bit-flipped copies: decode either works or raises our errors, nothing raw."""
    data = _fixture(name)
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    variants = [data[:cut] for cut in (8, 64, 131, 140, len(data) // 3, len(data) - 1)]
    for _ in range(25):
        damaged = bytearray(data)
        for pos in rng.integers(0, len(data), size=3):
            damaged[pos] = int(rng.integers(0, 256))
        variants.append(bytes(damaged))
    for variant in variants:
        for call in (probe_image, decode_image):
            try:
                result = call(variant, max_pixels=MAX)
            except AppError as exc:
                assert exc.detail and "Traceback" not in exc.detail
            else:
                if isinstance(result, DecodedImage):
                    assert result.pixels.dtype == np.float32
                    assert np.all((result.pixels >= 0) & (result.pixels <= 1))
