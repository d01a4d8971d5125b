"""A job's DICOM results: the TID 1500 SR as a download, and the object list of the job view.

The objects are built on demand from the stored results (shared.dicom_results), with UIDs
fixed per job and model version, so the SR downloaded here is the object the gateway
delivers to a PACS (there re-identified; here it stays de-identified, like all results
the API returns).
"""

from __future__ import annotations

import uuid
from io import BytesIO

from fastapi import APIRouter, Response
from starlette.concurrency import run_in_threadpool

from api.auth import JobsRead
from api.crud.jobs import get_job
from api.deps import SessionDep, SettingsDep, StoreDep
from shared.db.models import Job, JobStatus
from shared.dicom_results.builder import build_objects, load_job_inputs, planned_objects
from shared.dicom_results.errors import NoDicomInput, ResultsNotReady
from shared.schemas.jobs import DicomResultObjectPublic

router = APIRouter(prefix="/jobs", tags=["jobs"])


@router.get(
    "/{job_id}/report.dcm",
    response_class=Response,
    responses={
        200: {"content": {"application/dicom": {}}, "description": "The SR (Part 10 file)"},
        404: {"description": "No such job, or no DICOM input"},
        409: {"description": "The job has not succeeded"},
    },
)
async def download_report(
    job_id: uuid.UUID,
    principal: JobsRead,
    session: SessionDep,
    store: StoreDep,
    settings: SettingsDep,
) -> Response:
    """The job's results as a DICOM Comprehensive 3D SR (TID 1500), for DICOM inputs.

    Findings with their probabilities and the operating point used, detection boxes as
    image regions on their source images, and the model as the algorithm. The same SOP
    Instance UID every time (and in every delivery to a PACS). Audited as
    ``job.report.read`` (api.read_audit).
    """
    await get_job(session=session, tenant_id=principal.tenant_id, job_id=job_id, with_images=False)
    inputs = await session.run_sync(lambda s: load_job_inputs(s, job_id))
    (report,) = await run_in_threadpool(
        build_objects, inputs, store, kinds=("sr",), max_pixels=settings.max_image_pixels
    )
    out = BytesIO()
    report.dataset.save_as(out, enforce_file_format=True)
    return Response(
        content=out.getvalue(),
        media_type="application/dicom",
        headers={"Content-Disposition": f'attachment; filename="report-{job_id}.dcm"'},
    )


async def job_result_objects(session: SessionDep, job: Job) -> list[DicomResultObjectPublic]:
    """The DICOM objects a succeeded job on DICOM input has (for the job view), unbuilt."""
    if job.status != JobStatus.SUCCEEDED or not any(im.format == "dicom" for im in job.images):
        return []
    try:
        inputs = await session.run_sync(lambda s: load_job_inputs(s, job.id))
    except (NoDicomInput, ResultsNotReady):  # e.g. every DICOM input failed
        return []
    return [
        DicomResultObjectPublic(
            kind=p.kind,
            sop_class_uid=p.sop_class_uid,
            sop_instance_uid=p.sop_instance_uid,
            series_instance_uid=p.series_instance_uid,
            url=f"/v1/jobs/{job.id}/report.dcm" if p.kind == "sr" else None,
        )
        for p in planned_objects(inputs)
    ]
