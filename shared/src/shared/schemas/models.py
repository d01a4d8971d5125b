"""Model cards and input specs: what a model is, how to feed it, how far to trust it.

Torch-free, so the API can validate and serve cards without importing torch.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Task = Literal["classification", "detection", "segmentation"]
ModelKind = Literal["single", "ensemble"]
ENSEMBLE_ARCHITECTURE = "ensemble"


class InputSpec(BaseModel):
    """How a decoded image becomes the network's input tensor."""

    model_config = ConfigDict(extra="forbid")

    size: int = Field(ge=8, le=2048, description="Side of the square network input, px")
    channels: Literal[1, 3] = 3
    mean: list[float] = Field(min_length=1, max_length=3)
    std: list[float] = Field(min_length=1, max_length=3)
    resize: Literal["center_crop", "squash", "letterbox"] = Field(
        "center_crop",
        description="center_crop: crop the central square, then resize; squash: resize as is; "
        "letterbox: fit the whole image keeping its aspect, pad to a square (detection)",
    )
    native_size: int | None = Field(
        None,
        description="Resolution of the training images. When set, inputs are first reduced to "
        "this size so a model trained on small images sees the detail it was trained on.",
    )


class OperatingPoint(BaseModel):
    threshold: float = Field(ge=0, le=1)
    sensitivity: float | None = None
    specificity: float | None = None
    source: str = Field(description="Where the numbers come from, e.g. 'validation split'")


class RocPoint(BaseModel):
    """One point of the validation ROC: a threshold and what it achieved on validation."""

    threshold: float = Field(ge=0, le=1)
    sensitivity: float = Field(ge=0, le=1)
    specificity: float = Field(ge=0, le=1)


class DataProvenance(BaseModel):
    source: str
    licence: str
    citation: str = ""
    split: str = ""


class TrainingRecord(BaseModel):
    command: str
    epochs: int
    wall_time_s: float
    hardware: str
    seed: int | None = None
    extra: dict[str, Any] = Field(default_factory=dict)


class EnsembleSpec(BaseModel):
    """Members vote: soft = (weighted) mean probability, hard = (weighted) majority label."""

    model_config = ConfigDict(extra="forbid")

    members: list[str] = Field(
        min_length=2, max_length=16, description="Member refs: name, name:version or name@alias"
    )
    vote: Literal["soft", "hard"] = "soft"
    weights: list[float] | None = Field(
        None, description="One positive weight per member; equal weights when omitted"
    )

    @model_validator(mode="after")
    def _check_weights(self) -> EnsembleSpec:
        if self.weights is not None:
            if len(self.weights) != len(self.members):
                raise ValueError("ensemble.weights needs one weight per member")
            if any(w <= 0 for w in self.weights):
                raise ValueError("ensemble.weights must be positive")
        return self


class ModelCard(BaseModel):
    """Everything a clinician or engineer needs to decide whether to use a model version."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{1,98}[a-z0-9]$")
    task: Task
    architecture: str
    labels: list[str] = Field(min_length=2)
    positive_label: str | None = Field(
        None, description="For binary classifiers: the label whose probability is thresholded"
    )
    input: InputSpec
    operating_point: OperatingPoint | None = None
    validation_roc: list[RocPoint] | None = Field(
        None,
        description="Binary classifiers: thresholds with their validation sensitivity and "
        "specificity; lets a request pick an operating point (target_sensitivity)",
    )
    description: str = ""
    intended_use: str = ""
    limitations: str = ""
    data: DataProvenance | None = None
    training: TrainingRecord | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)
    queue: Literal["cpu", "gpu"] = "cpu"
    kind: ModelKind = "single"
    tta: Literal["none", "hflip"] = Field(
        "none",
        description="Test-time augmentation the workers apply: hflip averages the "
        "probabilities of the image and its mirror (chosen on validation; see metrics.tta)",
    )
    ensemble: EnsembleSpec | None = Field(
        None, description="Members and vote of an ensemble (kind 'ensemble' only)"
    )

    @model_validator(mode="after")
    def _check_labels(self) -> ModelCard:
        if (self.kind == "ensemble") != (self.ensemble is not None):
            raise ValueError("`ensemble` is required for kind 'ensemble' and only allowed there")
        if self.kind == "ensemble" and (
            self.task != "classification" or self.architecture != ENSEMBLE_ARCHITECTURE
        ):
            raise ValueError(
                f"an ensemble has task 'classification' and architecture {ENSEMBLE_ARCHITECTURE!r}"
            )
        if len(set(self.labels)) != len(self.labels):
            raise ValueError("labels must be unique")
        if self.positive_label is not None and self.positive_label not in self.labels:
            raise ValueError(f"positive_label {self.positive_label!r} is not one of the labels")
        if (
            len(self.input.mean) != self.input.channels
            or len(self.input.std) != self.input.channels
        ):
            raise ValueError("input.mean and input.std need one value per input channel")
        return self


class ModelVersionPublic(BaseModel):
    name: str
    version: int
    ref: str
    task: Task
    architecture: str
    labels: list[str]
    input: InputSpec
    queue: str
    weights_sha256: str
    created_at: datetime
    card: dict[str, Any]
    kind: ModelKind = "single"
    members: list[dict[str, Any]] | None = Field(
        None, description="Ensembles: members pinned to exact versions, with vote weights"
    )
    aliases: list[str] = Field(default_factory=list)
    deprecated_at: datetime | None = None
    deprecation_reason: str | None = None
    deleted_at: datetime | None = Field(
        None, description="Deleted versions run no new jobs; their results stay readable"
    )
    runtime_plans: dict[str, Any] | None = Field(
        None,
        description="Per hardware class: the accuracy-guarded runtime plan workers use, its "
        "speed-up over fp32 and every candidate's guard numbers (none: fp32 eager)",
    )


class ModelPublic(BaseModel):
    name: str
    task: Task
    description: str
    latest: ModelVersionPublic
    versions: list[int]
    aliases: dict[str, int] = Field(
        default_factory=dict, description="Alias -> version; `name` alone runs `production`"
    )
    deprecated_at: datetime | None = None
    deprecation_reason: str | None = None
    deleted_at: datetime | None = None


class AliasUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int = Field(ge=1)


class AliasPublic(BaseModel):
    alias: str
    version: int
    ref: str


class DeprecationCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=2000)


class ModelsPublic(BaseModel):
    items: list[ModelPublic]
