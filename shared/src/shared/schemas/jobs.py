"""Job request/response schemas: the REST contract for inference jobs."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.db.models import ImageStatus, JobStatus, Priority
from shared.schemas.learning import FeedbackPublic


class JobParams(BaseModel):
    """Optional per-request parameters, sent as a JSON object in the `params` form field."""

    model_config = ConfigDict(extra="forbid")

    threshold: float | None = Field(
        None,
        ge=0,
        le=1,
        description="Decision threshold on the positive class probability (binary "
        "classifiers; defaults to the model card's operating point), or on each pixel's "
        "class probability (segmentation; default 0.5).",
    )
    target_sensitivity: float | None = Field(
        None,
        gt=0,
        le=1,
        description="Pick the operating point from the model card's validation ROC: the "
        "highest threshold whose validation sensitivity reaches this value.",
    )
    explain: Literal["gradcam"] | None = Field(
        None,
        description="gradcam: store a Grad-CAM heatmap over each image as a job artifact "
        "(single classification models)",
    )
    # Detection models only (checked against the model at submission).
    score_threshold: float | None = Field(
        None, ge=0, le=1, description="Detection: drop boxes scoring below this (default 0.3)"
    )
    nms_iou: float | None = Field(
        None,
        gt=0,
        le=0.9,
        description="Detection: per-class non-maximum suppression IoU (default 0.5); "
        "higher keeps more overlapping boxes",
    )
    max_detections: int | None = Field(
        None, ge=1, le=500, description="Detection: keep at most this many boxes (default 100)"
    )
    annotate: bool | None = Field(
        None, description="Detection: store each image with its boxes drawn as a job artifact"
    )
    # Segmentation models only (checked against the model at submission).
    min_area: int | None = Field(
        None,
        ge=0,
        le=100_000_000,
        description="Segmentation: drop connected regions smaller than this many pixels of "
        "the uploaded image (default 0: keep all)",
    )

    @property
    def non_segmentation_fields(self) -> list[str]:
        """Set parameters a segmentation model cannot honour (all but threshold, min_area)."""
        names = ("target_sensitivity", "explain", *self.detection_fields)
        return [n for n in names if getattr(self, n) is not None]

    @property
    def detection_fields(self) -> dict[str, Any]:
        """The detection-only parameters this request sets."""
        names = ("score_threshold", "nms_iou", "max_detections", "annotate")
        return {n: getattr(self, n) for n in names if getattr(self, n) is not None}


class ProblemRef(BaseModel):
    type: str
    detail: str


class ImagePublic(BaseModel):
    index: int
    filename: str
    format: str
    size_bytes: int
    sha256: str
    status: ImageStatus
    output: dict[str, Any] | None = None
    error: ProblemRef | None = None
    latency_ms: float | None = Field(None, description="Decode + preprocess + model time")
    finished_at: datetime | None = None
    burned_in_annotation: bool = Field(
        False, description="DICOM BurnedInAnnotation = YES: text may remain in the pixels"
    )


class ModelRefPublic(BaseModel):
    name: str
    version: int
    ref: str = Field(description="Exact version that ran, as name:version")
    architecture: str
    deprecated: str | None = Field(
        None, description="Set when the version (or model) is deprecated or deleted: why and when"
    )


class JobSummary(BaseModel):
    id: uuid.UUID
    status: JobStatus
    model: ModelRefPublic
    priority: Priority
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    image_count: int
    images_succeeded: int
    images_failed: int
    error: ProblemRef | None = None


class CallbackPublic(BaseModel):
    url: str
    status: Literal["waiting", "pending", "delivered", "failed"] = Field(
        description="`waiting` until the job finishes; then `pending` (being sent or "
        "retried), `delivered` (2xx received) or `failed` (attempts used up)"
    )
    attempts: int = 0
    last_error: str | None = None
    next_attempt_at: datetime | None = None
    delivered_at: datetime | None = None


class DicomDeliveryPublic(BaseModel):
    """Result objects of a job sent to one DICOM destination (STOW-RS or C-STORE)."""

    destination: str
    kind: str
    status: Literal["waiting", "pending", "delivered", "failed"] = Field(
        description="`waiting` until the job finishes; `delivered` only once confirmed "
        "(STOW-RS: found by QIDO-RS)"
    )
    attempts: int = 0
    last_error: str | None = None
    next_attempt_at: datetime | None = None
    delivered_at: datetime | None = None
    sop_instance_uids: list[str] = []


class DicomResultObjectPublic(BaseModel):
    """One DICOM object made from a job's results (jobs on DICOM input)."""

    kind: Literal["sr", "sc", "seg"] = Field(
        description="`sr`: TID 1500 Comprehensive 3D SR; `sc`: Secondary Capture with the "
        "detection boxes drawn; `seg`: DICOM SEG of a segmentation"
    )
    sop_class_uid: str
    sop_instance_uid: str = Field(description="Stable per job and model version")
    series_instance_uid: str
    url: str | None = Field(None, description="Download (the SR: /v1/jobs/{id}/report.dcm)")


class JobPublic(JobSummary):
    params: dict[str, Any]
    attempts: int
    worker: str | None = Field(None, description="Worker node that ran the job")
    images: list[ImagePublic]
    callback: CallbackPublic | None = None
    dicom_deliveries: list[DicomDeliveryPublic] = Field(
        default_factory=list, description="jobs from a DICOM study: results per destination"
    )
    dicom_results: list[DicomResultObjectPublic] = Field(
        default_factory=list,
        description="succeeded jobs on DICOM input: the DICOM result objects (SR first)",
    )
    feedback: list[FeedbackPublic] = Field(
        default_factory=list, description="Reviewers' confirmations and corrections, all revisions"
    )


class JobsPublic(BaseModel):
    items: list[JobSummary]
    next_cursor: str | None = Field(
        None, description="Pass as `cursor` to fetch the next (older) page; null on the last"
    )
