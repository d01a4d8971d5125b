"""Coded concepts of the result objects, with where each one comes from.

Only codes checked against a source are used as standard codes: DCM and SNOMED CT concepts
present in pydicom's copy of the DICOM code tables (PS3.16, ``pydicom.sr.codedict``), and
SNOMED CT "Pneumonia" (233604007, checked in the tx.fhir.org expansion of a published value
set). Any other model label is coded in the private scheme ``99MEDIMG`` (PS3.16 8.2: coding
scheme designators starting with ``99`` are private): value = the label's index in the
model card, meaning = the label. docs/integration.md lists them.
"""

from __future__ import annotations

import highdicom as hd
from pydicom.sr.codedict import codes

PRIVATE_SCHEME = "99MEDIMG"

PROBABILITY = codes.DCM.Probability  # DCM 122157
THRESHOLD = codes.DCM.ThresholdValue  # DCM 122411
SENSITIVITY = codes.DCM.CaseSensitivity  # DCM 111088 (CID 6048, CAD operating point)
SPECIFICITY = codes.DCM.CaseSpecificity  # DCM 111090 (CID 6048)
SCORE = codes.SCT.Score  # SCT 246262008 "Score": detector scores are not probabilities
FINDING = codes.DCM.Finding  # DCM 121071
PRESENCE = codes.DCM.PresenceOfProperty  # DCM 121052: is the group's finding reported?
PRESENT = codes.DCM.Present  # DCM 121053
ABSENT = codes.DCM.Absent  # DCM 121054
IMAGING_PROCEDURE = codes.SCT.ImagingProcedure  # SCT 363679005
AI_FAMILY = codes.DCM.ArtificialIntelligence  # DCM 123110
NO_UNITS = codes.UCUM.NoUnits  # UCUM "1"

# Labels with a standard concept (lower-cased label -> concept).
_KNOWN: dict[str, hd.sr.CodedConcept] = {
    "pneumonia": hd.sr.CodedConcept("233604007", "SCT", "Pneumonia"),
    "normal": hd.sr.CodedConcept(codes.SCT.Normal.value, "SCT", codes.SCT.Normal.meaning),
    "nodule": hd.sr.CodedConcept("27925004", "SCT", "Nodule"),
}


def label_concept(labels: list[str], label: str) -> hd.sr.CodedConcept:
    """The concept of one model label: a standard code when one is known, else 99MEDIMG."""
    known = _KNOWN.get(label.lower())
    if known is not None:
        return known
    return hd.sr.CodedConcept(str(labels.index(label)), PRIVATE_SCHEME, label[:64])
