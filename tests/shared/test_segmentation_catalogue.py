"""Torch-free upload validation knows the segmentation U-Nets (shapes from real builds)."""

from __future__ import annotations

import pytest

from shared.errors import InvalidModelPackage
from shared.ml.segmentation import build_segmenter
from shared.ml_catalog import architectures_for, check_weights
from shared.schemas.models import ModelCard
from shared.state_dict_shapes import TensorInfo


def _card(labels: list[str]) -> ModelCard:
    return ModelCard.model_validate(
        {
            "name": "seg-card",
            "task": "segmentation",
            "architecture": "unet_mobilenet_v2",
            "labels": labels,
            "input": {"size": 64, "channels": 3, "mean": [0.5] * 3, "std": [0.2] * 3,
                      "resize": "letterbox"},
        }
    )  # fmt: skip


def test_catalogue_lists_the_builders_and_checks_the_head() -> None:
    assert architectures_for("segmentation") == ["unet_mobilenet_v2", "unet_resnet34"]
    state = build_segmenter("unet_mobilenet_v2", 3).state_dict()
    tensors = {k: TensorInfo(tuple(v.shape), str(v.dtype)) for k, v in state.items()}
    check_weights(_card(["background", "wbc", "platelets"]), tensors)
    with pytest.raises(InvalidModelPackage, match="outputs"):
        check_weights(_card(["background", "nodule"]), tensors)
