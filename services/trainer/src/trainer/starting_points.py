"""Where training starts: random init, ImageNet weights from a local cache, or a registered
model version to continue from. Nothing is ever downloaded."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy.orm import Session
from torch import nn

from shared.errors import InvalidRequest
from shared.ml.architectures import build_classifier, load_state_dict
from shared.ml.pretrained import (
    PretrainedWeightsMissing,
    imagenet_checkpoint_path,
    imagenet_normalisation,
    load_imagenet_backbone,
)
from shared.registry import resolve_model_version
from shared.schemas.models import ModelCard
from shared.storage import BlobStore


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


def new_head(in_features: int, num_classes: int) -> nn.Linear:
    """A zero-initialised head: every class starts at equal probability.

    Pretrained features are large (EfficientNet-Lite0 at 160 px gave logits up to ~19 with
    PyTorch's default Linear init, an initial loss of 2-4 instead of ln 2), and a head that
    starts confidently wrong spends the first epochs undoing it on a small dataset.
    """
    head = nn.Linear(in_features, num_classes)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    return head


def replace_head(network: nn.Module, num_classes: int) -> None:
    """Swap the last Linear layer for a new one with ``num_classes`` outputs."""
    path = head_name(network)
    parent_path, _, attr = path.rpartition(".")
    parent = network.get_submodule(parent_path) if parent_path else network
    old = getattr(parent, attr)
    setattr(parent, attr, new_head(old.in_features, num_classes))


def _imagenet(architecture: str, num_classes: int) -> StartingPoint:
    """ImageNet backbone from local files (shared.ml.pretrained), new head for our labels."""
    try:
        path = imagenet_checkpoint_path(architecture)
        network = load_imagenet_backbone(architecture, build_classifier(architecture, num_classes))
    except PretrainedWeightsMissing as exc:
        raise InvalidRequest(exc.detail) from None
    replace_head(network, num_classes)
    mean, std = imagenet_normalisation(architecture)
    return StartingPoint(
        network, list(mean), list(std), f"ImageNet weights ({path.name}); new classification head"
    )


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
