"""Build torchvision networks by name, always without downloading weights."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torchvision import models as tvm

from shared.ml.efficientnet_lite import efficientnet_lite0
from shared.ml_catalog import architectures_for


def _torchvision(builder: Callable[..., nn.Module]) -> Callable[[int], nn.Module]:
    def build(num_classes: int) -> nn.Module:
        return builder(weights=None, num_classes=num_classes)

    return build


CLASSIFIERS: dict[str, Callable[[int], nn.Module]] = {
    "resnet18": _torchvision(tvm.resnet18),
    "resnet34": _torchvision(tvm.resnet34),
    "resnet50": _torchvision(tvm.resnet50),
    "densenet121": _torchvision(tvm.densenet121),
    "efficientnet_b0": _torchvision(tvm.efficientnet_b0),
    # No SE, ReLU6: the one ImageNet checkpoint installable offline (shared.ml.pretrained).
    "efficientnet_lite0": efficientnet_lite0,
    "mobilenet_v3_large": _torchvision(tvm.mobilenet_v3_large),
    "mobilenet_v3_small": _torchvision(tvm.mobilenet_v3_small),
}
# The API validates uploads against the torch-free catalogue: it must list exactly these.
assert set(CLASSIFIERS) == set(architectures_for("classification")), (
    "shared.ml_catalog.ARCHITECTURES and CLASSIFIERS disagree: "
    f"{sorted(set(CLASSIFIERS) ^ set(architectures_for('classification')))}"
)


def build_classifier(architecture: str, num_classes: int) -> nn.Module:
    """Build a randomly initialised classifier; callers load weights explicitly.

    Raises:
        KeyError: the architecture is not supported.
    """
    try:
        builder = CLASSIFIERS[architecture]
    except KeyError:
        raise KeyError(
            f"unknown classification architecture {architecture!r}; "
            f"supported: {', '.join(sorted(CLASSIFIERS))}"
        ) from None
    return builder(num_classes)


def load_state_dict(
    path: str, *, map_location: str | torch.device = "cpu"
) -> dict[str, torch.Tensor]:
    # weights_only: a model package is untrusted input; never unpickle arbitrary objects.
    state = torch.load(path, map_location=map_location, weights_only=True)
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
