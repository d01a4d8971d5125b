"""Torch-free catalogue of the architectures the workers can build, for upload validation.

The API checks an uploaded checkpoint against this (head size vs. labels, stem vs. input
channels) without importing torch; ``shared.ml.architectures`` asserts at import that it
builds exactly these classification architectures, so the two cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.errors import InvalidModelPackage
from shared.schemas.models import ModelCard, Task
from shared.state_dict_shapes import TensorInfo


@dataclass(frozen=True)
class ArchitectureSpec:
    task: Task
    # state_dict key of the classifier head's weight: shape (outputs, features).
    head_key: str
    # state_dict key of the first convolution's weight: shape (out, in_channels, kh, kw).
    stem_key: str
    # Outputs beyond one per label, e.g. a detector's background class.
    extra_outputs: int = 0
    # RetinaNet's convolutional head has (labels + extra) outputs per anchor position.
    anchors_per_location: int = 1
    # Detectors always take RGB (grayscale is replicated), whatever the card's channels.
    stem_channels: int | None = None


def _resnet() -> ArchitectureSpec:
    return ArchitectureSpec("classification", "fc.weight", "conv1.weight")


def _mobilenet_v3() -> ArchitectureSpec:
    return ArchitectureSpec("classification", "classifier.3.weight", "features.0.0.weight")


def _detector(stem_key: str, *, retinanet: bool = False) -> ArchitectureSpec:
    if retinanet:
        head, anchors = "head.classification_head.cls_logits.weight", 9
    else:
        head, anchors = "roi_heads.box_predictor.cls_score.weight", 1
    return ArchitectureSpec("detection", head, stem_key, 1, anchors, stem_channels=3)


def _segmenter(stem_key: str) -> ArchitectureSpec:
    return ArchitectureSpec("segmentation", "segmentation_head.0.weight", stem_key, stem_channels=3)


ARCHITECTURES: dict[str, ArchitectureSpec] = {
    "resnet18": _resnet(),
    "resnet34": _resnet(),
    "resnet50": _resnet(),
    "densenet121": ArchitectureSpec("classification", "classifier.weight", "features.conv0.weight"),
    "efficientnet_b0": ArchitectureSpec(
        "classification", "classifier.1.weight", "features.0.0.weight"
    ),
    "efficientnet_lite0": ArchitectureSpec("classification", "_fc.weight", "_conv_stem.weight"),
    "mobilenet_v3_large": _mobilenet_v3(),
    "mobilenet_v3_small": _mobilenet_v3(),
    # Detectors (shared.ml.detection.DETECTORS): class id 0 is the background.
    **{
        name: _detector("backbone.body.conv1.weight", retinanet=name.startswith("retinanet"))
        for name in (
            "retinanet_resnet50_fpn",
            "retinanet_resnet50_fpn_v2",
            "fasterrcnn_resnet50_fpn",
            "fasterrcnn_resnet50_fpn_v2",
        )
    },
    "fasterrcnn_mobilenet_v3_large_fpn": _detector("backbone.body.0.0.weight"),
    "fasterrcnn_efficientnet_lite0_fpn": _detector("backbone.body._conv_stem.weight"),
    # Segmentation U-Nets (shared.ml.segmentation.SEGMENTERS): one output channel per label,
    # labels[0] the background; RGB stem (grayscale is replicated).
    "unet_mobilenet_v2": _segmenter("encoder.features.0.0.weight"),
    "unet_resnet34": _segmenter("encoder.conv1.weight"),
}


def architectures_for(task: Task) -> list[str]:
    return sorted(name for name, spec in ARCHITECTURES.items() if spec.task == task)


def check_weights(card: ModelCard, tensors: dict[str, TensorInfo]) -> None:
    """Check a checkpoint's tensor shapes against the card.

    Raises:
        InvalidModelPackage: unknown architecture, missing head/stem, head size not one
            output per label, or stem channels not the card's input channels.
    """
    spec = ARCHITECTURES.get(card.architecture)
    if spec is None or spec.task != card.task:
        raise InvalidModelPackage(
            f"unknown {card.task} architecture {card.architecture!r}; supported: "
            f"{', '.join(architectures_for(card.task)) or 'none'}",
            field="card.architecture",
        )
    head = _tensor(tensors, spec.head_key, card.architecture)
    expected = (len(card.labels) + spec.extra_outputs) * spec.anchors_per_location
    if len(head.shape) not in (2, 4) or head.shape[0] != expected:
        # The workers apply softmax over one logit per label, so a single-logit binary head
        # (sigmoid style) would always score 1.0: it is refused rather than misread.
        raise InvalidModelPackage(
            f"the checkpoint's head {spec.head_key} has shape {list(head.shape)}: "
            f"{head.shape[0] if head.shape else 0} outputs, but the card lists "
            f"{len(card.labels)} labels {card.labels} (one output per label expected)",
            field="card.labels",
        )
    stem = _tensor(tensors, spec.stem_key, card.architecture)
    if len(stem.shape) != 4 or stem.shape[1] != (spec.stem_channels or card.input.channels):
        raise InvalidModelPackage(
            f"the checkpoint's first convolution {spec.stem_key} has shape "
            f"{list(stem.shape)}, which does not take the card's "
            f"{card.input.channels}-channel input",
            field="card.input.channels",
        )


def _tensor(tensors: dict[str, TensorInfo], key: str, architecture: str) -> TensorInfo:
    try:
        return tensors[key]
    except KeyError:
        raise InvalidModelPackage(
            f"the checkpoint has no {key!r} tensor, so it is not a {architecture} state_dict",
            field="weights",
        ) from None
