"""How well a trained DDPM predicts the noise at each timestep: the check dissolving depends on.

Dissolving uses the U-Net only at t ∈ {30..99} of 1000, where the noise is small
(√(1−ᾱₜ) = 0.06-0.17) and hardest to tell from image detail. A DDPM trained with t ~ U{0..999}
sees those timesteps in 7 % of its samples, and its loss curve, an average over all t, does not
show how well it does there. The yardstick is a model that always answers
ε = 0, whose L1 error is E|ε| = √(2/π) ≈ 0.80: near it, x̂₀ is the input plus the model's error
rather than the input without its fine detail. Measured on the DDPM's own training images and
on held-out normal images of the validation split, never on the test split.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from dia.config import ExperimentConfig

ZERO_PREDICTOR_L1 = math.sqrt(2.0 / math.pi)  # E|ε| for ε ~ N(0, 1)
TIMESTEPS = (10, 30, 50, 70, 99, 150, 200, 400, 700)


@torch.no_grad()
def noise_error(
    unet: torch.nn.Module,
    alphas_cumprod: torch.Tensor,
    images11: torch.Tensor,
    timesteps: tuple[int, ...] = TIMESTEPS,
    *,
    seed: int = 0,
    batch_size: int = 64,
) -> list[dict[str, float]]:
    """Mean |ε_θ(x_t, t) − ε| per timestep, for x_t = √ᾱₜ·x₀ + √(1−ᾱₜ)·ε.

    Args:
        unet: an ε-prediction U-Net of `dia.diffusion.build_unet` (eval mode).
        alphas_cumprod: ᾱ of its schedule, (T,).
        images11: (N, 3, 32, 32) images in [−1, 1] at the U-Net's resolution.
        timesteps: where to measure.
        seed: for the noise (the same noise at every t).

    Returns:
        one ``{"t", "l1", "zero_l1"}`` per timestep; ``zero_l1`` is the error of predicting 0
        with the same noise draws.
    """
    device = next(unet.parameters()).device
    g = torch.Generator().manual_seed(seed)
    eps = torch.randn(images11.shape, generator=g)
    rows = []
    for t in timesteps:
        a = alphas_cumprod[t].to(torch.float32).cpu()
        total = 0.0
        for start in range(0, images11.shape[0], batch_size):
            x0 = images11[start:start + batch_size]
            e = eps[start:start + batch_size]
            x_t = (a.sqrt() * x0 + (1 - a).sqrt() * e).to(device)
            t_batch = torch.full((x0.shape[0],), t, dtype=torch.long, device=device)
            pred = unet(x_t, t_batch).sample.float().cpu()
            total += float((pred - e).abs().sum())
        rows.append({"t": int(t), "l1": total / eps.numel(), "zero_l1": float(eps.abs().mean())})
    return rows


def check_ddpm(
    cfg: ExperimentConfig,
    *,
    results_root: str | Path = "results",
    data_root: str | Path | None = None,
    num_images: int = 128,
    timesteps: tuple[int, ...] = TIMESTEPS,
    device: torch.device | str | None = None,
) -> list[dict[str, float]]:
    """`noise_error` of the finished DDPM of `cfg` on training normals and on held-out normals.

    Returns:
        the rows of `noise_error`, each with a ``"split"``: ``"train"`` for a seeded sample of
        `num_images` training normals, then ``"val"`` for up to `num_images` normal images of the
        validation split where the dataset has one (never the test split). The DDPM never saw
        the val images, so a val error well above the train error means it memorised its
        training set rather than learnt to denoise the kind of image it will dissolve.
    """
    from dia.data import load_for_config
    from dia.diffusion import diffusion_run_dir, load_dissolver_model, prepare_images
    from dia.stages import stage_config

    cfg = stage_config(cfg, "diffusion")
    unet, alphas_cumprod = load_dissolver_model(diffusion_run_dir(cfg, results_root), device)
    splits = load_for_config(cfg, data_root=data_root or None, results_root=results_root)
    samples = {"train": splits.train, "val": splits.val[splits.val_labels == 0]}
    g = torch.Generator().manual_seed(cfg.seed)
    rows = []
    for split, images in samples.items():
        if images.shape[0] == 0:
            continue
        pick = torch.randperm(images.shape[0], generator=g)[:num_images]
        images11 = prepare_images(images[pick], device="cpu")
        rows += [{"split": split, **row}
                 for row in noise_error(unet, alphas_cumprod, images11, timesteps, seed=cfg.seed)]
    return rows
