"""A finished job's results as FHIR R4 (torch-free): read by the API, posted by the gateway.

`build_bundle(job_facts(job, dicom_uids))` gives a Bundle holding a preliminary
DiagnosticReport, one Observation per finding and a Device for the model version; jobs on
DICOM input reference their ImagingStudy by StudyInstanceUID. Codes: shared.fhir_results.codes.
"""

from shared.fhir_results.bundle import BundleType, build_bundle, device_id, resource_id
from shared.fhir_results.facts import (
    DicomUids,
    ImageFacts,
    JobFacts,
    dicom_uids,
    job_facts,
    reidentified,
)

__all__ = [
    "BundleType",
    "DicomUids",
    "ImageFacts",
    "JobFacts",
    "build_bundle",
    "device_id",
    "dicom_uids",
    "job_facts",
    "reidentified",
    "resource_id",
]
