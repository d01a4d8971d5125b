"""End to end: `python -m trainer` on a tiny real npz writes a package the worker can serve;
and the package shipped in models/ separates real normal and pneumonia X-rays."""

from __future__ import annotations

import csv
import json
import shlex
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from shared.imaging.decode import decode_image
from shared.ml.architectures import build_classifier, load_state_dict
from shared.ml.presets import ClassificationPresetEval
from shared.schemas.models import ModelCard
from trainer import classification_scores as M
from trainer.__main__ import get_args_parser, main
from trainer.card import render_readme

REPO_ROOT = Path(__file__).resolve().parents[2]
SHIPPED = REPO_ROOT / "models" / "pneumonia-resnet18"
FIXTURES = REPO_ROOT / "tests" / "fixtures" / "pneumoniamnist"


@dataclass(frozen=True)
class XrayFixtures:
    paths: list[Path]
    images: np.ndarray  # (N, 28, 28) uint8
    labels: np.ndarray  # (N,) 0 = normal, 1 = pneumonia


@pytest.fixture(scope="module")
def xrays() -> XrayFixtures:
    """Real PneumoniaMNIST test PNGs listed in labels.csv (columns file,label,test_index)."""
    with open(FIXTURES / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    paths = [FIXTURES / r["file"] for r in rows]
    images = np.stack([np.asarray(Image.open(p).convert("L")) for p in paths])
    labels = np.array([int(r["label"]) for r in rows], dtype=np.int64)
    assert set(labels.tolist()) == {0, 1}, "fixtures need both classes"
    return XrayFixtures(paths, images, labels)


def _serve(package: Path, pixels: list[np.ndarray]) -> tuple[ModelCard, np.ndarray]:
    """Positive-class probabilities exactly as the worker computes them, one image at a time."""
    card = ModelCard.model_validate_json((package / "card.json").read_text())
    net = build_classifier(card.architecture, len(card.labels))
    net.load_state_dict(load_state_dict(str(package / "weights.pt")), strict=True)
    net.eval()
    preset = ClassificationPresetEval(card.input)
    assert card.positive_label is not None
    pos = card.labels.index(card.positive_label)
    with torch.inference_mode():
        probs = [net(preset(p).unsqueeze(0)).softmax(1)[0, pos].item() for p in pixels]
    return card, np.array(probs)


def _tiny_npz(xrays: XrayFixtures, path: Path) -> None:
    """Train on all 8 images (x8), validate on half of each class, test on the other half."""
    images, labels = xrays.images, xrays.labels
    idx = np.arange(len(labels))
    rank = np.array([np.sum(labels[:i] == labels[i]) for i in idx])  # order within class
    val, test = idx[rank % 2 == 0], idx[rank % 2 == 1]
    train = np.tile(idx, 8)
    np.savez(
        path,
        **{f"{s}_images": images[i] for s, i in (("train", train), ("val", val), ("test", test))},
        **{
            f"{s}_labels": labels[i, None]
            for s, i in (("train", train), ("val", val), ("test", test))
        },
    )


def test_train_writes_a_servable_package(
    xrays: XrayFixtures, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    torch.set_num_threads(2)
    data = tmp_path / "tiny.npz"
    _tiny_npz(xrays, data)
    argv = ["--data-path", str(data), "--output-dir", str(tmp_path / "models"), "--epochs", "1"]
    argv += ["--batch-size", "16", "--input-size", "32", "--threads", "2", "--name", "tiny-rn18"]
    main(get_args_parser().parse_args(argv))
    assert "epoch   1/1" in capsys.readouterr().out

    package = tmp_path / "models" / "tiny-rn18"
    assert {p.name for p in package.iterdir()} == {"card.json", "weights.pt", "README.md"}
    card = ModelCard(**json.loads((package / "card.json").read_text()))
    assert card.labels == ["normal", "pneumonia"]
    assert card.positive_label == "pneumonia"
    assert card.input.native_size == 28 and card.input.size == 32
    assert card.operating_point is not None and "validation" in card.operating_point.source
    # The recorded command parses back to the same options (it reproduces the run).
    assert card.training is not None
    cmd = shlex.split(card.training.command)
    assert cmd[:3] == ["python", "-m", "trainer"]
    assert vars(get_args_parser().parse_args(cmd[3:]))["input_size"] == 32

    state = torch.load(package / "weights.pt", weights_only=True)
    assert all(v.dtype == torch.float16 for v in state.values() if v.is_floating_point())

    # The card's test metrics are recomputable from the saved weights via the serving path.
    with np.load(data) as npz:
        pixels = [im.astype(np.float32) / 255 for im in npz["test_images"]]
        labels = npz["test_labels"].reshape(-1)
    _, probs = _serve(package, pixels)
    test = card.metrics["test"]
    assert test["n"] == len(labels)
    assert test["auroc"] == pytest.approx(M.auroc(probs, labels), abs=1e-4)
    for key, threshold in (("at_threshold_0.5", 0.5), ("at_operating_point", None)):
        t = card.operating_point.threshold if threshold is None else threshold
        assert test[key]["confusion_matrix"] == M.confusion_matrix(probs, labels, t).tolist()
    readme = (package / "README.md").read_text()
    assert "ResNet-18 (28)" in readme and card.training.command in readme


def test_shipped_model_separates_real_xrays(xrays: XrayFixtures) -> None:
    """The committed weights, fed real PNG bytes through the worker's decoder, rank
    pneumonia above normal."""
    pixels = [decode_image(p.read_bytes(), max_pixels=10**6).pixels for p in xrays.paths]
    card, probs = _serve(SHIPPED, pixels)
    assert card.name == SHIPPED.name
    pneumonia, normal = probs[xrays.labels == 1], probs[xrays.labels == 0]
    assert pneumonia.mean() > normal.mean(), (pneumonia, normal)
    assert M.auroc(probs, xrays.labels) >= 0.75, probs


def test_shipped_card_is_consistent() -> None:
    card = ModelCard.model_validate_json((SHIPPED / "card.json").read_text())
    test = card.metrics["test"]
    assert test["n"] == 624 and test["n_positive"] == 390
    assert card.operating_point is not None
    assert test["at_operating_point"]["threshold"] == pytest.approx(card.operating_point.threshold)
    assert card.data is not None and card.data.licence == "CC BY 4.0"
    # The README is rendered from the card, not edited by hand.
    assert (SHIPPED / "README.md").read_text() == render_readme(card)
