"""A finished job as a FHIR R4 Bundle: DiagnosticReport + Observations + Device.

`collection` (GET /v1/jobs/{id}/fhir) references entries by `urn:uuid:` fullUrls;
`transaction` (posted to a hospital's FHIR server) PUTs every resource at a stable id, so
posting the same job twice updates the resources instead of creating copies. Ids are
version-5 UUIDs of the job id and the model's `name:version` (the Device's of the model
version and its weights alone, so every job of one model version points at one Device).
"""

from __future__ import annotations

import html
import uuid
from datetime import UTC, datetime
from typing import Any, Literal

from shared.fhir_results import codes as c
from shared.fhir_results.facts import ImageFacts, JobFacts
from shared.fhir_results.observations import findings

BundleType = Literal["collection", "transaction"]
NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, c.BASE)


def resource_id(facts: JobFacts, *parts: str) -> str:
    """Stable id of one resource of a job's report (same job and model version: same id)."""
    return str(uuid.uuid5(NAMESPACE, "/".join((str(facts.job_id), facts.model_ref, *parts))))


def device_id(facts: JobFacts) -> str:
    return str(uuid.uuid5(NAMESPACE, f"device/{facts.model_ref}/{facts.weights_sha256}"))


def instant(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="milliseconds")


def study_reference(study_uid: str) -> dict[str, Any]:
    """A logical reference to the ImagingStudy by its StudyInstanceUID (FHIR's DICOM form)."""
    return {
        "type": "ImagingStudy",
        "identifier": {"system": c.DICOM_UID, "value": f"urn:oid:{study_uid}"},
        "display": f"Study {study_uid}",
    }


def build_bundle(facts: JobFacts, *, bundle_type: BundleType = "collection") -> dict[str, Any]:
    """The FHIR R4 Bundle of a succeeded job.

    Args:
        facts: the job's results (shared.fhir_results.facts.job_facts).
        bundle_type: `collection` to read, `transaction` to post to a FHIR server.

    Returns:
        The Bundle as a JSON-ready dict.
    """

    def ref(kind: str, id_: str) -> dict[str, Any]:
        if bundle_type == "collection":
            return {"reference": f"urn:uuid:{id_}", "type": kind}
        return {"reference": f"{kind}/{id_}", "type": kind}

    issued = instant(facts.finished_at)
    device = _device(facts)
    subject = (
        {"subject": {"type": "Patient", "identifier": {"value": facts.patient.patient_id}}}
        if facts.patient
        else {}
    )
    observations: list[dict[str, Any]] = []
    for image in facts.images:
        for n, finding in enumerate(findings(facts, image)):
            observations.append(
                {
                    "resourceType": "Observation",
                    "id": resource_id(facts, "observation", str(image.index), str(n)),
                    "status": "preliminary",
                    "category": c.OBSERVATION_IMAGING,
                    **subject,
                    "issued": issued,
                    "device": ref("Device", device["id"]) | {"display": facts.model_ref},
                    **(
                        {"derivedFrom": [study_reference(image.dicom.study)]} if image.dicom else {}
                    ),
                    **finding,
                }
            )
    conclusion = _conclusion(facts)
    report: dict[str, Any] = {
        "resourceType": "DiagnosticReport",
        "id": resource_id(facts, "report"),
        "text": {
            "status": "generated",
            "div": '<div xmlns="http://www.w3.org/1999/xhtml"><p>'
            + "</p><p>".join(html.escape(line) for line in conclusion)
            + "</p></div>",
        },
        "identifier": [{"system": c.JOB, "value": str(facts.job_id)}],
        "status": "preliminary",
        "category": c.REPORT_CATEGORY,
        "code": c.concept(
            c.IMAGING_MEASUREMENT_REPORT,
            c.DIAGNOSTIC_IMAGING_REPORT,
            text=f"AI analysis report ({facts.model_ref})",
        ),
        **subject,
        "issued": issued,
    }
    if observations:
        report["result"] = [ref("Observation", o["id"]) for o in observations]
    if facts.study_uids:
        report["imagingStudy"] = [study_reference(uid) for uid in facts.study_uids]
    report["conclusion"] = "\n".join(conclusion)
    resources = [report, *observations, device]
    return {
        "resourceType": "Bundle",
        **({"id": resource_id(facts, "bundle")} if bundle_type == "collection" else {}),
        "type": bundle_type,
        "timestamp": issued,
        "entry": [_entry(r, bundle_type) for r in resources],
    }


def _entry(resource: dict[str, Any], bundle_type: BundleType) -> dict[str, Any]:
    kind, id_ = resource["resourceType"], resource["id"]
    if bundle_type == "collection":
        return {"fullUrl": f"urn:uuid:{id_}", "resource": resource}
    return {"resource": resource, "request": {"method": "PUT", "url": f"{kind}/{id_}"}}


def _device(facts: JobFacts) -> dict[str, Any]:
    """The model version as a Device (TID 4019 algorithm name and version)."""
    return {
        "resourceType": "Device",
        "id": device_id(facts),
        "identifier": [
            {"system": c.MODEL_VERSION, "value": facts.model_ref},
            {"system": c.MODEL_WEIGHTS, "value": facts.weights_sha256},
        ],
        "status": "active",
        "manufacturer": "medimg",
        "deviceName": [{"name": facts.model_ref, "type": "model-name"}],
        "modelNumber": facts.model_name,
        "type": c.concept(text=f"AI inference model ({facts.task}, {facts.architecture})"),
        "version": [
            {
                "type": c.concept(c.ALGORITHM_VERSION, text="Algorithm Version"),
                "value": str(facts.model_version),
            }
        ],
    }


def _conclusion(facts: JobFacts) -> list[str]:
    lines = [
        f"Preliminary result of the AI model {facts.model_ref} ({facts.task}); "
        "not reviewed by a clinician."
    ]
    for image in facts.images:
        lines.append(f"Image {image.index}: {_summary(image)}")
    return lines


def _summary(image: ImageFacts) -> str:
    out = image.output
    if out is None:
        return f"no result ({image.status})"
    if "probabilities" in out:
        label = out["label"]
        text = f"{label} (probability {out['probabilities'][label]:.3f}"
        point = out.get("operating_point")
        if point is not None:
            text += f", decision threshold {float(point['threshold']):.3f}"
        return text + ")"
    if "detections" in out:
        counts: dict[str, int] = out.get("counts") or {}
        if not out["detections"]:
            return "no detections above the score threshold"
        listed = ", ".join(f"{label} {n}" for label, n in counts.items() if n)
        return f"{len(out['detections'])} detections ({listed})"
    if "segmentation" in out:
        parts = [
            f"{k['label']} {k['area_px']} px"
            + (f" ({k['area_mm2']:g} mm²)" if k.get("area_mm2") is not None else "")
            for k in out["segmentation"].get("classes", [])
            if k.get("area_px")
        ]
        return "segmented " + ", ".join(parts) if parts else "nothing segmented"
    return "result of an unknown kind"
