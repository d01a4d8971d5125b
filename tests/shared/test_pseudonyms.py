"""Patient/study ids in datasets are HMAC pseudonyms keyed by the de-id secret (issue 10, 2)."""

from __future__ import annotations

import hashlib
import hmac
from io import BytesIO
from pathlib import Path

import pydicom

from shared.datasets.formats.base import Entry
from shared.datasets.records import read_entry, resolve_groups
from shared.pseudonyms import pseudonym

DICOM = Path(__file__).parents[1] / "fixtures" / "pneumoniamnist" / "test_0000_pneumonia.dcm"


def _with_patient(mrn: str) -> bytes:
    ds = pydicom.dcmread(DICOM)
    ds.PatientID = mrn
    out = BytesIO()
    ds.save_as(out)
    return out.getvalue()


def test_dicom_patient_ids_are_keyed_pseudonyms() -> None:
    data = _with_patient("4711")
    a = read_entry(Entry("a.dcm", label="x"), data, max_pixels=10**8, problems=[], secret=b"k1")
    b = read_entry(Entry("b.dcm", label="x"), data, max_pixels=10**8, problems=[], secret=b"k2")
    assert a is not None and b is not None
    expected = hmac.new(b"k1", b"patient\x004711", hashlib.sha256).hexdigest()[:32]
    assert a.extra["patient"] == f"patient-{expected}"
    assert a.extra["patient"] != b.extra["patient"]  # the secret matters
    # Not the old unsalted hash that a small MRN range lets anyone reverse.
    assert hashlib.sha256(b"4711").hexdigest()[:16] not in a.extra["patient"]


def test_pattern_and_format_groups_are_pseudonymised_and_still_group() -> None:
    records = [
        read_entry(Entry(p, label="x"), DICOM.read_bytes(), max_pixels=10**8, problems=[])
        for p in ("pat007_1.dcm", "pat007_2.dcm", "pat008_1.dcm")
    ]
    assert all(records)
    kept = [r for r in records if r is not None]
    resolve_groups(kept, "pattern", r"(pat\d+)_", [], secret=b"k")
    assert [r.group for r in kept] == [pseudonym("group", g, b"k") for g in
                                       ("pat007", "pat007", "pat008")]  # fmt: skip
    assert kept[0].group == kept[1].group != kept[2].group
    assert not any("pat00" in (r.group or "") for r in kept)
    for r, pid in zip(kept, ("P1", "P1", "P2"), strict=True):
        r.group, r.extra = pid, {}
    assert resolve_groups(kept, "auto", None, [], secret=b"k") == "format"
    assert kept[0].group == kept[1].group == pseudonym("group", "P1", b"k")
