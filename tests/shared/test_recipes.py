"""Dataset fingerprint -> training recipe rules (shared.recipes), without a server."""

from __future__ import annotations

from typing import Any

import pytest

from shared.errors import InvalidRequest
from shared.recipes import Fingerprint, derive
from shared.schemas.training import TrainingParams


def _stats(n_train: int, side: float, counts: dict[str, int]) -> dict[str, Any]:
    return {
        "images_per_split": {"train": n_train, "validation": n_train // 5, "test": n_train // 5},
        "counts": {"train": counts},
        "image_size": {"width": {"median": side}, "height": {"median": side}},
    }


def _recipe(task: str, stats: dict[str, Any], **caller: Any) -> Any:
    params = TrainingParams.model_validate(caller.pop("params", {}))
    return derive(
        Fingerprint.from_stats(task, stats),
        architecture=caller.get("architecture"),
        start_from=caller.get("start_from"),
        params=params,
        caller_params=params.model_fields_set,
    )


def _entry(recipe: Any, field: str) -> Any:
    return next(e for e in recipe.public.entries if e.field == field)


def test_tiny_images_are_not_upscaled_eightfold() -> None:
    # PneumoniaMNIST-like: 28 px images; a fixed 224 would be 8x.
    recipe = _recipe("classification", _stats(4708, 28, {"normal": 1214, "pneumonia": 3494}))
    assert recipe.params.image_size == 64
    assert "median short side 28" in _entry(recipe, "image_size").reason
    assert recipe.params.class_weights == "balanced"  # 2.9:1


def test_large_images_are_capped_and_balanced_classes_unweighted() -> None:
    recipe = _recipe("classification", _stats(2000, 1024, {"a": 1000, "b": 990}))
    assert recipe.params.image_size == 224
    assert recipe.params.class_weights == "none"


def test_epochs_follow_optimiser_steps() -> None:
    small = _recipe("segmentation", _stats(458, 300, {"nodule": 458}))
    large = _recipe("segmentation", _stats(20000, 300, {"nodule": 20000}))
    # 458 images at batch 16 = 29 steps per epoch -> ~2000 segmentation steps need 69 epochs.
    assert small.params.batch_size == 16 and small.params.epochs == 69
    assert large.params.epochs == 10  # the floor: 1250 steps per epoch
    assert small.params.patience == 18 and large.params.patience == 5
    # Classification aims at half the steps: its head converges sooner than a U-Net decoder.
    cls = _recipe("classification", _stats(458, 300, {"a": 229, "b": 229}))
    assert cls.params.batch_size == 32 and cls.params.epochs == 67  # 15 steps/epoch, ~1000


def test_segmentation_gets_a_time_budget_and_a_warm_up_schedule() -> None:
    recipe = _recipe("segmentation", _stats(458, 300, {"nodule": 458}))
    assert recipe.params.time_budget_s == 3600
    assert "anneals by then" in _entry(recipe, "time_budget_s").reason
    assert "warm-up" in _entry(recipe, "lr").reason
    caller = _recipe("segmentation", _stats(458, 300, {"n": 458}), params={"time_budget_s": 600})
    assert caller.params.time_budget_s == 600
    assert _entry(caller, "time_budget_s").source == "caller"
    cls = _recipe("classification", _stats(458, 300, {"a": 229, "b": 229}))
    assert cls.params.time_budget_s is None
    assert all(e.field != "time_budget_s" for e in cls.public.entries)


def test_a_time_budget_for_other_tasks_is_refused() -> None:
    pinned = _recipe("classification", _stats(40, 64, {"a": 20, "b": 20}),
                     params={"time_budget_s": None})  # fmt: skip
    assert pinned.params.time_budget_s is None  # an explicit null (a pinned recipe) is fine
    with pytest.raises(InvalidRequest, match="segmentation training only"):
        _recipe("classification", _stats(40, 64, {"a": 20, "b": 20}),
                params={"time_budget_s": 600})  # fmt: skip


def test_small_datasets_get_smaller_batches() -> None:
    recipe = _recipe("classification", _stats(40, 64, {"a": 20, "b": 20}))
    assert recipe.params.batch_size == 4
    assert "40 training images" in _entry(recipe, "batch_size").reason


def test_segmentation_defaults_flip_and_start_pretrained() -> None:
    recipe = _recipe("segmentation", _stats(458, 300, {"nodule": 458}))
    assert recipe.architecture == "unet_mobilenet_v2"
    assert recipe.start_from == "imagenet"  # the MobileNetV2 wheel is a dependency
    assert recipe.params.hflip_prob == 0.5
    assert _recipe("classification", _stats(458, 300, {"a": 9, "b": 9})).params.hflip_prob == 0


def test_explicit_values_always_win() -> None:
    recipe = _recipe(
        "segmentation",
        _stats(458, 300, {"nodule": 458}),
        architecture="unet_resnet34",
        start_from="random",
        params={"epochs": 3, "image_size": 96, "hflip_prob": 0.0, "batch_size": 8},
    )
    assert (recipe.architecture, recipe.start_from) == ("unet_resnet34", "random")
    p = recipe.params
    assert (p.epochs, p.image_size, p.hflip_prob, p.batch_size) == (3, 96, 0.0, 8)
    assert p.patience == 5  # derived from the caller's 3 epochs, not from the derived 69
    sources = {e.field: e.source for e in recipe.public.entries}
    assert {f for f, s in sources.items() if s == "caller"} == {
        "architecture", "start_from", "epochs", "image_size", "hflip_prob", "batch_size",
    }  # fmt: skip
    assert sources["patience"] == "derived"


def test_missing_weights_mean_a_random_start_with_the_reason() -> None:
    recipe = _recipe("classification", _stats(100, 64, {"a": 50, "b": 50}), architecture="resnet18")
    entry = _entry(recipe, "start_from")
    if recipe.start_from == "random":  # resnet18's torch.hub file is not installed here
        assert "no ImageNet weights installed for resnet18" in entry.reason
    else:
        assert "are installed" in entry.reason


def test_no_size_statistics_fall_back_to_the_task_default() -> None:
    recipe = _recipe("detection", {"images_per_split": {"train": 8}})
    assert recipe.params.image_size == 512
    assert recipe.architecture == "fasterrcnn_efficientnet_lite0_fpn"
    assert recipe.start_from == "imagenet"
