"""Blur dissolvers: the ablation baselines of the DIA repository (Gaussian and median blur).

They replace the diffusion step of the dissolved view and take the same call,
``dissolver(images01, t)``, so the amplifier does not know which one it has. The strength is
drawn per batch and shift exactly like t (`dia.dissolve.sample_t`) and mapped linearly onto the
blur: with u = (t − t_min)/(t_max − t_min) ∈ [0, 1), the Gaussian σ = 1.4·(0.5 + u) (the
reference's fixed σ = 1.4 of a 7×7 kernel sits in the middle of the range) and the median kernel
is 3, 5 or 7 pixels for u in the lower, middle and upper third (the reference uses 7).

One deliberate difference from the reference (`algorithms.md` C1.11): its `Blur` ignores the
`diffusion=False` flag and blurs all three views; here only the dissolved view is blurred, so
the ablation measures what it says.
"""

from __future__ import annotations

from typing import Literal

import torch

KERNEL = 7
GAUSSIAN_SIGMA = 1.4


class BlurDissolver:
    """``BlurDissolver("gaussian_blur" | "median_blur", t_min, t_max)(images01, t)``."""

    def __init__(self, kind: Literal["gaussian_blur", "median_blur"], t_min: int = 30,
                 t_max: int = 100) -> None:
        if kind not in ("gaussian_blur", "median_blur"):
            raise ValueError(f"unknown blur {kind!r}; choose gaussian_blur or median_blur")
        if not 0 <= t_min < t_max:
            raise ValueError(f"need 0 <= t_min < t_max, got {t_min}, {t_max}")
        self.kind, self.t_min, self.t_max = kind, t_min, t_max

    def strength(self, t: torch.Tensor) -> torch.Tensor:
        """u in [0, 1) per sample from the drawn t."""
        return (t.float() - self.t_min) / (self.t_max - self.t_min)

    @torch.no_grad()
    def __call__(self, images01: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        import kornia

        t = torch.as_tensor(t, device=images01.device).reshape(-1).expand(images01.shape[0])
        u = self.strength(t).clamp(0, 1)
        if self.kind == "gaussian_blur":
            sigma = (GAUSSIAN_SIGMA * (0.5 + u)).unsqueeze(1).repeat(1, 2)
            return kornia.filters.gaussian_blur2d(images01, (KERNEL, KERNEL), sigma,
                                                  border_type="reflect")
        sizes = (3 + 2 * (u * 3).floor().clamp(max=2)).long()
        out = torch.empty_like(images01)
        for size in sizes.unique().tolist():  # at most 3 kernel sizes per call
            rows = sizes == size
            out[rows] = kornia.filters.median_blur(images01[rows], (size, size))
        return out
