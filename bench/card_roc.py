"""Backfill a model card's validation ROC from its shipped weights (weights untouched).

    .venv/bin/python -m bench.card_roc models/pneumonia-resnet18 \
        ../shared/data/pneumoniamnist/pneumoniamnist_28_full_reconstructed.npz [--write]

Scores the validation split exactly as the worker would (the card's input spec through
shared.ml.presets, fp32, CPU) and stores every distinct threshold with its validation
sensitivity and specificity as `validation_roc`. Deterministic: a rerun writes the same.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from shared.ml.architectures import build_classifier, load_state_dict
from shared.ml.presets import ClassificationPresetEval
from shared.registry import CARD_FILE, WEIGHTS_FILE, read_package_card
from shared.storage import sha256_file
from trainer.classification_scores import roc_curve


@torch.inference_mode()
def validation_scores(package: Path, images: np.ndarray, batch: int = 256) -> np.ndarray:
    card = read_package_card(package)
    network = build_classifier(card.architecture, len(card.labels))
    network.load_state_dict(load_state_dict(str(package / WEIGHTS_FILE)), strict=True)
    network.eval()
    preset = ClassificationPresetEval(card.input)
    assert card.positive_label is not None
    positive = card.labels.index(card.positive_label)
    scores = []
    for start in range(0, len(images), batch):
        pixels = images[start : start + batch].astype(np.float32) / 255.0
        inputs = torch.stack([preset(p) for p in pixels])
        scores.append(torch.softmax(network(inputs).float(), dim=1)[:, positive])
    return torch.cat(scores).numpy().astype(np.float64)


def roc_points(scores: np.ndarray, labels: np.ndarray) -> list[dict[str, float]]:
    fpr, tpr, thresholds = roc_curve(scores, labels)
    return [
        {"threshold": round(float(t), 6), "sensitivity": round(float(s), 4),
         "specificity": round(float(1 - f), 4)}
        for f, s, t in zip(fpr, tpr, thresholds, strict=True)
        if np.isfinite(t)
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("package", type=Path, help="model folder with card.json + weights.pt")
    parser.add_argument("data", type=Path, help="npz with val_images / val_labels")
    parser.add_argument("--write", action="store_true", help="update card.json in place")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    torch.set_num_threads(2)
    data = np.load(args.data)
    images, labels = data["val_images"], data["val_labels"].reshape(-1)
    sha_before = sha256_file(args.package / WEIGHTS_FILE)
    points = roc_points(validation_scores(args.package, images), labels)
    card_path = args.package / CARD_FILE
    card = json.loads(card_path.read_text())
    op = card.get("operating_point") or {}
    print(f"{len(points)} ROC points from {len(labels)} validation images")
    for target in (0.9, 0.95, 0.99):
        best = max((p for p in points if p["sensitivity"] >= target), key=lambda p: p["threshold"])
        print(f"  target sensitivity {target}: {best}")
    print(f"  card operating point: {op.get('threshold')} sens {op.get('sensitivity')}")
    if args.write:
        # Keep key order (validation_roc right after operating_point) and formatting.
        ordered: dict[str, object] = {}
        for key, value in card.items():
            if key != "validation_roc":
                ordered[key] = value
            if key == "operating_point":
                ordered["validation_roc"] = points
        card_path.write_text(json.dumps(ordered, indent=2) + "\n")
        print(f"wrote {card_path}")
    assert sha256_file(args.package / WEIGHTS_FILE) == sha_before, "weights must not change"


if __name__ == "__main__":
    main()
