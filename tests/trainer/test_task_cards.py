"""Segmentation and detection model_card.md: shared head and tail, task-specific results."""

from __future__ import annotations

from shared.schemas.models import DataProvenance, InputSpec, ModelCard, TrainingRecord
from trainer.detection.card import render_detection_readme
from trainer.segmentation.card import render_segmentation_readme

_SPEC = InputSpec(size=224, mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225],
                  resize="letterbox")  # fmt: skip
_DATA = DataProvenance(source="fixture", licence="CC0", citation="none", split="70/15/15")
_TRAINING = TrainingRecord(
    command="POST /v1/training-jobs (job 1)",
    epochs=3,
    wall_time_s=90.0,
    hardware="cpu",
    seed=0,
    extra={"schedule": "warm-up then cosine", "history": [1, 2]},
)


def _card(task: str, labels: list[str], metrics: dict[str, object]) -> ModelCard:
    return ModelCard(name=f"{task}-model", task=task, architecture="arch-x",  # type: ignore[arg-type]
                     labels=labels, input=_SPEC, description=f"A {task} model.",
                     intended_use="Research only.", limitations="One site.", data=_DATA,
                     training=_TRAINING, metrics=metrics)  # fmt: skip


def _sections(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("#")]


def test_segmentation_card_has_the_shared_frame_and_its_dice() -> None:
    test = {"n_cases": 4, "dice": 0.9, "dice_ci95": [0.8, 0.95], "iou": 0.82,
            "iou_ci95": [0.7, 0.9], "hd95_px": 3.5, "hd95_px_ci95": [2.0, 5.0],
            "per_class": {"nodule": {"dice": 0.9, "dice_ci95": [0.8, 0.95], "iou": 0.82,
                                     "hd95_px": 3.5}}}  # fmt: skip
    text = render_segmentation_readme(_card("segmentation", ["background", "nodule"],
                                            {"test": test, "definitions": "per case"}))  # fmt: skip
    assert _sections(text) == [
        "# segmentation-model", "## Intended use", "## Limitations",
        "## Performance on the held-out test split (n = 4 images)", "## Data", "## Training",
        "## Files",
    ]  # fmt: skip
    assert "by trainer.segmentation.card; do not edit" in text
    assert "| Task | segmentation |" in text and "| Queue | cpu |" in text
    assert "| Labels | `background`, `nodule` (class id = position" in text
    assert "**Dice 0.900** (95% CI 0.800-0.950)" in text
    assert "- schedule: warm-up then cosine" in text and "history" not in text
    assert "`shared.ml.segmentation.build_segmenter`" in text
    assert text.endswith("\n") and not text.endswith("\n\n\n")


def test_detection_card_has_the_same_frame_and_its_map() -> None:
    test = {"map_50": 0.9, "map_40_75": 0.8, "ap_50_per_class": {"rbc": 0.85, "wbc": 0.95}}
    text = render_detection_readme(_card("detection", ["rbc", "wbc"],
                                         {"test": test, "n_images": {"test": 5}}))  # fmt: skip
    heads = _sections(text)
    assert heads[:3] == ["# detection-model", "## Intended use", "## Limitations"]
    assert heads[-3:] == ["## Data", "## Training", "## Files"]
    assert "by trainer.detection.card; do not edit" in text
    assert "| Task | detection |" in text and "| Labels | `rbc`, `wbc` |" in text
    assert "**mAP@0.5 90.0%**" in text and "| rbc | 85.0% |" in text
    assert "`load_detector_state`." in text
