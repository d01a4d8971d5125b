"""Detectors by name: classes, grayscale cards, pretrained starting points, strict loading."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from shared.ml.detection import (
    DETECTORS,
    DetectionPresetEval,
    build_detector,
    filter_detections,
    load_detector_state,
)
from shared.ml.pretrained import PretrainedWeightsMissing
from shared.ml_catalog import architectures_for, check_weights
from shared.schemas.models import InputSpec, ModelCard
from shared.state_dict_shapes import TensorInfo

LABELS = ["RBC", "WBC", "Platelets"]
GRAY = InputSpec(size=128, channels=1, mean=[0.5], std=[0.25], resize="letterbox")


def _card(architecture: str, spec: InputSpec = GRAY) -> ModelCard:
    return ModelCard(
        name="det-test", task="detection", architecture=architecture, labels=LABELS, input=spec
    )


@pytest.mark.parametrize("architecture", sorted(DETECTORS))
def test_every_detector_builds_with_background_class_and_passes_upload_checks(
    architecture: str,
) -> None:
    model = build_detector(architecture, LABELS, GRAY)
    state = model.state_dict()
    # The catalogue the API checks uploads with agrees with the real state dict.
    check_weights(
        _card(architecture), {k: TensorInfo(tuple(v.shape), "f") for k, v in state.items()}
    )
    # Grayscale card: the model's own normalisation is the single value repeated for RGB.
    assert model.transform.image_mean == [0.5] * 3 and model.transform.min_size == (128,)
    assert architecture in architectures_for("detection")


def test_grayscale_image_is_letterboxed_and_detected() -> None:
    model = build_detector("fasterrcnn_efficientnet_lite0_fpn", LABELS, GRAY).eval()
    image, geometry = DetectionPresetEval(GRAY)(np.random.default_rng(0).random((60, 100)))
    assert image.shape == (3, 128, 128)
    assert (geometry.resized_width, geometry.resized_height, geometry.pad_top) == (128, 77, 25)
    # Padding is the mean, i.e. exactly zero after the model's normalisation.
    assert torch.all(image[:, :25] == 0.5)
    with torch.inference_mode():
        (out,) = model([image])
    assert set(out) == {"boxes", "scores", "labels"}


def test_pretrained_lite0_backbone_loads_into_an_inference_build() -> None:
    spec = InputSpec(size=128, mean=[0.5] * 3, std=[0.5] * 3, resize="letterbox")
    trained = build_detector(
        "fasterrcnn_efficientnet_lite0_fpn", LABELS, spec, pretrained_backbone=True
    )
    # ImageNet weights, frozen batch norm (no num_batches_tracked), frozen stem.
    assert not trained.backbone.body._conv_stem.weight.requires_grad
    fresh = build_detector("fasterrcnn_efficientnet_lite0_fpn", LABELS, spec)
    load_detector_state(fresh, trained.state_dict())
    x = torch.rand(3, 128, 128)
    with torch.inference_mode():
        a, b = trained.eval()([x])[0], fresh.eval()([x])[0]
    torch.testing.assert_close(a["scores"], b["scores"])


def test_missing_resnet50_weights_name_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(PretrainedWeightsMissing, match="resnet50-0676ba61.pth"):
        build_detector("retinanet_resnet50_fpn", LABELS, GRAY, pretrained_backbone=True)


def test_filter_detections_applies_threshold_nms_and_cap() -> None:
    raw = {
        "boxes": torch.tensor([[0, 0, 10, 10], [1, 1, 10, 10], [50, 50, 60, 60], [0, 0, 10, 10.0]]),
        "scores": torch.tensor([0.9, 0.8, 0.7, 0.2]),
        "labels": torch.tensor([1, 1, 2, 2]),
    }
    out = filter_detections(raw, score_threshold=0.3, nms_iou=0.5, max_detections=10)
    # Box 1 overlaps box 0 (IoU 0.81, same label): suppressed; box 3 is below the threshold.
    assert out["scores"].tolist() == pytest.approx([0.9, 0.7])
    out = filter_detections(raw, score_threshold=0.0, nms_iou=0.9, max_detections=2)
    assert out["scores"].tolist() == pytest.approx([0.9, 0.8])
