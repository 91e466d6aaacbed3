"""Batched, GPU-friendly augmentations of DIA/CSI: shifts, flips and the SimCLR augmentation.

Every random function takes an explicit `torch.Generator` on the tensor's device, draws all its
parameters for the whole batch at once (no Python loop per sample) and is reproducible from the
generator's seed alone.

Reference: alinlab/CSI `models/transform_layers.py` (ColorJitterLayer, RandomHSVFunction,
rgb2hsv/hsv2rgb, RandomColorGrayLayer, RandomResizedCropLayer, HorizontalFlipLayer, Rotation,
CutPerm) and `models/classifier.py::get_simclr_augmentation`; shijianjian/DIA uses them unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from dia import runtime

Shift = Literal["rotation", "cutperm"]
NUM_SHIFTS = {"rotation": 4, "cutperm": 4}
GRAY_WEIGHTS = (0.299, 0.587, 0.114)


def num_shifts(shift: str) -> int:
    """Number K of shifting transformations of a shift type."""
    if shift not in NUM_SHIFTS:
        raise ValueError(f"unknown shift {shift!r}; choose one of {', '.join(NUM_SHIFTS)}")
    return NUM_SHIFTS[shift]


# -- shifting transformations ------------------------------------------------------------------


def rotate(x: torch.Tensor, k: int) -> torch.Tensor:
    """Rotate (B, C, H, W) images by k·90° in the (H, W) plane (`torch.rot90`, as the reference)."""
    return torch.rot90(x, k % 4, dims=(2, 3))


def cutperm(x: torch.Tensor, k: int) -> torch.Tensor:
    """Cut-permutation k: swap top/bottom halves if k // 2 == 1, left/right halves if k % 2 == 1."""
    k = k % 4
    h_mid, w_mid = x.shape[2] // 2, x.shape[3] // 2
    if k // 2 == 1:
        x = torch.cat((x[:, :, h_mid:], x[:, :, :h_mid]), dim=2)
    if k % 2 == 1:
        x = torch.cat((x[:, :, :, w_mid:], x[:, :, :, :w_mid]), dim=3)
    return x


def apply_shift(x: torch.Tensor, k: int, shift: str = "rotation") -> torch.Tensor:
    """Shift k of type `shift` applied to every image of the batch."""
    if shift == "rotation":
        return rotate(x, k)
    if shift == "cutperm":
        return cutperm(x, k)
    raise ValueError(f"unknown shift {shift!r}; choose one of {', '.join(NUM_SHIFTS)}")


def shift_major(x: torch.Tensor, shift: str = "rotation") -> torch.Tensor:
    """All K shifts of a batch, concatenated shift-major: index k·B + j is image j under shift k.

    `x` may also hold K chunks of B already (then chunk k gets shift k), see `shift_chunks`.
    """
    return torch.cat([apply_shift(x, k, shift) for k in range(num_shifts(shift))])


def shift_chunks(x: torch.Tensor, shift: str = "rotation") -> torch.Tensor:
    """Apply shift k to the k-th of K equal chunks of `x` (K·B images in, K·B out)."""
    chunks = x.chunk(num_shifts(shift))
    return torch.cat([apply_shift(c, k, shift) for k, c in enumerate(chunks)])


def shift_labels(batch: int, shift: str = "rotation", *, device=None) -> torch.Tensor:
    """int64 (K·B,) labels of a shift-major batch: k for indices k·B … k·B + B − 1."""
    k = num_shifts(shift)
    return torch.arange(k, device=device).repeat_interleave(batch)


# -- flips -------------------------------------------------------------------------------------


def _uniform(shape, generator: torch.Generator, device, low=0.0, high=1.0) -> torch.Tensor:
    u = torch.rand(shape, generator=generator, device=device)
    return u * (high - low) + low


def random_hflip(x: torch.Tensor, generator: torch.Generator, p: float = 0.5) -> torch.Tensor:
    """Flip each image horizontally with probability `p`, independently per sample.

    The reference's HorizontalFlipLayer does this with `affine_grid`/`grid_sample` at pixel
    centres (align_corners=False), which is an exact mirror; `torch.flip` gives the same values.
    """
    return apply_hflip(x, hflip_mask(x.shape[0], generator, p=p, device=x.device))


def hflip_mask(n: int, generator: torch.Generator, *, p: float = 0.5, device=None) -> torch.Tensor:
    """bool (n,): which samples `random_hflip` flips (the same draws)."""
    return torch.rand(n, generator=generator, device=device) < p


def apply_hflip(x: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """Mirror the images where `flip` (bool (n,)) is True."""
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)


# -- SimCLR augmentation -----------------------------------------------------------------------


@runtime.once_per_device
def _constant(values: tuple[float, ...], dtype: torch.dtype) -> torch.Tensor:
    """A small constant tensor (`_constant(values, dtype, device=...)`, kept on its device)."""
    return torch.tensor(values, dtype=dtype)


def rgb_to_hsv(rgb: torch.Tensor) -> torch.Tensor:
    """The reference's RGB→HSV; the atan2 hue in [0, 1) differs from the table hue by ≤ 1.2°."""
    r, g, b = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    cmax = rgb.max(1)[0]
    cmin = rgb.min(1)[0]
    hue = torch.atan2(math.sqrt(3) * (g - b), 2 * r - g - b)
    hue = (hue % (2 * math.pi)) / (2 * math.pi)
    saturation = (cmax - cmin) / cmax
    hsv = torch.stack([hue, saturation, cmax], dim=1)
    return torch.where(torch.isfinite(hsv), hsv, torch.zeros_like(hsv))


def hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    """The reference's HSV→RGB (Wikipedia's 'alternative' formula)."""
    h, s, v = hsv[:, 0:1], hsv[:, 1:2], hsv[:, 2:3]
    c = v * s
    n = _constant((5.0, 3.0, 1.0), hsv.dtype, device=hsv.device).view(1, 3, 1, 1)
    k = (n + h * 6) % 6
    t = torch.clamp(torch.minimum(k, 4 - k), 0, 1)
    return v - c * t


@dataclass(frozen=True)
class AugmentParams:
    """The SimCLR augmentation of CSI/DIA (reference defaults)."""

    jitter_p: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.1
    gray_p: float = 0.2
    crop_scale: tuple[float, float] = (0.08, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)


def color_jitter(
    x: torch.Tensor, generator: torch.Generator, params: AugmentParams
) -> torch.Tensor:
    """Colour jitter with probability p per sample, per-sample factors, the reference's semantics.

    brightness: V·U[1−b, 1+b]; contrast: (x − mean_c)·U[1−c, 1+c] + mean_c then clamp [0, 1];
    saturation: S·U[1−s, 1+s]; hue: h += U[−h, h]·255/360 (mod 1); HSV clamped to [0, 1]. The order
    (contrast→HSV or HSV→contrast) is one coin flip per call, shared by the whole batch.
    """
    n, dev = x.shape[0], x.device
    apply = torch.rand(n, generator=generator, device=dev) < params.jitter_p
    contrast_first = torch.rand((), generator=generator, device=dev) > 0.5
    f_c = _uniform((n, 1, 1, 1), generator, dev, 1 - params.contrast, 1 + params.contrast)
    f_h = _uniform((n, 1, 1), generator, dev, -params.hue, params.hue)
    s, v = params.saturation, params.brightness
    f_s = _uniform((n, 1, 1), generator, dev, max(0.0, 1 - s), 1 + s)
    f_v = _uniform((n, 1, 1), generator, dev, max(0.0, 1 - v), 1 + v)

    def contrast(y):
        means = y.mean(dim=(2, 3), keepdim=True)
        return torch.clamp((y - means) * f_c + means, 0, 1)

    def hsv(y):
        hsv_ = rgb_to_hsv(y)
        h = (hsv_[:, 0] + f_h * (255.0 / 360.0)) % 1
        hsv_ = torch.stack([h, hsv_[:, 1] * f_s, hsv_[:, 2] * f_v], dim=1)
        return hsv_to_rgb(torch.clamp(hsv_, 0, 1))

    if runtime.host_reads_are_free(dev):
        out = hsv(contrast(x)) if bool(contrast_first) else contrast(hsv(x))
    else:  # reading it would stall the GPU: compute both orders, keep one (the same values)
        out = torch.where(contrast_first, hsv(contrast(x)), contrast(hsv(x)))
    return torch.where(apply.view(-1, 1, 1, 1), out, x)


def random_grayscale(x: torch.Tensor, generator: torch.Generator, p: float = 0.2) -> torch.Tensor:
    """Replace an image by its luma 0.299R + 0.587G + 0.114B (3 channels) with probability p."""
    apply = torch.rand(x.shape[0], generator=generator, device=x.device) < p
    weight = _constant(GRAY_WEIGHTS, x.dtype, device=x.device).view(1, 3, 1, 1)
    luma = (x * weight).sum(dim=1, keepdim=True).expand_as(x)
    return torch.where(apply.view(-1, 1, 1, 1), luma, x)


def sample_crop_boxes(
    n: int, height: int, width: int, generator: torch.Generator, *,
    scale: tuple[float, float], ratio: tuple[float, float], device=None,
) -> torch.Tensor:
    """Crop windows as (n, 4) [w, h, w_bias, h_bias] in normalised units, the reference's sampler.

    10·n trials of area U(scale)·area and log-uniform aspect ratio, rounded to whole pixels; the
    first n valid trials are used in order, the missing ones fall back to the full image. Biases are
    whole-pixel offsets drawn uniformly from the positions that keep the window inside the image.
    """
    trials = 10 * n
    area = width * height
    target = _uniform(trials, generator, device, *scale).double() * area
    log_ratio = _uniform(trials, generator, device, math.log(ratio[0]), math.log(ratio[1])).double()
    aspect = torch.exp(log_ratio)
    w = torch.round(torch.sqrt(target * aspect))
    h = torch.round(torch.sqrt(target / aspect))
    valid = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    # position of each valid trial among the valid ones; take the first n (order kept). A
    # scatter, not a boolean-mask index: the mask's size would have to be read back (a GPU stall).
    order = torch.cumsum(valid.long(), 0) - 1
    take = valid & (order < n)
    slot = torch.where(take, order, n)  # trials not taken land in a spare slot n, then dropped
    w_sel = torch.full((n + 1,), float(width), dtype=torch.float64, device=device)
    h_sel = torch.full((n + 1,), float(height), dtype=torch.float64, device=device)
    w_sel = w_sel.scatter(0, slot, torch.where(take, w, float(width)))[:n]
    h_sel = h_sel.scatter(0, slot, torch.where(take, h, float(height)))[:n]
    # randint(w - W, W - w + 1): uniform integers in [w - W, W - w]
    u = torch.rand((2, n), generator=generator, device=device, dtype=torch.float64)
    w_bias = torch.floor(u[0] * (2 * (width - w_sel) + 1)) + (w_sel - width)
    h_bias = torch.floor(u[1] * (2 * (height - h_sel) + 1)) + (h_sel - height)
    return torch.stack([w_sel / width, h_sel / height, w_bias / width, h_bias / height], dim=1)


def resized_crop(x: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Zoom into the windows `boxes` (n, 4) by an affine grid; bilinear, reflection padding."""
    n = x.shape[0]
    theta = torch.zeros(n, 2, 3, dtype=x.dtype, device=x.device)
    boxes = boxes.to(x.dtype)
    theta[:, 0, 0], theta[:, 1, 1] = boxes[:, 0], boxes[:, 1]
    theta[:, 0, 2], theta[:, 1, 2] = boxes[:, 2], boxes[:, 3]
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def random_resized_crop(
    x: torch.Tensor, generator: torch.Generator, *, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)
) -> torch.Tensor:
    """Random resized crop by affine zoom; the output keeps the input size."""
    _, _, height, width = x.shape
    boxes = sample_crop_boxes(
        x.shape[0], height, width, generator, scale=scale, ratio=ratio, device=x.device
    )
    return resized_crop(x, boxes)


def simclr_augment(
    x: torch.Tensor, generator: torch.Generator, params: AugmentParams = AugmentParams()
) -> torch.Tensor:
    """CSI's `simclr_aug`: colour jitter (p 0.8) → grayscale (p 0.2) → random resized crop.

    Args:
        x: float (N, 3, H, W); clean views in [0, 1], dissolved views may lie in [−1, 1].
        generator: a `torch.Generator` on `x.device`; every draw comes from it.
        params: ranges and probabilities; `crop_scale=(0.54, 0.54)` is the scoring crop.

    Returns:
        float (N, 3, H, W), independent random parameters per sample.
    """
    x = color_jitter(x, generator, params)
    x = random_grayscale(x, generator, params.gray_p)
    return random_resized_crop(x, generator, scale=params.crop_scale, ratio=params.crop_ratio)


def make_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A `torch.Generator` on `device` seeded with `seed`."""
    gen = torch.Generator(device=torch.device(device))
    gen.manual_seed(int(seed))
    return gen
