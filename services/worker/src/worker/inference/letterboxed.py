"""What the detection and segmentation models a worker serves have in common: a card whose
input is one letterboxed square, weights loaded strictly, and the decode size that follows."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from shared.errors import ModelUnavailable
from shared.schemas.models import ModelCard


@dataclass
class LetterboxedModel:
    version_id: uuid.UUID
    ref: str
    card: ModelCard
    network: nn.Module
    device: torch.device

    @property
    def decode_size(self) -> int:
        """The decoder may reduce an image to the input side: the letterbox shrinks it anyway."""
        return int(self.card.input.size)

    @property
    def decode_sizes(self) -> set[int]:
        return {self.decode_size}


def load_strictly(ref: str, device: torch.device, build: Callable[[], nn.Module]) -> nn.Module:
    """``build()`` makes the card's network with its weights loaded; in eval mode on ``device``.

    Raises:
        ModelUnavailable: unknown architecture or weights that do not fit it.
    """
    try:
        network = build()
    except (KeyError, RuntimeError) as exc:
        raise ModelUnavailable(f"weights of {ref} cannot be loaded: {exc}") from exc
    return network.eval().to(device)
