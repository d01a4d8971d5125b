"""Render an uploaded image as a PNG a browser can show (DICOM with its window applied).

The web app draws detection boxes and Grad-CAM overlays on top of this picture, so browsers
need no DICOM decoder. The same decoder as the worker is used, so the preview shows exactly
what the model saw before resizing (VOI LUT / window, MONOCHROME1 inversion, first frame).
"""

from __future__ import annotations

from io import BytesIO

from PIL import Image

from shared.imaging.decode import decode_image
from shared.imaging.overlay import to_uint8_rgb

# Large enough to read a chest film on a laptop, small enough to send quickly.
DEFAULT_MAX_SIDE = 1600


def render_preview_png(data: bytes, *, max_pixels: int, max_side: int = DEFAULT_MAX_SIDE) -> bytes:
    """Decode an upload and encode it as an 8-bit PNG no larger than ``max_side``.

    Args:
        data: the stored upload (PNG, JPEG or DICOM).
        max_pixels: largest accepted width * height, checked before decoding.
        max_side: the longest side of the returned picture, in pixels (aspect kept).

    Returns:
        PNG bytes (grayscale or RGB). Callers scale overlays by the original size.

    Raises:
        InvalidImage, UnsupportedImage, ImageTooLarge: as `decode_image`.
    """
    decoded = decode_image(data, max_pixels=max_pixels)
    pixels = decoded.pixels
    if pixels.ndim == 2:
        image = Image.fromarray(to_uint8_rgb(pixels)[..., 0])
    else:
        image = Image.fromarray(to_uint8_rgb(pixels))
    # JPEG DCT draft decoding is off here (no target_size): the picture keeps its full size
    # before this explicit, aspect-preserving reduction.
    image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    out = BytesIO()
    image.save(out, format="PNG", optimize=False, compress_level=6)
    return out.getvalue()
