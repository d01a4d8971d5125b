"""Code systems and codes of medimg's FHIR results, each from a source we checked.

Standard codes are used only where the code was looked up, not remembered:
- DICOM (DCM), SNOMED CT (SCT) and LOINC codes below appear in DICOM PS3.16 as shipped
  in pydicom's concept dictionary (`pydicom.sr.codedict`), the same tables highdicom uses;
- LOINC LP29684-5 "Radiology" is the imaging entry of the US Core DiagnosticReport
  category value set; v2-0074 RAD, observation-category `imaging` and
  v3-ObservationInterpretation POS/NEG are HL7 terminology (terminology.hl7.org).
Where no standard code says what we mean (an AI classification, a box corner, a model's own
label), the concept is in medimg's private code system `MEDIMG`, documented in
docs/integration.md, and always carries readable `text`.
"""

from __future__ import annotations

from typing import Any

DCM = "http://dicom.nema.org/resources/ontology/DCM"
SCT = "http://snomed.info/sct"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
V2_0074 = "http://terminology.hl7.org/CodeSystem/v2-0074"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
# RFC 3986 URIs as identifiers (urn:uuid:...), and DICOM UIDs as urn:oid: values.
URI = "urn:ietf:rfc:3986"
DICOM_UID = "urn:dicom:uid"

# medimg's own systems (documented in docs/integration.md, "FHIR results").
BASE = "https://medimg.dev/fhir"
MEDIMG = f"{BASE}/CodeSystem/ai-result"
MODEL_VERSION = f"{BASE}/sid/model-version"  # identifier: `name:version`
MODEL_WEIGHTS = f"{BASE}/sid/model-weights-sha256"  # identifier: SHA-256 of the weights
JOB = f"{BASE}/sid/job"  # identifier: the job id


def label_system(model_name: str) -> str:
    """A model's labels are codes of a system of their own (labels differ per model)."""
    return f"{BASE}/CodeSystem/label/{model_name}"


def coding(system: str, code: str, display: str) -> dict[str, Any]:
    return {"system": system, "code": code, "display": display}


def concept(*codings: dict[str, Any], text: str) -> dict[str, Any]:
    out: dict[str, Any] = {"text": text}
    if codings:
        out["coding"] = list(codings)
    return out


# DiagnosticReport
REPORT_CATEGORY = [
    concept(coding(V2_0074, "RAD", "Radiology"), text="Radiology"),
    concept(coding(LOINC, "LP29684-5", "Radiology"), text="Radiology"),
]
IMAGING_MEASUREMENT_REPORT = coding(DCM, "126000", "Imaging Measurement Report")  # TID 1500
DIAGNOSTIC_IMAGING_REPORT = coding(LOINC, "18748-4", "Diagnostic Imaging Report")  # CID 7000

# Observation
OBSERVATION_IMAGING = [concept(coding(OBSERVATION_CATEGORY, "imaging", "Imaging"), text="Imaging")]
FINDING = coding(DCM, "121071", "Finding")
CLASSIFICATION = coding(MEDIMG, "classification", "AI image classification")
DETECTION = coding(MEDIMG, "detection", "AI detected region")
SEGMENTATION = coding(MEDIMG, "segmentation", "AI segmented region")
PROBABILITY = coding(MEDIMG, "probability", "Model probability")
SCORE = coding(MEDIMG, "score", "Detection score")
THRESHOLD = coding(MEDIMG, "threshold", "Decision threshold (operating point)")
IMAGE_INDEX = coding(MEDIMG, "image-index", "Index of the image in the job")
SOP_INSTANCE_UID = coding(MEDIMG, "sop-instance-uid", "SOP Instance UID of the image")
BOX = {
    "xmin": coding(MEDIMG, "bbox-xmin", "Box left edge (pixel column)"),
    "ymin": coding(MEDIMG, "bbox-ymin", "Box top edge (pixel row)"),
    "xmax": coding(MEDIMG, "bbox-xmax", "Box right edge (pixel column)"),
    "ymax": coding(MEDIMG, "bbox-ymax", "Box bottom edge (pixel row)"),
}
WIDTH = coding(SCT, "103355008", "Width")  # CID 7470 linear measurements
HEIGHT = coding(DCM, "121207", "Height")  # CID 7470
AREA = coding(SCT, "42798000", "Area")  # CID 7469 size measurements
AREA_FRACTION = coding(MEDIMG, "area-fraction", "Fraction of the image area")
LABEL = coding(MEDIMG, "label", "Label predicted by the model")
COMPONENTS = coding(MEDIMG, "connected-components", "Number of connected regions")
POSITIVE = concept(coding(INTERPRETATION, "POS", "Positive"), text="Positive")
NEGATIVE = concept(coding(INTERPRETATION, "NEG", "Negative"), text="Negative")

# Device (TID 4019 algorithm identification: name and version)
ALGORITHM_VERSION = coding(DCM, "111003", "Algorithm Version")


def quantity(value: float | int, unit: str) -> dict[str, Any]:
    """UCUM quantity: `1` (a ratio or probability), `mm`, `mm2` or `{pixel}` (a count of 1s)."""
    shown = {"1": "1", "mm": "mm", "mm2": "mm²", "{pixel}": "pixel"}[unit]
    return {"value": value, "unit": shown, "system": UCUM, "code": unit}
