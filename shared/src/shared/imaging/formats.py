"""The image formats the platform accepts, named once (no imports: the CLI uses it too).

`probe_image` (shared.imaging.decode) names a format from its magic bytes; a stored blob
gets that format's suffix, whether it came with a job or a dataset.
"""

from __future__ import annotations

from typing import Final

# Blob-store suffix of each probed format.
STORED_SUFFIX: Final = {"png": ".png", "jpeg": ".jpg", "dicom": ".dcm"}
# File names taken as images when scanning a folder or an archive.
IMAGE_SUFFIXES: Final = frozenset({".png", ".jpg", ".jpeg", ".dcm", ".dicom"})
