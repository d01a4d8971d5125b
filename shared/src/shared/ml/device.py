"""The torch device a worker or trainer process runs on."""

from __future__ import annotations

import torch


def pick_device() -> torch.device:
    """The first CUDA device when one is visible, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
