"""REST contract of the learning loop (issue 17): feedback, model lines, generations."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.db.learning_models import FeedbackKind, GenerationStatus


class FeedbackBox(BaseModel):
    model_config = ConfigDict(extra="forbid")

    label: str = Field(max_length=100)
    box: list[float] = Field(min_length=4, max_length=4, description="[x1, y1, x2, y2], pixels")

    @model_validator(mode="after")
    def _ordered(self) -> FeedbackBox:
        x1, y1, x2, y2 = self.box
        if x2 <= x1 or y2 <= y1 or min(self.box) < 0:
            raise ValueError("a box needs 0 <= x1 < x2 and 0 <= y1 < y2 (pixels)")
        return self


class FeedbackCreate(BaseModel):
    """Confirm the result as it is, or correct it: a label (classification) or boxes."""

    model_config = ConfigDict(extra="forbid")

    kind: FeedbackKind
    label: str | None = Field(None, max_length=100, description="Correct classification label")
    boxes: list[FeedbackBox] | None = Field(
        None, max_length=500, description="Correct detection boxes (an empty list: no findings)"
    )
    comment: str = Field("", max_length=4000)
    patient_id: str | None = Field(
        None,
        min_length=1,
        max_length=128,
        description="Patient (or study) the image belongs to; stored only as an HMAC "
        "pseudonym, the same one dataset imports derive, so no patient spans two splits",
    )

    @model_validator(mode="after")
    def _shape(self) -> FeedbackCreate:
        if self.kind == FeedbackKind.CONFIRM and (self.label or self.boxes is not None):
            raise ValueError("a confirmation takes the result as it is: no label or boxes")
        if self.kind == FeedbackKind.CORRECT and self.label is None and self.boxes is None:
            raise ValueError("a correction needs the right `label` or `boxes`")
        return self


class FeedbackPublic(BaseModel):
    id: uuid.UUID
    job_id: uuid.UUID
    image_index: int
    revision: int = Field(description="1, 2, ... per image; the highest is current")
    current: bool
    kind: FeedbackKind
    label: str | None
    boxes: list[dict[str, Any]] | None
    comment: str
    model_version: str
    reviewer: str | None = Field(description="Key prefix of the reviewer")
    created_at: datetime


class RetrainingPolicy(BaseModel):
    """When a model line retrains, on what data, and how a passing challenger is promoted."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    trigger: Literal["reviews", "schedule", "manual"] = Field(
        "manual",
        description="reviews: after `min_new_reviews` newly reviewed images; schedule: every "
        "`interval_hours`; manual: only POST .../generations",
    )
    min_new_reviews: int = Field(50, ge=1, le=1_000_000)
    interval_hours: float = Field(24 * 7, gt=0, le=24 * 366)
    merge: Literal["append", "feedback_only"] = Field(
        "append",
        description="append: the original training set plus feedback (a correction replaces "
        "the same image's label); feedback_only: reviewed images alone",
    )
    locked_patients: Literal["to_test", "exclude"] = Field(
        "to_test",
        description="Feedback on patients of the locked test set: kept in the feedback "
        "dataset's test split, or left out; never trained on either way",
    )
    promotion: Literal["auto", "approval"] = Field(
        "approval", description="auto: a passing challenger becomes production at once"
    )
    margin: float = Field(0.01, ge=0, le=0.5, description="Non-inferiority margin")
    bootstrap_samples: int = Field(1000, ge=100, le=10000)
    params: dict[str, Any] = Field(
        default_factory=dict, description="Training parameters over the line's recipe"
    )


class GenerationCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    params: dict[str, Any] = Field(
        default_factory=dict, description="Training parameters over the line's recipe and policy"
    )


class DecisionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field("", max_length=2000)


class LockedTestSet(BaseModel):
    dataset: str
    images: int
    groups: int
    sha256: str = Field(description="Over the sorted image hashes: proves it never changed")


class GenerationPublic(BaseModel):
    id: uuid.UUID
    model: str
    status: GenerationStatus
    trigger: str
    training_job_id: uuid.UUID
    training_dataset: str
    feedback_dataset: str | None
    champion: str | None
    challenger: str | None
    margin: float
    gate: dict[str, Any] | None
    passed: bool | None
    reason: str | None
    decided_by: str | None
    decided_at: datetime | None
    data_summary: dict[str, Any]
    created_at: datetime


class GenerationsPublic(BaseModel):
    items: list[GenerationPublic]


class ModelLinePublic(BaseModel):
    model: str
    locked_test_set: LockedTestSet
    base_dataset: str
    recipe: dict[str, Any]
    policy: RetrainingPolicy
    feedback_dataset: str | None
    production: str | None
    staging: str | None
    new_reviews: int = Field(description="Reviewed images not yet in a generation")
    next_run_at: datetime | None
    created_at: datetime


class RollbackPublic(BaseModel):
    model: str
    production: str
    previous: str
