"""Put results back into the hospital's study: de-identified UIDs -> the originals.

Inputs are de-identified before they are stored (shared.imaging.deid), so result objects
reference 2.25.<hash> UIDs and carry an empty patient module. Sent back like that, a PACS
would file the SR under an anonymous new study. The gateway therefore keeps, per received
study and server-side only, the original UIDs of what it replaced and the patient/study
identifiers, and applies them to each outgoing copy; the stored results stay de-identified.
"""

from __future__ import annotations

import copy
from typing import Any

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset

from shared.imaging.deid import hashed_uid

# Patient and study identification copied back onto outgoing objects.
IDENTIFYING = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "AccessionNumber",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
)


def capture(original: Dataset, salt: bytes, into: dict[str, Any]) -> None:
    """Record what de-identifying `original` replaces, merging into a study's map."""
    uids: dict[str, str] = into.setdefault("uids", {})
    for keyword in (
        "StudyInstanceUID",
        "SeriesInstanceUID",
        "SOPInstanceUID",
        "FrameOfReferenceUID",
    ):
        value = original.get(keyword)
        if value:
            uids[hashed_uid(str(value), salt)] = str(value)
    patient: dict[str, str] = into.setdefault("patient", {})
    for keyword in IDENTIFYING:
        value = original.get(keyword)
        if value not in (None, "") and keyword not in patient:
            patient[keyword] = str(value)


def apply(ds: Dataset, mapping: dict[str, Any] | None) -> Dataset:
    """A re-identified copy of `ds` (the original is left as it is); no mapping: `ds` itself."""
    if not mapping:
        return ds
    out = copy.deepcopy(ds)
    uids: dict[str, str] = mapping.get("uids", {})

    def visit(dataset: Dataset, elem: DataElement) -> None:
        if elem.VR == "UI" and elem.value:
            if elem.VM > 1:
                elem.value = [uids.get(str(v), str(v)) for v in elem.value]
            else:
                elem.value = uids.get(str(elem.value), elem.value)

    out.walk(visit)
    for keyword, value in mapping.get("patient", {}).items():
        setattr(out, keyword, value)
    if "PatientIdentityRemoved" in out:
        out.PatientIdentityRemoved = "NO"
    for keyword in ("DeidentificationMethod", "DeidentificationMethodCodeSequence"):
        if keyword in out:
            delattr(out, keyword)
    return out
