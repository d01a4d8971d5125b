"""Turn class probabilities into a decision a clinician can read."""

from __future__ import annotations

from typing import Any

from shared.schemas.models import ModelCard, OperatingPoint


def classification_output(
    probabilities: list[float], card: ModelCard, point: OperatingPoint | None
) -> dict[str, Any]:
    """Per-class probabilities, the predicted label and the operating point used.

    With an operating point (binary models with a positive label, see
    shared.operating_points) the positive label is predicted when its probability reaches
    the threshold; otherwise the most probable label is.
    """
    labels = card.labels
    out: dict[str, Any] = {
        "probabilities": {
            label: round(p, 6) for label, p in zip(labels, probabilities, strict=True)
        }
    }
    if point is not None and card.positive_label is not None and len(labels) == 2:
        positive = labels.index(card.positive_label)
        is_positive = probabilities[positive] >= point.threshold
        label = labels[positive] if is_positive else labels[1 - positive]
        out["operating_point"] = point.model_dump()
    else:
        label = labels[max(range(len(labels)), key=probabilities.__getitem__)]
    out["label"] = label
    out["score"] = out["probabilities"][label]
    return out
