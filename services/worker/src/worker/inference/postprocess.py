"""Turn class probabilities into a decision a clinician can read."""

from __future__ import annotations

from typing import Any

from shared.schemas.models import ModelCard


def classification_output(
    probabilities: list[float], card: ModelCard, *, threshold: float | None = None
) -> dict[str, Any]:
    """Per-class probabilities, the predicted label and the operating point used.

    Binary models with a positive label are thresholded on that label's probability
    (the request's threshold, else the card's operating point, else 0.5); other models
    take the most probable label.
    """
    labels = card.labels
    out: dict[str, Any] = {
        "probabilities": {
            label: round(p, 6) for label, p in zip(labels, probabilities, strict=True)
        }
    }
    if card.positive_label is not None and len(labels) == 2:
        positive = labels.index(card.positive_label)
        point = card.operating_point
        if threshold is not None:
            used = {"threshold": threshold, "source": "request"}
        elif point is not None:
            used = point.model_dump()
        else:
            used = {"threshold": 0.5, "source": "default"}
        is_positive = probabilities[positive] >= used["threshold"]
        label = labels[positive] if is_positive else labels[1 - positive]
        out["operating_point"] = used
    else:
        label = labels[max(range(len(labels)), key=probabilities.__getitem__)]
    out["label"] = label
    out["score"] = out["probabilities"][label]
    return out
