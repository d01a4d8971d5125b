"""Voting ensembles: members run on the same images, their outputs combined.

soft: the ensemble's probabilities are the (weighted) mean of the members'; its label
    follows from them at the ensemble card's operating point (or the request's).
hard: each member labels the image at its own card's operating point; the label with
    the largest (weighted) vote wins. A tie goes to the tied label with the highest mean
    probability, then to the earlier label in the card. The reported probabilities are
    the (weighted) mean, for information.
Each member's own output is reported next to the ensemble's.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from shared.operating_points import operating_point
from shared.schemas.models import ModelCard
from worker.inference.postprocess import classification_output
from worker.inference.runner import LoadedModel


@dataclass(frozen=True)
class Member:
    model: LoadedModel
    weight: float


@dataclass
class LoadedEnsemble:
    version_id: uuid.UUID
    ref: str
    card: ModelCard
    members: list[Member]

    @property
    def vote(self) -> str:
        return self.card.ensemble.vote if self.card.ensemble else "soft"

    @property
    def decode_sizes(self) -> set[int]:
        return {m.model.decode_size for m in self.members}

    def member_probabilities(self, pixels: list[dict[int, np.ndarray]]) -> torch.Tensor:
        """(members, images, classes): one batched forward pass per member."""
        out = []
        for member in self.members:
            size = member.model.decode_size
            batch = torch.stack([member.model.preset(p[size]) for p in pixels])
            out.append(member.model.probabilities(batch))
        return torch.stack(out)


def soft_vote(member_probs: torch.Tensor, weights: list[float]) -> torch.Tensor:
    """(members, images, classes) -> (images, classes): weighted mean probability."""
    w = torch.tensor(weights, dtype=member_probs.dtype).view(-1, 1, 1)
    return (member_probs * w).sum(0) / w.sum()


def hard_vote(
    member_labels: list[str], weights: list[float], mean_probs: list[float], labels: list[str]
) -> tuple[str, dict[str, float]]:
    """Weighted majority of member labels; ties: highest mean probability, then card order."""
    votes = dict.fromkeys(labels, 0.0)
    for label, weight in zip(member_labels, weights, strict=True):
        votes[label] += weight
    top = max(votes.values())
    tied = [i for i, label in enumerate(labels) if votes[label] == top]
    winner = max(tied, key=lambda i: (mean_probs[i], -i))
    return labels[winner], votes


def ensemble_outputs(
    ensemble: LoadedEnsemble, member_probs: torch.Tensor, point: Any
) -> list[dict[str, Any]]:
    """Per image: the ensemble's output with each member's output under ``members``."""
    weights = [m.weight for m in ensemble.members]
    mean = soft_vote(member_probs, weights).tolist()
    member_points = [operating_point(m.model.card) for m in ensemble.members]
    outputs = []
    for i, probs in enumerate(mean):
        members = [
            {
                "ref": m.model.ref,
                "weight": m.weight,
                **classification_output(member_probs[j, i].tolist(), m.model.card, mp),
            }
            for j, (m, mp) in enumerate(zip(ensemble.members, member_points, strict=True))
        ]
        out = classification_output(probs, ensemble.card, point)
        if ensemble.vote == "hard":
            label, votes = hard_vote(
                [m["label"] for m in members], weights, probs, ensemble.card.labels
            )
            out.update(label=label, score=out["probabilities"][label])
            out["votes"] = votes
        out["ensemble"] = {"vote": ensemble.vote, "members": members}
        outputs.append(out)
    return outputs
