"""Recipe rules for small classification datasets: pretrained start, head-only, folds, TTA.

Stated in terms of counts, not of any one dataset:

- a few hundred training images cannot teach a network its features: when the caller names
  no architecture and the default has no ImageNet weights installed, the first architecture
  whose weights are installed is used instead (a pretrained start), and below
  ``HEAD_ONLY_BELOW`` training images only its classification head is trained on the frozen
  features (the standard small-data transfer recipe; it also costs one backbone pass per
  image instead of one per image and epoch);
- a validation split with fewer than ``MIN_VALIDATION_PER_CLASS`` images of some class makes
  early stopping and the operating point noise: train and validation are then pooled into
  ``FOLDS``-fold cross-validation, provided every held-out fold would still hold
  ``MIN_HELD_OUT_PER_CLASS`` images of every class;
- flip averaging at test time is measured on validation and kept only if it does not lower
  validation AUROC (``tta: auto``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from shared.schemas.training import missing_imagenet_file

# Classification architectures tried, in order, for a pretrained start.
PRETRAINED_PREFERENCE = ("resnet18", "efficientnet_lite0")
HEAD_ONLY_BELOW = 1000
MIN_VALIDATION_PER_CLASS = 20
MIN_HELD_OUT_PER_CLASS = 8
FOLDS = 5


class _Fingerprint(Protocol):
    task: str
    images_per_split: dict[str, int]
    train_class_counts: dict[str, int]
    validation_class_counts: dict[str, int]

    @property
    def n_train(self) -> int: ...


def small_data(fp: _Fingerprint) -> bool:
    return fp.task == "classification" and fp.n_train < HEAD_ONLY_BELOW


def architecture(fp: _Fingerprint, default: str) -> tuple[str, str]:
    """The classification architecture when the caller names none."""
    if not small_data(fp) or missing_imagenet_file(default) is None:
        return default, f"{default}: the {fp.task} default that trains in minutes on a CPU"
    for name in PRETRAINED_PREFERENCE:
        if missing_imagenet_file(name) is None:
            return name, (
                f"{name}: {fp.n_train} training images (< {HEAD_ONLY_BELOW}) need a pretrained "
                f"start; {default}'s ImageNet weights are not installed, {name}'s are"
            )
    return default, f"{default}: the {fp.task} default; no ImageNet weights are installed"


def finetune(fp: _Fingerprint, start_from: str) -> tuple[str, str]:
    if small_data(fp) and start_from == "imagenet":
        return "head", (
            f"head: {fp.n_train} training images (< {HEAD_ONLY_BELOW}) are too few to move "
            "millions of pretrained weights; the frozen ImageNet features feed a trained head"
        )
    if fp.task != "classification":
        return "full", "full: every weight trains"
    why = "a random start" if start_from == "random" else f"{fp.n_train} training images"
    return "full", f"full: {why}; every weight trains"


def cross_validation(fp: _Fingerprint) -> tuple[dict[str, int] | None, str]:
    """Folds for small validation splits, or None, with the reason."""
    if fp.task != "classification":
        return None, "none: cross-validation is for classification"
    val = fp.validation_class_counts
    if not val:
        return None, "none: no validation class counts recorded for this version"
    label, smallest = min(val.items(), key=lambda kv: (kv[1], kv[0]))
    if smallest >= MIN_VALIDATION_PER_CLASS:
        return None, (
            f"none: validation holds >= {MIN_VALIDATION_PER_CLASS} images of every class "
            f"(fewest: {smallest} {label!r})"
        )
    pooled = {c: fp.train_class_counts.get(c, 0) + val.get(c, 0) for c in fp.train_class_counts}
    fewest_label, fewest = min(pooled.items(), key=lambda kv: (kv[1], kv[0]))
    need = FOLDS * MIN_HELD_OUT_PER_CLASS
    if fewest < need:
        return None, (
            f"none: validation holds only {smallest} {label!r}, but train + validation hold "
            f"{fewest} {fewest_label!r}, fewer than {need} ({MIN_HELD_OUT_PER_CLASS} per "
            f"held-out fold of {FOLDS})"
        )
    return {"folds": FOLDS}, (
        f"{FOLDS} folds: validation holds only {smallest} {label!r} images "
        f"(< {MIN_VALIDATION_PER_CLASS}), too few to stop early or set a threshold on; "
        f"train + validation pooled, grouped by patient, give each held-out fold ~"
        f"{fewest // FOLDS} {fewest_label!r}; the test split stays locked"
    )


def fold_train_images(fp: _Fingerprint, cv: Mapping[str, Any] | None) -> int:
    """Images each model trains on: the training split, or k-1 folds of train + validation."""
    if not cv:
        return fp.n_train
    pooled = fp.n_train + fp.images_per_split.get("validation", 0)
    return pooled * (int(cv["folds"]) - 1) // int(cv["folds"])


TTA_REASON = (
    "auto: flip averaging is measured on validation and served only if it does not lower "
    "validation AUROC"
)
