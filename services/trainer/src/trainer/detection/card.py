"""Model card (card.json + README.md) for a detector."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from shared.schemas.models import DataProvenance, InputSpec, ModelCard, TrainingRecord
from trainer.card_sections import card_head, card_tail, join_lines, labels_cell

BCCD_DATA = DataProvenance(
    source="BCCD (Shenggan/BCCD_Dataset @ d272fb14cdff6e473fafeeeba32aba5f560e9e43): 364 "
    "640x480 JPEGs of stained peripheral blood smears with Pascal VOC boxes",
    licence="MIT (Copyright (c) 2017 shenggan)",
    citation="github.com/Shenggan/BCCD_Dataset; re-organised from cosmicad/dataset and "
    "akshaylamba/all_CELL_data",
    split="the repository's ImageSets/Main: train 205, val 87, test 72 images; two "
    "zero-area RBC boxes (BloodImage_00338, _00343) dropped",
)
BCCD_BASELINES = [
    {
        "method": "Joshi et al. CNN (own split and protocol, 640x480)",
        "map_50": 0.8535,
        "source": "Uniciencia 36(1), 2022, doi:10.15359/ru.36-1.28",
    }
]


def write_detection_card(
    out: Path,
    *,
    name: str,
    architecture: str,
    labels: list[str],
    spec: InputSpec,
    metrics: dict[str, Any],
    training: dict[str, Any],
    data: DataProvenance = BCCD_DATA,
) -> ModelCard:
    """Validate and write card.json and README.md for a detection model package."""
    card = ModelCard(
        name=name,
        task="detection",
        architecture=architecture,
        labels=labels,
        input=spec,
        description=(
            "Detects red blood cells (RBC), white blood cells (WBC) and platelets in "
            "light-microscope images of stained peripheral blood smears; returns boxes in the "
            "input image's pixel coordinates with a label and score. Faster R-CNN with an "
            "EfficientNet-Lite0 + FPN backbone started from ImageNet weights, trained by this "
            "project (`python -m trainer.detection.train_bccd`)."
        ),
        intended_use=(
            "Research, teaching and demonstration of cell detection and counting on blood "
            "smear images similar to BCCD. Not a medical device; not for clinical use, "
            "diagnosis or reporting blood counts."
        ),
        limitations=(
            "Trained on 205 images from one source (one stain, one microscope/camera, "
            "640x480). Platelets (small, often clumped) are the hardest class; touching or "
            "overlapping RBCs are sometimes merged or missed, and BCCD itself leaves some RBCs "
            "unannotated, which depresses RBC precision. Other magnifications, stains or "
            "scanners are untested. Scores are not calibrated probabilities."
        ),
        data=data,
        training=TrainingRecord(**training),
        metrics={**metrics, "baselines": BCCD_BASELINES},
        queue="cpu",
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / "card.json").write_text(card.model_dump_json(indent=2) + "\n")
    (out / "README.md").write_text(render_detection_readme(card))
    return card


def _ap(x: Any) -> str:
    return "n/a" if x is None else f"{100 * float(x):.1f}%"


def render_detection_readme(card: ModelCard) -> str:
    """Human-readable card for a detector, generated from the same data as card.json."""
    spec, m = card.input, card.metrics
    test, val = m.get("test", {}), m.get("validation", {})
    rows = [
        f"| Architecture | `{card.architecture}` |",
        f"| Labels | {labels_cell(card.labels)} |",
        f"| Input | {spec.channels} x {spec.size} x {spec.size}, `{spec.resize}` (aspect kept, "
        f"boxes mapped back to original pixels); mean {[round(v, 4) for v in spec.mean]}, "
        f"std {[round(v, 4) for v in spec.std]} |",
    ]
    lines = card_head(card, generator="trainer.detection.card", rows=rows)
    if test:
        n = m.get("n_images", {})
        lines += [
            f"## Performance on the held-out test split ({n.get('test', '?')} images)",
            "",
            f"**mAP@0.5 {_ap(test['map_50'])}**; mAP over IoU 0.40:0.05:0.75 (RSNA-style) "
            f"{_ap(test['map_40_75'])}. COCO-style 101-point AP (torchmetrics), up to 100 "
            "boxes per image, NMS IoU 0.5.",
            "",
            "| class | AP@0.5 test | AP@0.5 validation |",
            "|---|---:|---:|",
        ]
        for label in card.labels:
            v = val.get("ap_50_per_class", {}).get(label) if val else None
            lines.append(f"| {label} | {_ap(test['ap_50_per_class'].get(label))} | {_ap(v)} |")
        lines += [
            "",
            f"Validation mAP@0.5 {_ap(val.get('map_50'))} chose the epoch; test was evaluated "
            "once, after every choice was made.",
            "",
        ]
    if m.get("baselines"):
        lines += ["## Published numbers (not like-for-like)", "", "| method | mAP@0.5 | source |"]
        lines.append("|---|---:|---|")
        lines += [f"| {b['method']} | {_ap(b['map_50'])} | {b['source']} |" for b in m["baselines"]]
        lines.append("")
    lines += card_tail(
        card,
        how_to_load="build with `shared.ml.detection.build_detector` and load with "
        "`load_detector_state`",
    )
    return join_lines(lines)
