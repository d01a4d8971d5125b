"""Job options a request may set, checked against the model before anything is stored."""

from __future__ import annotations

from typing import Any

from shared.db.models import ModelVersion
from shared.errors import InvalidRequest
from shared.operating_points import operating_point
from shared.schemas.jobs import JobParams
from shared.schemas.models import ModelCard
from shared.tasks import Queue

INFERENCE_QUEUES = (Queue.CPU.value, Queue.GPU.value)


def merge_form_fields(params: JobParams, **fields: Any) -> JobParams:
    """Form fields (e.g. ``target_sensitivity``) override nothing: a clash is a 422."""
    given = {k: v for k, v in fields.items() if v is not None}
    current = params.model_dump(exclude_none=True)
    for name, value in given.items():
        if name in current and current[name] != value:
            raise InvalidRequest(f"`{name}` is given both as a form field and in `params`")
    try:
        return JobParams.model_validate({**current, **given})
    except ValueError as exc:
        raise InvalidRequest(f"invalid job parameters: {exc}") from None


def check_params(version: ModelVersion, params: JobParams) -> None:
    """Refuse parameters the model cannot honour (422), as the worker would apply them."""
    card = ModelCard.model_validate(version.card)
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
