"""The human-readable card (model_card.md) of a segmentation model version."""

from __future__ import annotations

from typing import Any

from shared.schemas.models import ModelCard
from trainer.card_sections import card_head, card_tail, join_lines, labels_cell


def _ci(value: Any) -> str:
    return f" (95% CI {value[0]:.3f}-{value[1]:.3f})" if value else ""


def _num(value: Any, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def render_segmentation_readme(card: ModelCard) -> str:
    spec, test = card.input, card.metrics.get("test") or {}
    rows = [
        f"| Architecture | `{card.architecture}` (segmentation-models-pytorch U-Net, "
        f"{len(card.labels)} output channels, softmax) |",
        f"| Labels | {labels_cell(card.labels)} (class id = position; `{card.labels[0]}` = 0) |",
        f"| Input | 3 x {spec.size} x {spec.size}; resize `{spec.resize}` (masks are mapped "
        f"back to the uploaded image's grid); mean {spec.mean}, std {spec.std} |",
    ]
    lines = card_head(card, generator="trainer.segmentation.card", rows=rows)
    if test:
        lines += [
            f"## Performance on the held-out test split (n = {test['n_cases']} images)",
            "",
            f"**Dice {_num(test.get('dice'))}**{_ci(test.get('dice_ci95'))}; IoU "
            f"{_num(test.get('iou'))}{_ci(test.get('iou_ci95'))}; HD95 "
            f"{_num(test.get('hd95_px'), 1)} px{_ci(test.get('hd95_px_ci95'))}"
            + (f", {_num(test.get('hd95_mm'), 2)} mm" if test.get("hd95_mm") is not None else "")
            + ".",
            "",
            "| class | Dice | IoU | HD95 (px) |",
            "|---|---:|---:|---:|",
            *(
                f"| {label} | {_num(v.get('dice'))}{_ci(v.get('dice_ci95'))} | "
                f"{_num(v.get('iou'))} | {_num(v.get('hd95_px'), 1)} |"
                for label, v in test.get("per_class", {}).items()
            ),
            "",
            f"Definitions: {card.metrics.get('definitions', '')}. Intervals: percentile "
            "bootstrap over test images. No choice (epoch, threshold) was made on test.",
            "",
        ]
    lines += card_tail(
        card,
        how_to_load="build with `shared.ml.segmentation.build_segmenter` and load with "
        "`shared.ml.architectures.load_state_dict`",
    )
    return join_lines(lines)
