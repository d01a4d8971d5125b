"""Job options a request may set, checked against the model before anything is stored."""

from __future__ import annotations

from typing import Any

from shared.errors import InvalidRequest
from shared.job_intake import INFERENCE_QUEUES, check_params, pick_queue
from shared.schemas.jobs import JobParams

__all__ = ["INFERENCE_QUEUES", "check_params", "merge_form_fields", "pick_queue"]


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
