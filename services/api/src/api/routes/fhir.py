"""A finished job's results as a FHIR R4 Bundle (`application/fhir+json`)."""

from __future__ import annotations

import json
import uuid
from typing import Any

from fastapi import APIRouter, Response
from starlette.concurrency import run_in_threadpool

from api.auth import JobsRead
from api.crud.jobs import get_job
from api.deps import SessionDep, StoreDep
from shared.db.models import ImageStatus, JobImage, JobStatus
from shared.errors import Conflict
from shared.fhir_results import DicomUids, build_bundle, dicom_uids, job_facts
from shared.storage import BlobStore

router = APIRouter(prefix="/jobs", tags=["jobs"])
FHIR_JSON = "application/fhir+json"

# Described, not generated: the Bundle's full structure is HL7's (R4 JSON schema).
BUNDLE_SCHEMA: dict[str, Any] = {
    "title": "FhirBundle",
    "description": "FHIR R4 Bundle (https://hl7.org/fhir/R4/bundle.html) of type `collection`:"
    " a preliminary DiagnosticReport, one Observation per finding and a Device for the"
    " model version; see docs/integration.md",
    "type": "object",
    "required": ["resourceType", "type", "entry"],
    "properties": {
        "resourceType": {"type": "string", "enum": ["Bundle"]},
        "id": {"type": "string"},
        "type": {"type": "string", "enum": ["collection"]},
        "timestamp": {"type": "string"},
        "entry": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"fullUrl": {"type": "string"}, "resource": {"type": "object"}},
            },
        },
    },
}


@router.get(
    "/{job_id}/fhir",
    response_class=Response,
    responses={
        200: {
            "description": "The job's results as a FHIR R4 Bundle",
            "content": {FHIR_JSON: {"schema": BUNDLE_SCHEMA}},
        },
        404: {},
        409: {},
    },
)
async def read_job_fhir(
    job_id: uuid.UUID, principal: JobsRead, session: SessionDep, store: StoreDep
) -> Response:
    """The results of a succeeded job as a FHIR R4 Bundle (409 until it has succeeded)."""
    job = await get_job(session=session, tenant_id=principal.tenant_id, job_id=job_id)
    if job.status != JobStatus.SUCCEEDED:
        state = "not finished" if job.status not in (JobStatus.FAILED, JobStatus.CANCELLED) else ""
        raise Conflict(
            f"job {job_id} is {job.status}{f' ({state})' if state else ''}: "
            "a FHIR report exists only for a succeeded job",
            job_id=str(job_id),
        )
    uids = await run_in_threadpool(_dicom_uids, store, list(job.images))
    bundle = build_bundle(job_facts(job, uids))
    # Results are patient data: api.read_audit records `job.fhir.read` for every 2xx answer.
    return Response(json.dumps(bundle, separators=(",", ":")), media_type=FHIR_JSON)


def _dicom_uids(store: BlobStore, images: list[JobImage]) -> dict[int, DicomUids]:
    """UIDs of the (de-identified) DICOM inputs that have a result, read from their headers."""
    found: dict[int, DicomUids] = {}
    for image in images:
        if image.format != "dicom" or image.status != ImageStatus.SUCCEEDED:
            continue
        # The header only; a blob deleted by retention gives a report without the study.
        uids = dicom_uids(store.path(image.storage_key))
        if uids is not None:
            found[image.index] = uids
    return found
