"""Detection training data: VOC parsing, degenerate boxes, letterbox + flips keep boxes on the
objects, one short training step and evaluation on the committed BCCD fixture."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from shared.ml.detection import build_detector
from shared.schemas.models import InputSpec
from trainer.detection import (
    DetectionDataset,
    DetectionItem,
    DetectionPresetEvalBoxes,
    DetectionPresetTrain,
    collate,
    evaluate,
    read_voc,
    train_one_epoch,
)

BCCD = Path(__file__).parents[1] / "fixtures" / "datasets" / "bccd_tiny"
LABELS = ["RBC", "WBC", "Platelets"]
MEAN = [0.5, 0.5, 0.5]


@pytest.fixture
def voc(tmp_path: Path) -> Path:
    """The fixture with an ImageSets split file (it ships Annotations and JPEGImages only)."""
    (tmp_path / "ImageSets" / "Main").mkdir(parents=True)
    stems = sorted(p.stem for p in (BCCD / "JPEGImages").glob("*.jpg"))
    (tmp_path / "ImageSets" / "Main" / "all.txt").write_text("\n".join(stems))
    for sub in ("Annotations", "JPEGImages"):
        (tmp_path / sub).symlink_to(BCCD / sub)
    return tmp_path


def test_voc_items_and_degenerate_boxes_dropped(voc: Path) -> None:
    items = read_voc(voc, "all", LABELS)
    assert len(items) == 8 and sum(len(i.boxes) for i in items) == 143
    assert items[0].width == 640 and items[0].height == 480
    broken = DetectionItem(
        items[0].source,
        [{"label": "RBC", "box": [504, 337, 504, 337]}, {"label": "WBC", "box": [10, 20, 90, 120]}],
        640,
        480,
    )
    ds = DetectionDataset([broken], LABELS, DetectionPresetEvalBoxes(320, MEAN))
    image, target = ds[0]
    assert image.shape == (3, 320, 320)
    # 640x480 -> 320x240 centred: scale 0.5, 40 px of padding on top.
    assert target["labels"].tolist() == [2]
    torch.testing.assert_close(target["boxes"], torch.tensor([[5.0, 50.0, 45.0, 100.0]]))


def test_unknown_label_is_refused(voc: Path) -> None:
    with pytest.raises(ValueError, match="not one of"):
        read_voc(voc, "all", ["RBC", "WBC"])


def test_flips_move_boxes_with_the_pixels() -> None:
    # A white square on black: after any flips the box must still frame the white pixels.
    pixels = np.zeros((100, 200, 3), dtype=np.float32)
    pixels[10:30, 20:60] = 1.0
    item = DetectionItem(b"", [{"label": "WBC", "box": [20, 10, 60, 30]}], 200, 100)
    preset = DetectionPresetTrain(200, [0.0] * 3, photometric=False)
    ds = DetectionDataset([item], LABELS, preset, read=lambda _: pixels)
    random.seed(1)
    for _ in range(6):
        image, target = ds[0]
        x1, y1, x2, y2 = target["boxes"][0].round().int().tolist()
        inside = image[0, y1:y2, x1:x2]
        assert float(inside.mean()) > 0.95
        assert float(image[0].sum()) == pytest.approx(float(inside.sum()), rel=0.02)


def test_one_epoch_trains_and_evaluates(voc: Path) -> None:
    torch.manual_seed(0)
    spec = InputSpec(size=128, mean=MEAN, std=[0.25] * 3, resize="letterbox")
    model = build_detector("fasterrcnn_efficientnet_lite0_fpn", LABELS, spec)
    items = read_voc(voc, "all", LABELS)[:4]
    train = DataLoader(
        DetectionDataset(items, LABELS, DetectionPresetTrain(128, MEAN)),
        batch_size=2,
        collate_fn=collate,
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9)
    steps: list[float] = []
    loss = train_one_epoch(
        model, optimizer, train, torch.device("cpu"), on_step=lambda _, v: steps.append(v)
    )
    assert len(steps) == 2 and loss == pytest.approx(sum(steps) / 2)
    val = DataLoader(
        DetectionDataset(items, LABELS, DetectionPresetEvalBoxes(128, MEAN)),
        batch_size=2,
        collate_fn=collate,
    )
    result = evaluate(model, val, torch.device("cpu"), LABELS)
    assert set(result) == {"map_50", "map_40_75", "ap_50_per_class"}
    assert 0.0 <= float(result["map_50"]) <= 1.0  # type: ignore[arg-type]
    assert set(result["ap_50_per_class"]) == set(LABELS)  # type: ignore[arg-type]
