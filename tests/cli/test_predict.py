"""`medimg predict` against the real stack with the committed fixture images."""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
from pathlib import Path

from cli.stack import Stack
from tests.conftest import FIXTURES, KeyFactory


def test_predict_folder_writes_one_csv_row_per_image(
    stack: Stack, make_key: KeyFactory, tmp_path: Path
) -> None:
    folder = tmp_path / "study"
    (folder / "nested").mkdir(parents=True)
    source = FIXTURES / "pneumoniamnist"
    for name in ("test_0000_pneumonia.png", "test_0001_normal.jpg"):
        shutil.copy(source / name, folder / name)
    shutil.copy(source / "test_0000_pneumonia.dcm", folder / "nested" / "slice")  # no suffix
    (folder / "notes.txt").write_text("not an image")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    out = tmp_path / "results.csv"

    result = subprocess.run(
        [
            sys.executable, "-m", "cli", "predict", str(folder), "--model", "pneumonia-resnet18",
            "--api-url", stack.api_url, "--api-key", make_key(), "--out", str(out), "--batch", "2",
            "--target-sensitivity", "0.95",
        ],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    with out.open() as fh:
        rows = {r["path"]: r for r in csv.DictReader(fh)}
    assert set(rows) == {
        "broken.png", "nested/slice", "test_0000_pneumonia.png", "test_0001_normal.jpg"
    }  # fmt: skip
    for name in ("nested/slice", "test_0000_pneumonia.png", "test_0001_normal.jpg"):
        row = rows[name]
        assert row["status"] == "succeeded" and row["error"] == ""
        assert abs(float(row["p_normal"]) + float(row["p_pneumonia"]) - 1) < 1e-4
        assert float(row["threshold"]) > 0 and float(row["sensitivity"]) >= 0.95
        assert row["operating_point_source"].startswith("validation ROC")
    # The DICOM holds the same pixels as the PNG.
    assert rows["nested/slice"]["label"] == rows["test_0000_pneumonia.png"]["label"]
    assert rows["broken.png"]["status"] != "succeeded" and rows["broken.png"]["error"]
