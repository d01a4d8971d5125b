"""Validate DICOM objects with the standard's own checkers (used by tests and by hand).

- ``dciodvfy`` (Debian ``dicom3tools``): IOD, module and attribute checks for any object; a
  line starting with ``Error`` is an error, ``Warning`` lines are not.
- PixelMed's ``com.pixelmed.validate.DicomSRValidator`` (Debian ``libpixelmed-java``): SR
  IOD plus template checks (TID 1500 for our reports); error lines start with ``Error``.
  On JDK 17 its XPath expressions exceed the default JAXP limits, hence the three
  ``-Djdk.xml.xpath*Limit=0`` options.

`ensure_tools` installs the Debian packages when they are missing and the process is root;
otherwise it raises `ToolMissing` naming them, so a caller fails loudly instead of skipping.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pydicom

DCIODVFY_PACKAGE = "dicom3tools"
PIXELMED_PACKAGES = ("libpixelmed-java", "default-jre-headless")
PIXELMED_JARS = (Path("/usr/share/java/pixelmed.jar"),)
JAVA_OPTIONS = (
    "-Djdk.xml.xpathExprOpLimit=0",
    "-Djdk.xml.xpathExprGrpLimit=0",
    "-Djdk.xml.xpathTotalOpLimit=0",
)
SR_VALIDATOR = "com.pixelmed.validate.DicomSRValidator"


class ToolMissing(RuntimeError):
    """A validator is not installed and cannot be installed here."""


@dataclass(frozen=True)
class Report:
    """What a validator said about one object."""

    tool: str
    output: str

    @property
    def errors(self) -> list[str]:
        return [line for line in self.output.splitlines() if line.startswith("Error")]


def _installed(pixelmed: bool) -> bool:
    if pixelmed:
        return shutil.which("java") is not None and all(p.exists() for p in PIXELMED_JARS)
    return shutil.which("dciodvfy") is not None


def ensure_tools(*, pixelmed: bool = True) -> None:
    """Make sure dciodvfy (and PixelMed) are there: apt-get install as root, else raise."""
    wanted: list[tuple[bool, tuple[str, ...]]] = [(False, (DCIODVFY_PACKAGE,))]
    if pixelmed:
        wanted.append((True, PIXELMED_PACKAGES))
    for is_pixelmed, packages in wanted:
        if _installed(is_pixelmed):
            continue
        if os.geteuid() == 0 and shutil.which("apt-get"):
            env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
            subprocess.run(["apt-get", "install", "-y", *packages], check=False, env=env)
        if not _installed(is_pixelmed):
            raise ToolMissing(
                f"DICOM validation needs the Debian package(s) {' '.join(packages)}: install "
                "them (apt-get install -y ...) or run the tests as root to install them"
            )


def _as_file(obj: pydicom.Dataset | bytes | Path, folder: Path) -> Path:
    if isinstance(obj, Path):
        return obj
    path = folder / "object.dcm"
    if isinstance(obj, bytes):
        path.write_bytes(obj)
    else:
        obj.save_as(path, enforce_file_format=True)
    return path


def dciodvfy(obj: pydicom.Dataset | bytes | Path) -> Report:
    """Run dciodvfy on one object (a dataset, Part 10 bytes or a file)."""
    ensure_tools(pixelmed=False)
    with tempfile.TemporaryDirectory() as tmp:
        path = _as_file(obj, Path(tmp))
        run = subprocess.run(
            ["dciodvfy", str(path)], capture_output=True, text=True, timeout=120, check=False
        )
    return Report("dciodvfy", run.stdout + run.stderr)


def pixelmed_sr(obj: pydicom.Dataset | bytes | Path, *, timeout: float = 300) -> Report:
    """Run PixelMed's SR validator (IOD + templates) on one SR object."""
    ensure_tools(pixelmed=True)
    classpath = ":".join(str(p) for p in PIXELMED_JARS)
    with tempfile.TemporaryDirectory() as tmp:
        path = _as_file(obj, Path(tmp))
        run = subprocess.run(
            ["java", *JAVA_OPTIONS, "-cp", classpath, SR_VALIDATOR, str(path)],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    output = run.stdout + run.stderr
    if run.returncode != 0 and "validation complete" not in output.lower():
        output += f"\nError: the validator exited with status {run.returncode}"
    return Report("pixelmed", output)
