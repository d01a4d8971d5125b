"""Object detectors built by name, their input preprocessing and output post-processing.

Shared by the trainer (training, evaluation) and the worker (inference), so both see exactly
the same network, letterbox and box filtering.

Conventions:
- Label ``labels[i]`` of a model card is class id ``i + 1`` for every detector; id 0 is the
  background (Faster R-CNN needs it; RetinaNet just never sees it as a target). One mapping for
  all architectures keeps loading and evaluation code free of special cases.
- Inputs are letterboxed by us to ``size x size`` in [0, 1]; the model's own transform then
  only normalises (``min_size = max_size = size`` makes its resize a no-op).
- Grayscale (``channels == 1``) images are replicated to three channels and the card's single
  mean/std repeated: every detector (and every ImageNet-pretrained backbone) has an RGB stem,
  and replication is exactly equivalent to a one-channel stem whose weights are the sum of the
  RGB ones, so nothing is lost and pretrained weights stay usable.
- The model's internal NMS is loose (IoU 0.9) and keeps many boxes, so the per-request
  ``nms_iou`` / ``score_threshold`` / ``max_detections`` in ``filter_detections`` decide.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import detection as tvd
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.rpn import RPNHead
from torchvision.ops import FeaturePyramidNetwork, MultiScaleRoIAlign, batched_nms
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool
from torchvision.ops.misc import FrozenBatchNorm2d

from shared.imaging.geometry import Letterbox, letterbox
from shared.ml.efficientnet_lite import LITE0_FEATURE_CHANNELS, EfficientNetLite0
from shared.ml_catalog import architectures_for
from shared.schemas.models import InputSpec

# Internal NMS only removes near-duplicates; the request's nms_iou (<= this) does the rest.
MODEL_NMS_IOU = 0.9
MODEL_MAX_DETECTIONS = 500
MODEL_SCORE_FLOOR = 0.01
# Defaults for a request (and for evaluation: COCO-style up to 100 boxes per image).
DEFAULT_SCORE_THRESHOLD = 0.3
DEFAULT_NMS_IOU = 0.5
DEFAULT_MAX_DETECTIONS = 100


@dataclass(frozen=True)
class DetectorConfig:
    num_classes: int  # labels + background
    size: int
    mean: list[float]
    std: list[float]
    pretrained_backbone: bool


def _rgb(values: list[float]) -> list[float]:
    return values * 3 if len(values) == 1 else list(values)


def _common(cfg: DetectorConfig) -> dict[str, object]:
    return {
        "num_classes": cfg.num_classes,
        "min_size": cfg.size,
        "max_size": cfg.size,
        "image_mean": _rgb(cfg.mean),
        "image_std": _rgb(cfg.std),
    }


def _torchvision_backbone_weights(cfg: DetectorConfig, backbone: str) -> object:
    if not cfg.pretrained_backbone:
        return None
    from torchvision.models import get_model_weights

    from shared.ml.pretrained import imagenet_checkpoint_path

    # Raises with the file name when absent; present in torch.hub's cache means torchvision
    # loads it from there and never downloads.
    imagenet_checkpoint_path(backbone)
    return get_model_weights(backbone).IMAGENET1K_V1


def _retinanet(builder: Callable[..., nn.Module], backbone: str) -> Callable[..., nn.Module]:
    def build(cfg: DetectorConfig) -> nn.Module:
        return builder(
            weights=None,
            weights_backbone=_torchvision_backbone_weights(cfg, backbone),
            nms_thresh=MODEL_NMS_IOU,
            detections_per_img=MODEL_MAX_DETECTIONS,
            score_thresh=MODEL_SCORE_FLOOR,
            **_common(cfg),
        )

    return build


def _fasterrcnn(builder: Callable[..., nn.Module], backbone: str) -> Callable[..., nn.Module]:
    def build(cfg: DetectorConfig) -> nn.Module:
        return builder(
            weights=None,
            weights_backbone=_torchvision_backbone_weights(cfg, backbone),
            box_nms_thresh=MODEL_NMS_IOU,
            box_detections_per_img=MODEL_MAX_DETECTIONS,
            box_score_thresh=MODEL_SCORE_FLOOR,
            **_common(cfg),
        )

    return build


def freeze_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm2d by a FrozenBatchNorm2d with the same statistics and eps.

    Detection trains with a few images per batch: too few for batch statistics, so the
    ImageNet ones are kept (as torchvision does for pretrained backbones).
    """
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
            frozen.weight.copy_(child.weight.detach())
            frozen.bias.copy_(child.bias.detach())
            frozen.running_mean.copy_(child.running_mean)
            frozen.running_var.copy_(child.running_var)
            setattr(module, name, frozen)
        else:
            freeze_batchnorm(child)
    return module


class LiteFPNBackbone(nn.Module):
    """EfficientNet-Lite0 stride 8/16/32 features + FPN (+ max-pooled P6) for detection."""

    def __init__(self, *, pretrained: bool, out_channels: int = 128) -> None:
        super().__init__()
        body = EfficientNetLite0(drop_connect_rate=0.0)
        if pretrained:
            from shared.ml.pretrained import load_imagenet_backbone

            load_imagenet_backbone("efficientnet_lite0", body)
            freeze_batchnorm(body)
            # Stem and the stride-2/4 blocks keep their ImageNet weights (generic edges).
            for module in (body._conv_stem, *body._blocks[:3]):
                module.requires_grad_(False)
        # The classification head is not part of the detector.
        del body._conv_head, body._bn1, body._fc, body._avg_pool, body._dropout
        self.body = body
        self.fpn = FeaturePyramidNetwork(
            list(LITE0_FEATURE_CHANNELS), out_channels, extra_blocks=LastLevelMaxPool()
        )
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        features = self.body.forward_features(x)
        maps: OrderedDict[str, torch.Tensor] = self.fpn(
            OrderedDict((str(i), f) for i, f in enumerate(features))
        )
        return maps


def _fasterrcnn_lite0(cfg: DetectorConfig) -> nn.Module:
    backbone = LiteFPNBackbone(pretrained=cfg.pretrained_backbone)
    # Two sizes per level (x3 aspect ratios): small cells (platelets) need the 16-24 px ones.
    sizes = ((16, 24), (32, 48), (64, 96), (128, 192))
    anchors = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(sizes))
    rpn_head = RPNHead(backbone.out_channels, anchors.num_anchors_per_location()[0])
    roi_pool = MultiScaleRoIAlign(["0", "1", "2"], output_size=7, sampling_ratio=2)
    representation = 512
    box_head = TwoMLPHead(backbone.out_channels * 7 * 7, representation)
    model: nn.Module = tvd.FasterRCNN(
        backbone,
        rpn_anchor_generator=anchors,
        rpn_head=rpn_head,
        box_roi_pool=roi_pool,
        box_head=box_head,
        box_predictor=FastRCNNPredictor(representation, cfg.num_classes),
        rpn_pre_nms_top_n_train=1000,
        rpn_post_nms_top_n_train=1000,
        rpn_pre_nms_top_n_test=500,
        rpn_post_nms_top_n_test=500,
        box_batch_size_per_image=256,
        box_nms_thresh=MODEL_NMS_IOU,
        box_detections_per_img=MODEL_MAX_DETECTIONS,
        box_score_thresh=MODEL_SCORE_FLOOR,
        min_size=cfg.size,
        max_size=cfg.size,
        image_mean=_rgb(cfg.mean),
        image_std=_rgb(cfg.std),
    )
    return model


DETECTORS: dict[str, Callable[[DetectorConfig], nn.Module]] = {
    "retinanet_resnet50_fpn": _retinanet(tvd.retinanet_resnet50_fpn, "resnet50"),
    "retinanet_resnet50_fpn_v2": _retinanet(tvd.retinanet_resnet50_fpn_v2, "resnet50"),
    "fasterrcnn_resnet50_fpn": _fasterrcnn(tvd.fasterrcnn_resnet50_fpn, "resnet50"),
    "fasterrcnn_resnet50_fpn_v2": _fasterrcnn(tvd.fasterrcnn_resnet50_fpn_v2, "resnet50"),
    "fasterrcnn_mobilenet_v3_large_fpn": _fasterrcnn(
        tvd.fasterrcnn_mobilenet_v3_large_fpn, "mobilenet_v3_large"
    ),
    # ImageNet-pretrainable offline (EfficientNet-Lite0 wheel); CPU-sized.
    "fasterrcnn_efficientnet_lite0_fpn": _fasterrcnn_lite0,
}

# The API validates uploads against the torch-free catalogue: it must list exactly these.
assert set(DETECTORS) == set(architectures_for("detection")), (
    "shared.ml_catalog.ARCHITECTURES and DETECTORS disagree: "
    f"{sorted(set(DETECTORS) ^ set(architectures_for('detection')))}"
)


def build_detector(
    architecture: str, labels: list[str], spec: InputSpec, *, pretrained_backbone: bool = False
) -> nn.Module:
    """A detector for ``labels`` taking ``spec.size`` letterboxed inputs.

    Args:
        pretrained_backbone: start the backbone from local ImageNet weights (training only;
            inference loads a full state dict instead).

    Raises:
        KeyError: unknown architecture.
        PretrainedWeightsMissing: pretrained_backbone without the local checkpoint.
    """
    try:
        builder = DETECTORS[architecture]
    except KeyError:
        raise KeyError(
            f"unknown detection architecture {architecture!r}; "
            f"supported: {', '.join(sorted(DETECTORS))}"
        ) from None
    cfg = DetectorConfig(
        num_classes=len(labels) + 1,
        size=spec.size,
        mean=list(spec.mean),
        std=list(spec.std),
        pretrained_backbone=pretrained_backbone,
    )
    return builder(cfg)


def load_detector_state(model: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
    """Load a trained detector's weights strictly.

    A backbone trained from ImageNet uses frozen batch norm, which has no
    ``num_batches_tracked`` buffer; the same architecture built for inference may use plain
    BatchNorm2d (identical maths in eval mode), so only those counters may be absent.
    """
    own = model.state_dict()
    state = dict(state)
    for key, value in own.items():
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = torch.zeros_like(value)
    model.load_state_dict(state, strict=True)
    return model


def to_rgb_chw(pixels: np.ndarray | torch.Tensor) -> torch.Tensor:
    """[0,1] HxW / HxWx3 array or CxHxW tensor -> float32 3xHxW tensor."""
    if isinstance(pixels, np.ndarray):
        t = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32))
        t = t.unsqueeze(0) if t.ndim == 2 else t.permute(2, 0, 1)
    else:
        t = pixels.float()
    return t.expand(3, -1, -1) if t.shape[0] == 1 else t


def letterbox_tensor(
    image: torch.Tensor, size: int, fill: list[float]
) -> tuple[torch.Tensor, Letterbox]:
    """Resize a 3xHxW [0,1] image into ``size x size`` keeping its aspect; pad with ``fill``.

    The padding is the normalisation mean, so it becomes exactly 0 inside the network.
    """
    geometry = letterbox(image.shape[-1], image.shape[-2], size)
    resized = F.interpolate(
        image.unsqueeze(0),
        size=(geometry.resized_height, geometry.resized_width),
        mode="bilinear",
        antialias=True,
        align_corners=False,
    ).squeeze(0)
    out = torch.tensor(_rgb(fill), dtype=image.dtype).view(3, 1, 1).repeat(1, size, size)
    out[
        :,
        geometry.pad_top : geometry.pad_top + geometry.resized_height,
        geometry.pad_left : geometry.pad_left + geometry.resized_width,
    ] = resized.clamp(0, 1)
    return out, geometry


class DetectionPresetEval:
    """Decoded pixels -> letterboxed 3 x size x size input and the geometry to map boxes back."""

    def __init__(self, spec: InputSpec) -> None:
        self.spec = spec

    def __call__(self, pixels: np.ndarray | torch.Tensor) -> tuple[torch.Tensor, Letterbox]:
        return letterbox_tensor(to_rgb_chw(pixels), self.spec.size, list(self.spec.mean))


def filter_detections(
    output: dict[str, torch.Tensor],
    *,
    score_threshold: float = DEFAULT_SCORE_THRESHOLD,
    nms_iou: float = DEFAULT_NMS_IOU,
    max_detections: int = DEFAULT_MAX_DETECTIONS,
) -> dict[str, torch.Tensor]:
    """Per-class NMS at ``nms_iou``, then keep the ``max_detections`` best above the threshold."""
    boxes, scores, labels = output["boxes"], output["scores"], output["labels"]
    keep = scores >= score_threshold
    boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
    keep = batched_nms(boxes, scores, labels, nms_iou)[:max_detections]  # sorted by score
    return {"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]}
