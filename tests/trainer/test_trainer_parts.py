"""Trainer building blocks: npz dataset, train preset, loss weights, operating point."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from shared.ml.presets import ClassificationPresetEval
from shared.schemas.models import InputSpec
from trainer.card import choose_operating_point
from trainer.data import NpzClassification
from trainer.engine import make_criterion
from trainer.presets import ClassificationPresetTrain

SPEC = InputSpec(size=48, channels=3, mean=[0.5] * 3, std=[0.25] * 3, native_size=28)


def _npz(path: Path) -> Path:
    rng = np.random.default_rng(0)
    np.savez(
        path,
        train_images=rng.integers(0, 256, (6, 28, 28), dtype=np.uint8),
        train_labels=np.array([[0], [1], [1], [1], [0], [1]], dtype=np.uint8),
    )
    return path


def test_npz_dataset_scales_to_unit_range(tmp_path: Path) -> None:
    ds = NpzClassification(_npz(tmp_path / "d.npz"), "train", ["normal", "pneumonia"])
    image, label = ds[1]
    assert image.shape == (1, 28, 28) and image.dtype == torch.float32
    assert label == 1
    assert torch.equal(image[0], torch.from_numpy(ds.images[1]).float() / 255)
    assert ds.class_counts() == [2, 4]
    with pytest.raises(ValueError, match="outside"):
        NpzClassification(tmp_path / "d.npz", "train", ["only-one"])


def test_train_preset_ends_in_the_eval_preset() -> None:
    image = torch.rand(1, 28, 28)
    # With augmentation switched off, training input is exactly the served input.
    plain = ClassificationPresetTrain(
        SPEC, degrees=0, translate=0, scale=(1, 1), brightness=0, contrast=0
    )
    torch.testing.assert_close(plain(image), ClassificationPresetEval(SPEC)(image))
    torch.manual_seed(0)
    out = ClassificationPresetTrain(SPEC)(image.numpy()[0])
    assert out.shape == (3, 48, 48)


def test_no_horizontal_flip_unless_asked() -> None:
    names = [type(t).__name__ for t in ClassificationPresetTrain(SPEC).augment.transforms]
    assert "RandomHorizontalFlip" not in names
    flip = ClassificationPresetTrain(SPEC, hflip_prob=0.5).augment.transforms
    assert "RandomHorizontalFlip" in [type(t).__name__ for t in flip]


def test_balanced_class_weights() -> None:
    weight = make_criterion([1, 3]).weight
    assert weight is not None
    torch.testing.assert_close(weight, torch.tensor([2.0, 2.0 / 3.0]))
    assert make_criterion(None).weight is None


def test_operating_point_records_its_source() -> None:
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.3, 0.2, 0.1])
    labels = np.array([1, 1, 0, 1, 1, 0, 0])
    op = choose_operating_point(
        scores, labels, method="sensitivity", target_sensitivity=0.75, split="validation"
    )
    # 0.6 reaches the target; the threshold moves to the middle of the gap to the next score.
    assert op.threshold == pytest.approx(0.45) and op.sensitivity == 0.75
    assert op.source.startswith("validation split")
    op = choose_operating_point(
        scores, labels, method="youden", target_sensitivity=0.95, split="validation"
    )
    assert op.threshold == pytest.approx(0.25) and op.specificity == pytest.approx(2 / 3, abs=1e-4)
    assert "Youden" in op.source
