"""Dataset-aware training defaults: what a job leaves unset is derived from its dataset.

A training request names a dataset version and, usually, little else. The values a caller
leaves out are derived here from a fingerprint of the version (images per split and class,
median image side, class balance, task) and the hardware class the training queue runs on,
each with the reason in words, so the job view can say why ``image_size`` is 64 and which
values the caller chose. Values the caller set always win.

The rules are meant to hold on datasets nobody here has seen, so they are stated in terms of
optimiser steps and image geometry rather than tuned to one set:

- input side: the median short side rounded to a multiple of 32, capped per task/hardware,
  and at most twice the native side (upscaling tiny images further costs time quadratically
  with no evidence of benefit);
- epochs from a target number of optimiser steps (small datasets get more epochs, large ones
  fewer), patience a quarter of that (early stopping ends the run once validation stops
  improving, so a generous epoch budget costs little when the model converges early);
- a pretrained start whenever ImageNet weights for the architecture are installed;
- class-weighted loss only when the training classes are imbalanced;
- horizontal flips for segmentation (the mask flips with the image) but not for
  classification, where laterality can carry meaning (a chest film is not left-right
  symmetric);
- segmentation: twice the step target (a U-Net's decoder starts from scratch and validation
  Dice keeps rising long after classification has converged), a wall-clock budget per
  hardware class, and a learning rate that warms up and then anneals by whichever of the two
  ends first, so a run cut short by its budget still finishes its schedule.

Torch-free: the API derives the recipe when it accepts the job, so it is fixed for every
attempt (a resumed job continues with the same values) and visible before training starts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Set
from dataclasses import dataclass, replace
from dataclasses import field as dataclass_field
from typing import Any

from shared import recipe_rules
from shared.errors import InvalidRequest
from shared.schemas.training import (
    CLASSIFICATION_LR,
    DETECTION_LR,
    SEGMENTATION_LR,
    Hardware,
    RecipeEntry,
    RecipePublic,
    RecipeSource,
    TrainingParams,
    missing_imagenet_file,
)

# Default architecture per task: the ones that train in minutes on a 2-core CPU box.
DEFAULT_ARCHITECTURES: dict[str, str] = {
    "classification": "resnet18",
    "detection": "fasterrcnn_efficientnet_lite0_fpn",
    "segmentation": "unet_mobilenet_v2",
}
_LR = {"classification": CLASSIFICATION_LR, "detection": DETECTION_LR,
       "segmentation": SEGMENTATION_LR}  # fmt: skip
# Optimiser steps a run aims at when the caller sets no epochs (the same for every task: the
# epoch count then scales inversely with the dataset, which is the point).
_TARGET_STEPS = {"classification": 1000, "detection": 1000, "segmentation": 2000}
# Segmentation's wall-clock budget per hardware class: the step target bounds fast hardware,
# this bounds a slow or shared one (the schedule anneals by whichever ends first).
_TIME_BUDGET_S: dict[tuple[str, Hardware], int] = {
    ("segmentation", "cpu"): 3600, ("segmentation", "cuda"): 3600,
}  # fmt: skip
_MIN_EPOCHS, _MAX_EPOCHS = 10, 100
_MIN_PATIENCE, _MAX_PATIENCE = 5, 20
# Input side caps by (task, hardware): a CPU pays for every pixel.
_SIZE_CAP: dict[tuple[str, Hardware], int] = {
    ("classification", "cpu"): 224, ("classification", "cuda"): 256,
    ("detection", "cpu"): 512, ("detection", "cuda"): 640,
    ("segmentation", "cpu"): 224, ("segmentation", "cuda"): 320,
}  # fmt: skip
_BATCH_CAP: dict[tuple[str, Hardware], int] = {
    ("classification", "cpu"): 32, ("classification", "cuda"): 64,
    ("detection", "cpu"): 4, ("detection", "cuda"): 8,
    ("segmentation", "cpu"): 16, ("segmentation", "cuda"): 32,
}  # fmt: skip
IMBALANCE_RATIO = 1.5
_TINY_SIDE = 64


@dataclass(frozen=True)
class Fingerprint:
    """What the recipe looks at in a dataset version (from its import statistics)."""

    task: str
    images_per_split: dict[str, int]
    train_class_counts: dict[str, int]
    median_width: float | None
    median_height: float | None
    validation_class_counts: dict[str, int] = dataclass_field(default_factory=dict)

    @classmethod
    def from_stats(cls, task: str, stats: Mapping[str, Any]) -> Fingerprint:
        size = stats.get("image_size") or {}
        counts = (stats.get("counts") or {}).get("train") or {}
        val_counts = (stats.get("counts") or {}).get("validation") or {}
        return cls(
            task=task,
            images_per_split={k: int(v) for k, v in (stats.get("images_per_split") or {}).items()},
            train_class_counts={k: int(v) for k, v in counts.items() if k != "background"},
            median_width=(size.get("width") or {}).get("median"),
            median_height=(size.get("height") or {}).get("median"),
            validation_class_counts={k: int(v) for k, v in val_counts.items()},
        )

    @property
    def n_train(self) -> int:
        return self.images_per_split.get("train", 0)

    @property
    def median_short_side(self) -> float | None:
        if self.median_width is None or self.median_height is None:
            return None
        return min(self.median_width, self.median_height)

    def public(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "images_per_split": self.images_per_split,
            "train_class_counts": self.train_class_counts,
            "validation_class_counts": self.validation_class_counts,
            "median_size": [self.median_width, self.median_height],
        }


@dataclass(frozen=True)
class Recipe:
    architecture: str
    start_from: str
    params: TrainingParams
    public: RecipePublic


def _round32(value: float) -> int:
    return max(32, int(round(value / 32.0)) * 32)


def _image_size(fp: Fingerprint, hardware: Hardware) -> tuple[int, str]:
    cap = _SIZE_CAP[(fp.task, hardware)]
    side = fp.median_short_side
    if side is None:
        return cap, f"{cap}: no image sizes recorded for this version; the {fp.task} default"
    if side >= cap:
        return cap, f"{cap}: median short side {side:g} px, capped at {cap} on {hardware}"
    if side < _TINY_SIDE:
        # Networks downsample 32x: tiny images get 2x, never the 8x of a fixed 224.
        size = min(cap, _round32(2 * side))
        return size, (
            f"{size}: median short side {side:g} px, upscaled 2x to a multiple of 32 "
            "(more costs time quadratically with no evidence it helps)"
        )
    size = min(cap, _round32(side))
    return size, f"{size}: median short side {side:g} px, rounded to a multiple of 32"


def _batch_size(fp: Fingerprint, hardware: Hardware) -> tuple[int, str]:
    cap = _BATCH_CAP[(fp.task, hardware)]
    # Keep at least ~8 optimiser steps per epoch on small sets; BatchNorm needs >= 2.
    fit = 2 ** max(1, int(math.log2(max(2, fp.n_train // 8))))
    batch = min(cap, fit)
    if batch < cap:
        return batch, (
            f"{batch}: {fp.n_train} training images; a smaller batch keeps ~8 steps per epoch"
        )
    return batch, f"{batch}: the {fp.task} batch on {hardware}"


def _epochs(fp: Fingerprint, batch: int) -> tuple[int, str]:
    steps_per_epoch = max(1, math.ceil(fp.n_train / batch))
    target = _TARGET_STEPS[fp.task]
    epochs = min(_MAX_EPOCHS, max(_MIN_EPOCHS, math.ceil(target / steps_per_epoch)))
    return epochs, (
        f"{epochs}: ~{target} optimiser steps at {steps_per_epoch} steps per epoch "
        f"(bounded {_MIN_EPOCHS}-{_MAX_EPOCHS}); early stopping ends it sooner"
    )


def _patience(epochs: int) -> tuple[int, str]:
    patience = min(_MAX_PATIENCE, max(_MIN_PATIENCE, math.ceil(epochs / 4)))
    return patience, f"{patience}: a quarter of {epochs} epochs (bounded 5-20)"


def _time_budget(task: str, hardware: Hardware) -> tuple[int, str]:
    budget = _TIME_BUDGET_S[(task, hardware)]
    return budget, (
        f"{budget}: at most {budget / 60:g} min of training on {hardware}; the learning rate "
        "anneals by then if the planned epochs are not done"
    )


def _class_weights(fp: Fingerprint) -> tuple[str, str]:
    counts = [c for c in fp.train_class_counts.values() if c > 0]
    if len(counts) < 2:
        return "none", "none: fewer than two classes counted in train"
    ratio = max(counts) / min(counts)
    if ratio > IMBALANCE_RATIO:
        return "balanced", f"balanced: largest/smallest training class = {ratio:.1f}"
    return "none", f"none: classes balanced (largest/smallest = {ratio:.1f})"


def _start(task: str, architecture: str) -> tuple[str, str]:
    missing = missing_imagenet_file(architecture)
    if missing is None:
        return "imagenet", f"imagenet: ImageNet weights for {architecture} are installed"
    return "random", f"random: no ImageNet weights installed for {architecture} ({missing.name})"


def derive(
    fp: Fingerprint,
    *,
    architecture: str | None,
    start_from: str | None,
    params: TrainingParams,
    caller_params: Set[str],
    hardware: Hardware = "cpu",
) -> Recipe:
    """The job's architecture, start and hyper-parameters, with a reason for each value.

    Args:
        fp: the dataset version's fingerprint.
        architecture / start_from: the caller's values, or None to derive them.
        params: the caller's parameters (defaults filled in by the schema).
        caller_params: the names of the parameters the caller set; only the others change.
        hardware: the hardware class of the training queue.
    """
    entries: list[RecipeEntry] = []

    def note(field: str, value: Any, reason: str, *, caller: bool) -> None:
        source: RecipeSource = "caller" if caller else "derived"
        entries.append(RecipeEntry(field=field, value=value, source=source,
                                   reason="set by the caller" if caller else reason))  # fmt: skip

    arch, why = recipe_rules.architecture(fp, DEFAULT_ARCHITECTURES[fp.task])
    arch = architecture or arch
    note("architecture", arch, why, caller=architecture is not None)
    if start_from is not None:
        start = start_from
        note("start_from", start, "", caller=True)
    else:
        start, why = _start(fp.task, arch)
        note("start_from", start, why, caller=False)

    derived: dict[str, tuple[Any, str]] = {}
    derived["image_size"] = _image_size(fp, hardware)
    cv = params.model_dump()["cross_validation"]
    if fp.task == "classification":
        derived["cross_validation"] = recipe_rules.cross_validation(fp)
        cv = cv if "cross_validation" in caller_params else derived["cross_validation"][0]
    # Each model of a cross-validation job trains on k-1 folds of train + validation.
    sized = replace(fp, images_per_split={
        **fp.images_per_split, "train": recipe_rules.fold_train_images(fp, cv)})  # fmt: skip
    batch, why = _batch_size(sized, hardware)
    derived["batch_size"] = (batch, why)
    effective_batch = params.batch_size if "batch_size" in caller_params else batch
    epochs, why = _epochs(sized, effective_batch)
    derived["epochs"] = (epochs, why)
    effective_epochs = params.epochs if "epochs" in caller_params else epochs
    derived["patience"] = _patience(effective_epochs)
    if fp.task == "segmentation":
        derived["lr"] = (_LR[fp.task], f"{_LR[fp.task]:g}: AdamW, linear warm-up over the first "
                         "5% of the run, then cosine per step to the step target or the time "
                         "budget, whichever comes first")  # fmt: skip
    else:
        derived["lr"] = (_LR[fp.task], f"{_LR[fp.task]:g}: AdamW, the {fp.task} default (cosine)")
    if fp.task == "classification":
        derived["class_weights"] = _class_weights(fp)
        derived["hflip_prob"] = (0.0, "0: laterality can carry meaning (chest films)")
        derived["finetune"] = recipe_rules.finetune(fp, start)
        derived["tta"] = ("auto", recipe_rules.TTA_REASON)
    elif fp.task == "segmentation":
        derived["hflip_prob"] = (0.5, "0.5: the mask flips with the image; no laterality label")
        derived["time_budget_s"] = _time_budget(fp.task, hardware)
    if params.cross_validation is not None and fp.task != "classification":
        raise InvalidRequest(f"cross_validation is for classification, not {fp.task}")
    # An explicit null is accepted (a pinned recipe repeats every field); a value is refused.
    if params.time_budget_s is not None and fp.task != "segmentation":
        raise InvalidRequest(
            f"time_budget_s is honoured by segmentation training only, not {fp.task}"
        )

    values = params.model_dump()
    for field, (value, reason) in derived.items():
        caller = field in caller_params
        if not caller:
            values[field] = value
        note(field, values[field], reason, caller=caller)
    return Recipe(
        architecture=arch,
        start_from=start,
        params=TrainingParams.model_validate(values),
        public=RecipePublic(hardware=hardware, fingerprint=fp.public(), entries=entries),
    )


__all__ = [
    "DEFAULT_ARCHITECTURES",
    "Fingerprint",
    "Recipe",
    "derive",
]
