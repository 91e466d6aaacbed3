"""The amplifying encoder: an ImageNet-style ResNet-18 with a projection and a shift head.

Written here because torchvision is not allowed (SPEC section 2). The same network serves 28² and
224² inputs (at 28² layer4 ends on a 1×1 map).

Reference: shijianjian/DIA `models/resnet_imagenet.py::resnet18` (torchvision layout, random
init, Kaiming-normal fan_out, BN γ=1 β=0, zero_init_residual=False), `models/base_model.py`
(heads) and the NormalizeLayer (x − 0.5) / 0.5 inside the network.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` that computes a single output position as one matrix product.

    At 28² the ResNet's layer4 works on a 1×1 map: a 3×3 convolution with padding 1 then sees
    zero padding through 8 of its 9 taps, and oneDNN's backward pass for that shape is slow (on
    the 2-core CPU, forward and backward of one 512→512 call at 384 images: 242 ms, against
    11 ms as a matrix product, `benchmarks/bench_cpu_layout.py`; docs/MEASUREMENTS.md, "What a
    run costs").
    When the output is 1×1 we multiply the input by the taps that can reach it: the same sum
    without the zero terms, so only the rounding differs (`tests/test_encoder.py` compares both
    in float64). The gradient of the other taps is zero either way, as in the convolution. Every
    other shape, 224² inputs throughout, and every device but the CPU (cuDNN's speed for it is
    not measured yet) take ``nn.Conv2d``. Parameters and state-dict keys are ``nn.Conv2d``'s, so
    checkpoints are unaffected.
    """

    def _conv_forward(self, x, weight, bias):
        if not self._single_output(x):
            return super()._conv_forward(x, weight, bias)
        (ph, pw), (kh, kw) = self.padding, self.kernel_size
        h, w = max(0, min(x.shape[-2], kh - ph)), max(0, min(x.shape[-1], kw - pw))  # in reach
        taps = weight[:, :, ph:ph + h, pw:pw + w]
        out = F.linear(x[:, :, :h, :w].flatten(1), taps.flatten(1), bias)
        return out[:, :, None, None]

    def _single_output(self, x: torch.Tensor) -> bool:
        if (x.device.type != "cpu" or x.dim() != 4 or self.groups != 1
                or self.padding_mode != "zeros" or isinstance(self.padding, str)
                or self.dilation != (1, 1)):
            return False
        return all(
            (size + 2 * pad - k) // stride == 0
            for size, pad, k, stride in zip(
                x.shape[-2:], self.padding, self.kernel_size, self.stride
            )
        )


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(
                Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class EncoderOutput(NamedTuple):
    features: torch.Tensor  # (N, 512) penultimate features
    projection: torch.Tensor  # (N, 128) un-normalised contrastive projection
    shift_logits: torch.Tensor  # (N, K) shift-classifier logits


class AmplifyEncoder(nn.Module):
    """ResNet-18 (7×7/2 stem + max-pool) → 512-d, projection 512→512→128, shift head 512→K.

    Args:
        num_shifts: K, the number of shift classes (4 for rotation and cutperm).
        projection_dim: size of the contrastive projection (128 in the reference).
        width: channels of the first stage (64 in ResNet-18); smaller values only for tests.

    Input: float (N, 3, H, W) in [0, 1]; normalised inside by (x − 0.5) / 0.5.
    """

    def __init__(self, num_shifts: int = 4, projection_dim: int = 128, width: int = 64):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        widths = [width, 2 * width, 4 * width, 8 * width]
        layers, in_planes = [], width
        for i, planes in enumerate(widths):
            stride = 1 if i == 0 else 2
            blocks = [BasicBlock(in_planes, planes, stride), BasicBlock(planes, planes)]
            layers.append(nn.Sequential(*blocks))
            in_planes = planes
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = widths[-1]
        self.simclr_layer = nn.Sequential(
            nn.Linear(self.feature_dim, self.feature_dim),
            nn.ReLU(),
            nn.Linear(self.feature_dim, projection_dim),
        )
        self.shift_cls_layer = nn.Linear(self.feature_dim, num_shifts)
        self.num_shifts = num_shifts
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate 512-d features of images in [0, 1]."""
        x = (x - 0.5) / 0.5
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)

    def project(self, features: torch.Tensor) -> torch.Tensor:
        """Un-normalised 128-d contrastive projection."""
        return self.simclr_layer(features)

    def classify_shift(self, features: torch.Tensor) -> torch.Tensor:
        """Logits of the K-way shift classifier."""
        return self.shift_cls_layer(features)

    def forward(self, x: torch.Tensor) -> EncoderOutput:
        features = self.embed(x)
        return EncoderOutput(features, self.project(features), self.classify_shift(features))
