"""The dissolving transformation: one reverse-diffusion step from a clean image to x̂₀.

For a frozen ε-prediction U-Net and the cumulative products ᾱₜ of its noise schedule,

    x̂₀ = √(1/ᾱₜ)·x − √(1/ᾱₜ − 1)·ε_θ(x, t)

is applied to the *clean* image x, used as if it were x_t. No noise is added
(`reference/algorithms.md` A2). The result keeps the coarse structure and removes fine-grained
detail; the larger t, the more is removed. The DIA amplifier uses dissolved copies as extra
negatives.

Decisions (SPEC section 5; `algorithms.md` C1.1-C1.5):

* ``value_range="reference"`` (default) reproduces the reference code: images in [0, 1] go in
  unchanged although the U-Net was trained on [−1, 1]; x̂₀ is clamped to [−1, 1] and not
  rescaled. ``"normalized"`` maps [0, 1] → [−1, 1] before and back after (an ablation).
* 28² and 32² inputs are zero-padded to 32² and cropped back (MedMNIST ``Pad(2)`` /
  ``CenterCrop(28)``); every other size is resized to `resolution` and back with bilinear
  interpolation without antialiasing (torchvision 0.12 tensor ``Resize``).
* t is drawn once per call site (`sample_t`): one t per (batch, rotation), t ∈ {30, …, 99}.
* x̂₀ is computed here from ``alphas_cumprod`` (per-sample t allowed), not by
  ``scheduler.step``, which takes one scalar t and draws noise.
* ``keep_gray=True`` (not the reference; off by default) replaces x̂₀ of a gray input (all
  channels equal) by its channel mean. The U-Net is 3-channel; a short-trained one returns gray
  inputs slightly tinted, and after the contrastive augmentation (whose hue and saturation
  jitter leave gray images gray) only dissolved views carry colour: a shortcut that tells them
  apart without looking at fine detail.

The amplifier uses only `Dissolver`.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from dia import runtime

ValueRange = Literal["reference", "normalized"]
VALUE_RANGES = ("reference", "normalized")


class DissolveError(ValueError):
    """Images, timesteps or options dissolving cannot take; the message says what is expected."""


def predict_x0(
    eps: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor | int, alphas_cumprod: torch.Tensor
) -> torch.Tensor:
    """x̂₀ = √(1/ᾱₜ)·x_t − √(1/ᾱₜ − 1)·ε, per sample, without clamping.

    Args:
        eps: predicted noise, shape (B, C, H, W).
        x_t: the input the noise was predicted from, same shape.
        t: int, 0-d tensor or int64 tensor (B,) of 0-indexed timesteps.
        alphas_cumprod: ᾱ of the schedule, shape (T,).
    """
    t = torch.as_tensor(t, device=alphas_cumprod.device, dtype=torch.long)
    a = alphas_cumprod[t].double()  # coefficients in float64: 1/ᾱ − 1 cancels for small t
    shape = (-1, *([1] * (x_t.dim() - 1)))  # (B or 1, 1, 1, 1)
    c_x = (1.0 / a).sqrt().float().to(x_t.device).reshape(shape)
    c_eps = (1.0 / a - 1.0).sqrt().float().to(x_t.device).reshape(shape)
    return c_x * x_t.float() - c_eps * eps.float()


def sample_t(
    num: int,
    generator: torch.Generator | None = None,
    t_min: int = 30,
    t_max: int = 100,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """One timestep for a whole batch: ``t = int(t_min + (t_max − t_min)·U)``, U ~ U[0, 1).

    With the defaults this is the reference's ``int(100·(0.3 + 0.7·U))`` ∈ {30, …, 99}. Call it
    once per batch and rotation (the reference draws one t per call of its transform).

    Returns:
        int64 tensor (num,) on `device`, every entry the same t. t is computed where the
        generator is, so a CUDA generator is never read back by the host.
    """
    if not 0 <= t_min < t_max:
        raise DissolveError(f"need 0 <= t_min < t_max, got t_min={t_min}, t_max={t_max}")
    gen_device = generator.device if generator is not None else "cpu"
    u = torch.rand((), generator=generator, device=gen_device)
    # on the generator's device, in float64 as Python would compute it: no host read
    t = (u.double() * (t_max - t_min) + t_min).long().clamp_(max=t_max - 1)
    return t.reshape(1).repeat(num).to(device)


def _check_images(images: torch.Tensor, check_values: bool) -> None:
    if not isinstance(images, torch.Tensor):
        raise DissolveError(f"images must be a torch.Tensor, got {type(images).__name__}")
    if images.dim() != 4 or images.shape[1] != 3:
        raise DissolveError(
            f"images must have shape (B, 3, H, W), got {tuple(images.shape)}"
        )
    if not images.is_floating_point():
        raise DissolveError(
            f"images must be float in [0, 1], got dtype {images.dtype} "
            "(convert uint8 with images.float() / 255)"
        )
    if images.numel() == 0:
        raise DissolveError("images is empty")
    if not check_values:
        return
    lo, hi = torch.aminmax(images.detach())
    lo, hi = float(lo), float(hi)
    if not (lo >= 0.0 and hi <= 1.0):  # also catches NaN
        raise DissolveError(f"images must lie in [0, 1], got values in [{lo:.4g}, {hi:.4g}]")


def _check_t(
    t: torch.Tensor | int, batch: int, num_steps: int, device: torch.device, check_values: bool
) -> torch.Tensor:
    t = torch.as_tensor(t, device=device)
    if t.is_floating_point() or t.dtype == torch.bool:
        raise DissolveError(f"t must be integer timesteps, got dtype {t.dtype}")
    t = t.long()
    if t.dim() == 0:
        t = t.expand(batch)
    if t.shape != (batch,):
        raise DissolveError(f"t must be an int or have shape ({batch},), got {tuple(t.shape)}")
    if not check_values:
        return t
    lo, hi = torch.aminmax(t)
    if int(lo) < 0 or int(hi) >= num_steps:
        raise DissolveError(f"t must lie in [0, {num_steps - 1}], got [{int(lo)}, {int(hi)}]")
    return t


def to_resolution(images: torch.Tensor, resolution: int = 32) -> tuple[torch.Tensor, tuple]:
    """Bring (B, C, H, W) images to resolution² the reference's way; returns (x, how-to-undo).

    Square inputs no larger than `resolution` with an even margin (28 → 32) are zero-padded;
    everything else is resized bilinearly without antialiasing.
    """
    h, w = images.shape[-2:]
    if h == w and h <= resolution and (resolution - h) % 2 == 0:
        p = (resolution - h) // 2
        x = F.pad(images, (p, p, p, p)) if p else images
        return x, ("pad", p, h, w)
    x = F.interpolate(images, size=(resolution, resolution), mode="bilinear",
                      align_corners=False, antialias=False)
    return x, ("resize", 0, h, w)


def from_resolution(x: torch.Tensor, how: tuple) -> torch.Tensor:
    """Undo `to_resolution`: centre crop after a pad, bilinear resize (no antialias) otherwise."""
    kind, p, h, w = how
    if kind == "pad":
        return x[..., p:p + h, p:p + w] if p else x
    return F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=False)


def gray_like_input(out: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """`out` with each sample whose input was gray (R = G = B exactly) replaced by its channel mean."""
    gray = (images[:, :1] == images[:, 1:]).flatten(1).all(1).view(-1, 1, 1, 1)
    return torch.where(gray, out.mean(1, keepdim=True).expand_as(out), out)


def dissolve(
    images: torch.Tensor,
    unet: torch.nn.Module,
    alphas_cumprod: torch.Tensor,
    t: torch.Tensor | int,
    *,
    value_range: ValueRange = "reference",
    resolution: int = 32,
    autocast_dtype: torch.dtype | None = None,
    keep_gray: bool = False,
    check_values: bool = True,
) -> torch.Tensor:
    """Dissolve a batch: resize/pad to `resolution`, one-step x̂₀, clamp, back to the input size.

    Args:
        images: float (B, 3, H, W) in [0, 1], on any device (the U-Net's device is used).
        unet: a frozen ε-prediction U-Net of `dia.diffusion.build_unet`.
        alphas_cumprod: ᾱ of its schedule, (T,).
        t: int64 (B,) per-sample timesteps, or one int for all.
        value_range: ``"reference"`` (input as is; output clamped to [−1, 1], not rescaled) or
            ``"normalized"`` (×2−1 before, (·+1)/2 after, clamped to [0, 1]).
        resolution: the U-Net's training resolution.
        autocast_dtype: e.g. ``torch.bfloat16`` to run the U-Net under autocast (CUDA or CPU).
        keep_gray: make x̂₀ of gray inputs gray (`gray_like_input`); not the reference.
        check_values: check that the images lie in [0, 1] and t in the schedule (reading them
            back stalls a GPU; shapes and dtypes are always checked).

    Returns:
        float tensor of the input's shape, dtype and device.
    """
    if value_range not in VALUE_RANGES:
        raise DissolveError(f"value_range={value_range!r}; choose one of {VALUE_RANGES}")
    _check_images(images, check_values)
    device = next(unet.parameters()).device
    t = _check_t(t, images.shape[0], int(alphas_cumprod.shape[0]), device, check_values)
    x = images.to(device=device, dtype=torch.float32)
    x, how = to_resolution(x, resolution)
    if value_range == "normalized":
        x = x * 2.0 - 1.0
    with torch.no_grad():
        x = x.contiguous(memory_format=torch.channels_last)
        with runtime.autocast_if(device.type, autocast_dtype):
            eps = unet(x, t).sample
        x0 = predict_x0(eps.float(), x, t, alphas_cumprod).clamp_(-1.0, 1.0)
        if value_range == "normalized":
            x0 = ((x0 + 1.0) / 2.0).clamp_(0.0, 1.0)
        out = from_resolution(x0, how).contiguous()
        if keep_gray:
            out = gray_like_input(out, images.to(out.device)).contiguous()
    return out.to(device=images.device, dtype=images.dtype)


class Dissolver:
    """A frozen dissolving transform: ``Dissolver(...)(images01, t) -> dissolved``.

    Holds the U-Net (eval mode, no gradients), ᾱ, the value range and the resolution. The U-Net
    runs channels_last, on CUDA under bf16 autocast (``cuda_bf16``), on a CPU in fp32 unless
    ``cpu_bf16`` (`dia.runtime.bf16_autocast`). The values of every batch (images in [0, 1], t in
    the schedule) are checked on the CPU; on a GPU those of the first batch only, later ones for
    shape and dtype, since reading values back would stall the GPU every iteration.
    """

    def __init__(
        self,
        unet: torch.nn.Module,
        alphas_cumprod: torch.Tensor,
        value_range: ValueRange = "reference",
        resolution: int = 32,
        *,
        cuda_bf16: bool = True,
        cpu_bf16: bool = False,
        keep_gray: bool = False,
    ) -> None:
        if value_range not in VALUE_RANGES:
            raise DissolveError(f"value_range={value_range!r}; choose one of {VALUE_RANGES}")
        self.unet = unet.eval().requires_grad_(False)
        self.device = next(unet.parameters()).device
        # channels_last on every device (2-core CPU: 96 images 1130 → 985 ms, bench_cpu_layout.py)
        self.unet = self.unet.to(memory_format=torch.channels_last)
        self.alphas_cumprod = alphas_cumprod.to(self.device, torch.float32)
        self.value_range = value_range
        self.resolution = resolution
        self.keep_gray = keep_gray
        self.autocast_dtype = runtime.bf16_autocast(self.device, cuda=cuda_bf16, cpu=cpu_bf16,
                                                     switch="dissolve.cpu_bf16")
        self._values_checked = False

    @property
    def num_timesteps(self) -> int:
        return int(self.alphas_cumprod.shape[0])

    def __call__(self, images01: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        out = dissolve(
            images01, self.unet, self.alphas_cumprod, t,
            value_range=self.value_range, resolution=self.resolution,
            autocast_dtype=self.autocast_dtype, keep_gray=self.keep_gray,
            check_values=not self._values_checked or runtime.host_reads_are_free(self.device),
        )
        self._values_checked = True
        return out

    @classmethod
    def from_run(cls, run, dissolve_cfg, device: torch.device | str | None = None) -> "Dissolver":
        """Load the raw weights of a finished diffusion run (`dia.diffusion.train_diffusion`).

        Args:
            run: the diffusion `Run`, its folder, or a checkpoint file.
            dissolve_cfg: `cfg.dissolve` (value_range, resolution, cuda_bf16, cpu_bf16,
                keep_gray).
            device: where the U-Net runs (default: CUDA if available).
        """
        if dissolve_cfg.dissolver != "diffusion":
            raise DissolveError(
                f"dissolve.dissolver={dissolve_cfg.dissolver!r} is a blur baseline; "
                "Dissolver.from_run builds only the diffusion dissolver"
            )
        from dia.diffusion import load_dissolver_model

        unet, alphas_cumprod = load_dissolver_model(run, device)
        return cls(unet, alphas_cumprod, dissolve_cfg.value_range, dissolve_cfg.resolution,
                   cuda_bf16=dissolve_cfg.cuda_bf16, cpu_bf16=dissolve_cfg.cpu_bf16,
                   keep_gray=dissolve_cfg.keep_gray)

    def __repr__(self) -> str:
        n = sum(p.numel() for p in self.unet.parameters())
        return (f"Dissolver({n / 1e6:.1f}M params, device={self.device}, "
                f"value_range={self.value_range!r}, resolution={self.resolution}, "
                f"keep_gray={self.keep_gray})")
