"""Create inference jobs and hand them to the broker: one path for every way a job arrives.

The API (uploads) and the DICOM gateway (C-STORE, DICOMweb pull) both build jobs here and
send them with the same retry policy, so a job from a PACS is indistinguishable from an
uploaded one once it exists. Commit before sending: Postgres is the truth, and the API's
reconciler re-sends a committed job whose message was lost.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from celery import Celery

from shared.db.base import utcnow
from shared.db.models import ImageStatus, Job, JobImage, JobStatus, ModelVersion, Priority
from shared.errors import InvalidRequest
from shared.operating_points import operating_point
from shared.queueing import PRIORITY_VALUE
from shared.schemas.jobs import JobParams
from shared.schemas.models import ModelCard
from shared.tasks import Queue, TaskName

INFERENCE_QUEUES = (Queue.CPU.value, Queue.GPU.value)
# kombu's publish retry: a broker blip is ridden out, a dead broker fails fast.
RETRY_POLICY = {"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5}


@dataclass(frozen=True)
class StoredImage:
    """An input image already in the blob store, ready to become a JobImage."""

    filename: str
    content_type: str | None
    format: str
    size_bytes: int
    sha256: str
    storage_key: str
    burned_in_annotation: bool = False  # DICOM declaring text in its pixels (policy: flag)


def check_params(version: ModelVersion, params: JobParams) -> None:
    """Refuse parameters the model cannot honour (422), as the worker would apply them."""
    card = ModelCard.model_validate(version.card)
    if params.min_area is not None and card.task != "segmentation":
        raise InvalidRequest(
            f"min_area applies to segmentation models; {version.ref} is a {card.task} model"
        )
    if card.task == "segmentation":
        # threshold is the per-pixel probability cut here; nothing else applies.
        other = [name for name in params.non_segmentation_fields if name != "threshold"]
        if other:
            raise InvalidRequest(
                f"{', '.join(other)} do not apply to segmentation models ({version.ref}); "
                "use threshold and min_area"
            )
        return
    operating_point(card, threshold=params.threshold, target_sensitivity=params.target_sensitivity)
    if params.explain == "gradcam" and (card.task != "classification" or card.kind != "single"):
        raise InvalidRequest(
            f"explain=gradcam needs a single classification model; {version.ref} is a "
            f"{card.kind} {card.task} model"
        )
    if params.detection_fields and card.task != "detection":
        raise InvalidRequest(
            f"{', '.join(params.detection_fields)} apply to detection models; {version.ref} is "
            f"a {card.task} model"
        )


def pick_queue(version: ModelVersion, requested: str | None) -> str:
    """The request's queue, else the model deployment's (its card's ``queue``).

    A ``gpu`` job is accepted even when no GPU worker is running: it waits in the gpu
    queue, where an autoscaler (KEDA in k8s/) or an operator starting a GPU worker
    picks it up. Every model runs on either device.
    """
    if requested is None:
        return version.queue
    if requested not in INFERENCE_QUEUES:
        raise InvalidRequest(f"queue must be one of {', '.join(INFERENCE_QUEUES)}")
    return requested


def new_job(
    *,
    tenant_id: uuid.UUID,
    version: ModelVersion,
    params: dict[str, Any],
    priority: Priority,
    queue: str,
    images: list[StoredImage],
) -> Job:
    """A queued Job with its images (not added to any session: the caller adds and commits)."""
    job = Job(
        id=uuid.uuid4(),
        tenant_id=tenant_id,
        status=JobStatus.QUEUED,
        model_name=version.model.name,
        model_version=version,
        params=params,
        priority=priority,
        queue=queue,
        image_count=len(images),
        attempts=0,
        created_at=utcnow(),
    )
    job.images = [
        JobImage(index=i, status=ImageStatus.PENDING, **vars(image))
        for i, image in enumerate(images)
    ]
    return job


def send_inference(celery: Celery, *, job_id: uuid.UUID, queue: str, priority: Priority) -> None:
    """Publish a committed job's task (blocking: from async code, run it in a thread).

    Raises:
        kombu.exceptions.OperationalError or OSError: the broker cannot take it now.
    """
    celery.send_task(
        TaskName.INFER,
        kwargs={"job_id": str(job_id)},
        queue=queue,
        retry=True,
        retry_policy=RETRY_POLICY,
        priority=PRIORITY_VALUE[priority],
    )
