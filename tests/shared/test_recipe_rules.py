"""Small-data recipe rules: pretrained start, head-only training, cross-validation, TTA."""

from __future__ import annotations

from typing import Any

import pytest

from shared.errors import InvalidRequest
from shared.recipes import Fingerprint, derive
from shared.schemas.training import TrainingParams, missing_imagenet_file


def _stats(train: dict[str, int], validation: dict[str, int], side: float = 300) -> dict[str, Any]:
    return {
        "images_per_split": {
            "train": sum(train.values()),
            "validation": sum(validation.values()),
            "test": sum(validation.values()),
        },
        "counts": {"train": train, "validation": validation},
        "image_size": {"width": {"median": side}, "height": {"median": side}},
    }


def _recipe(stats: dict[str, Any], task: str = "classification", **caller: Any) -> Any:
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


SMALL_VAL = _stats({"benign": 51, "malignant": 272}, {"benign": 5, "malignant": 33})


def test_a_small_validation_class_turns_on_grouped_cross_validation() -> None:
    recipe = _recipe(SMALL_VAL)
    assert recipe.params.cross_validation is not None
    assert recipe.params.cross_validation.folds == 5
    entry = _entry(recipe, "cross_validation")
    assert entry.source == "derived" and "only 5 'benign'" in entry.reason
    # Each fold model trains on 4/5 of train + validation: 288 images, 9 steps per epoch.
    assert "9 steps per epoch" in _entry(recipe, "epochs").reason


def test_enough_validation_cases_or_too_few_pooled_cases_keep_one_model() -> None:
    large_val = _recipe(_stats({"a": 400, "b": 400}, {"a": 100, "b": 100}))
    assert large_val.params.cross_validation is None
    assert "validation holds >= 20" in _entry(large_val, "cross_validation").reason
    # 24 of a class pooled is under 8 per held-out fold of 5: no folds (the tiny fixture).
    tiny = _recipe(_stats({"normal": 18, "pneumonia": 18}, {"normal": 6, "pneumonia": 6}))
    assert tiny.params.cross_validation is None
    assert "fewer than 40" in _entry(tiny, "cross_validation").reason


def test_small_sets_get_a_pretrained_start_and_head_only_training() -> None:
    recipe = _recipe(SMALL_VAL)
    assert recipe.start_from == "imagenet"
    assert missing_imagenet_file(recipe.architecture) is None
    assert recipe.params.finetune == "head"
    assert "frozen ImageNet features" in _entry(recipe, "finetune").reason
    assert recipe.params.tta == "auto"
    # Thousands of images: every weight trains.
    big = _recipe(_stats({"a": 2500, "b": 2500}, {"a": 500, "b": 500}))
    assert big.params.finetune == "full"
    # A random start has no features worth freezing.
    random = _recipe(SMALL_VAL, architecture="resnet18", start_from="random")
    assert random.params.finetune == "full"


def test_explicit_parameters_win_over_derived_ones() -> None:
    recipe = _recipe(
        SMALL_VAL,
        architecture="mobilenet_v3_small",
        start_from="random",
        params={"cross_validation": None, "finetune": "full", "tta": "none", "epochs": 3},
    )
    assert recipe.architecture == "mobilenet_v3_small"
    p = recipe.params
    assert (p.cross_validation, p.finetune, p.tta, p.epochs) == (None, "full", "none", 3)
    sources = {e.field: e.source for e in recipe.public.entries}
    for field in ("architecture", "start_from", "cross_validation", "finetune", "tta", "epochs"):
        assert sources[field] == "caller", field
    folds = _recipe(_stats({"a": 400, "b": 400}, {"a": 100, "b": 100}),
                    params={"cross_validation": {"folds": 3}})  # fmt: skip
    assert folds.params.cross_validation is not None
    assert folds.params.cross_validation.folds == 3
    assert _entry(folds, "cross_validation").source == "caller"


def test_cross_validation_is_refused_for_other_tasks() -> None:
    with pytest.raises(InvalidRequest, match="cross_validation is for classification"):
        _recipe(_stats({"n": 100}, {"n": 20}), task="segmentation",
                params={"cross_validation": {"folds": 3}})  # fmt: skip
