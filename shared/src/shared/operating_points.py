"""Which decision threshold a classification job uses, and what it achieved on validation.

Torch-free: the API validates a request with it (422 before anything is stored) and the
worker applies the same choice, so both always agree.
"""

from __future__ import annotations

from shared.errors import InvalidRequest
from shared.schemas.models import ModelCard, OperatingPoint, RocPoint

DEFAULT_THRESHOLD = 0.5


def is_thresholded(card: ModelCard) -> bool:
    """Binary classifiers with a positive label decide by a threshold on that label."""
    return (
        card.task == "classification"
        and card.positive_label is not None
        and (len(card.labels) == 2)
    )


def is_hard_vote(card: ModelCard) -> bool:
    return card.ensemble is not None and card.ensemble.vote == "hard"


def _at_threshold(roc: list[RocPoint], threshold: float) -> RocPoint | None:
    """The validation point of the lowest ROC threshold at or above ``threshold``.

    Predicting positive when p >= t, sensitivity falls and specificity rises with t, so
    this point is what the given threshold achieved on validation (exact when the ROC
    lists that threshold, conservative in sensitivity otherwise).
    """
    above = [p for p in roc if p.threshold >= threshold]
    return min(above, key=lambda p: p.threshold) if above else None


def operating_point(
    card: ModelCard,
    *,
    threshold: float | None = None,
    target_sensitivity: float | None = None,
) -> OperatingPoint | None:
    """The operating point a job on ``card`` uses.

    Precedence: the request's ``threshold``; else the highest validation-ROC threshold
    whose sensitivity reaches ``target_sensitivity``; else the card's operating point;
    else 0.5. Models that do not threshold (multi-class, hard-vote ensembles, detectors)
    get None when the request asks for nothing.

    Raises:
        InvalidRequest: both parameters given, a parameter the model cannot honour (not a
            thresholded binary classifier, no validation ROC on its card), or a target no
            validation threshold reaches.
    """
    if threshold is not None and target_sensitivity is not None:
        raise InvalidRequest("give either `threshold` or `target_sensitivity`, not both")
    asked = threshold is not None or target_sensitivity is not None
    if not is_thresholded(card) or is_hard_vote(card):
        if asked:
            why = (
                "a hard-vote ensemble decides by its members' labels at their own operating points"
                if is_hard_vote(card)
                else "it is not a binary classifier with a positive label"
            )
            raise InvalidRequest(f"model {card.name!r} takes no threshold: {why}")
        return None
    roc = card.validation_roc
    if threshold is not None:
        point = _at_threshold(roc, threshold) if roc else None
        return OperatingPoint(
            threshold=threshold,
            sensitivity=point.sensitivity if point else None,
            specificity=point.specificity if point else None,
            source="request threshold"
            + ("; sensitivity/specificity on validation" if point else ""),
        )
    if target_sensitivity is not None:
        if not roc:
            raise InvalidRequest(
                f"model {card.name!r} has no validation ROC on its model card, so no "
                "operating point can be chosen by target_sensitivity; send `threshold` instead"
            )
        reaching = [p for p in roc if p.sensitivity >= target_sensitivity]
        if not reaching:
            best = max(p.sensitivity for p in roc)
            raise InvalidRequest(
                f"no threshold of {card.name!r} reaches sensitivity {target_sensitivity} on "
                f"validation (highest: {best:.4f})"
            )
        point = max(reaching, key=lambda p: (p.threshold, p.specificity))
        return OperatingPoint(
            threshold=point.threshold,
            sensitivity=point.sensitivity,
            specificity=point.specificity,
            source=f"validation ROC: highest threshold with sensitivity >= {target_sensitivity}",
        )
    if card.operating_point is not None:
        return card.operating_point
    return OperatingPoint(threshold=DEFAULT_THRESHOLD, source="default 0.5 (no operating point)")
