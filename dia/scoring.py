"""The CSI score: feature extraction (rotations only, seeded augmentations) and pure scoring.

For each image and augmentation draw j = 0 … S−1 (an explicit generator seeded j, reseeded for
every batch as the reference's `set_random_seed(j)` is), every shift k gets its own random flip,
then shift k, then the SimCLR augmentation with the crop scale fixed at 0.54; the encoder (eval
mode) gives the un-normalised projection z and the shift logits c. Then, with z̄_k, c̄_k the means
over the S draws:

    a_{k,m}  = z̄_k(x_m) / ‖z̄_k(x_m)‖                 (training memory bank)
    λcon_k   = 1 / mean_m ‖z̄_k(x_m)‖,   λcls_k = 1 / mean_m c̄_k(x_m)[k]
    s(x)     = (1/K) Σ_k [ λcon_k · max_m ⟨z̄_k(x), a_{k,m}⟩ + λcls_k · c̄_k(x)[k] ]
    anomaly_score(x) = −s(x)          (higher = more anomalous)

The training features are extracted in dataset order (batch `score.train_batch_size`), so the
memory bank and the λ weights are deterministic; the reference's shuffled train loader made them
vary slightly from run to run (algorithms.md C1.16). The shift type is the amplifier's
(`amplify.shift`, rotation by default, as the README's eval command).

Reference: alinlab/CSI and shijianjian/DIA `evals/ood_pre.py` (`_get_features`, `get_scores`,
`eval_ood_detection`), README eval command (`--ood_samples 10 --resize_factor 0.54 --resize_fix`).
"""

from __future__ import annotations

import logging
from typing import NamedTuple

import torch

from dia.augment import (
    AugmentParams, make_generator, num_shifts, random_hflip, shift_chunks, simclr_augment,
)
from dia.runtime import autocast_if

log = logging.getLogger(__name__)
# a mean logit of the applied shift below this makes λcls = 1/mean unstable (pitfall 17)
UNSTABLE_LOGIT = 0.1


class Features(NamedTuple):
    projection: torch.Tensor  # (M, K, S, d) float32, un-normalised
    shift_logits: torch.Tensor  # (M, K, S, K) float32


class CSIStatistics(NamedTuple):
    bank: torch.Tensor  # (K, M, d): normalised mean training projections per shift
    weight_con: torch.Tensor  # (K,)
    weight_cls: torch.Tensor  # (K,)


@torch.no_grad()
def extract_features(
    model: torch.nn.Module,
    images: torch.Tensor,
    *,
    num_samples: int = 10,
    crop_scale: float = 0.54,
    shift: str = "rotation",
    batch_size: int = 100,
    device: torch.device | str = "cpu",
    autocast_dtype: torch.dtype | None = None,
    progress: bool = False,
) -> Features:
    """Per-image, per-shift, per-draw projections and shift logits.

    Args:
        model: an `AmplifyEncoder` (put in eval mode here; BN uses running statistics).
        images: uint8 (M, 3, H, W) or float in [0, 1].
        num_samples: S augmentation draws, seeded 0 … S−1 (per batch).
        crop_scale: the fixed area fraction of the random resized crop.
        shift: shift type of the score (the reference scores with rotations).
        batch_size: images per batch (the draws depend on the position inside the batch).
    """
    device = torch.device(device)
    model.eval()
    k = num_shifts(shift)
    params = AugmentParams(crop_scale=(crop_scale, crop_scale))
    zs, cs = [], []
    if device.type == "cuda" and images.device.type == "cpu":  # batch copies need not wait
        images = images.pin_memory()
    starts = range(0, images.shape[0], batch_size)
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts, desc="features", unit="batch")
    for start in starts:
        x = _to_float01(images[start : start + batch_size].to(device, non_blocking=True))
        b = x.shape[0]
        z_batch, c_batch = [], []
        for seed in range(num_samples):
            gen = make_generator(seed, device)
            x_t = shift_chunks(random_hflip(x.repeat(k, 1, 1, 1), gen), shift)
            x_t = simclr_augment(x_t, gen, params)
            with autocast_if(device.type, autocast_dtype):
                out = model(x_t)
            z_batch.append(out.projection.float().view(k, b, -1))
            c_batch.append(out.shift_logits.float().view(k, b, -1))
        zs.append(torch.stack(z_batch, dim=2).permute(1, 0, 2, 3))  # (b, K, S, d)
        cs.append(torch.stack(c_batch, dim=2).permute(1, 0, 2, 3))
    return Features(torch.cat(zs).cpu(), torch.cat(cs).cpu())  # read back once, at the end


def _to_float01(x: torch.Tensor) -> torch.Tensor:
    return x.float() / 255.0 if x.dtype == torch.uint8 else x.float()


def csi_statistics(train: Features, eps: float = 1e-8) -> CSIStatistics:
    """Memory bank and per-shift weights λcon_k, λcls_k from the training features.

    λcls_k = 1 / (mean logit of the applied shift), as in the reference; a mean at or near 0
    or below it (a nearly shift-invariant dataset, algorithms.md pitfall 17) makes λcls_k huge
    or negative, which is logged as a warning (the weights are also in csi_statistics.json).
    """
    z_mean = train.projection.mean(dim=2)  # (M, K, d)
    c_mean = train.shift_logits.mean(dim=2)  # (M, K, K)
    k = z_mean.shape[1]
    norms = z_mean.norm(dim=2)  # (M, K)
    bank = (z_mean / (norms.unsqueeze(-1) + eps)).transpose(0, 1).contiguous()  # (K, M, d)
    correct = c_mean[:, torch.arange(k), torch.arange(k)]  # (M, K): logit of the applied shift
    mean_correct = correct.mean(dim=0)
    unstable = [i for i, v in enumerate(mean_correct.tolist()) if not v >= UNSTABLE_LOGIT]
    if unstable:
        log.warning(
            "CSI score: the mean logit of the applied shift is below %s for shift(s) %s (%s), so "
            "λcls = 1/mean is huge or negative there and the shift term of the score is unstable: "
            "the training images look alike under these shifts (e.g. the synthetic set's "
            "textures), or the encoder trained too briefly to tell them apart",
            UNSTABLE_LOGIT, unstable, ", ".join(f"{mean_correct[i]:.3g}" for i in unstable))
    return CSIStatistics(bank, 1.0 / norms.mean(dim=0), 1.0 / mean_correct)


def _score_parts(
    stats: CSIStatistics, test: Features, chunk: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """max_m ⟨z̄_k(x), a_{k,m}⟩ and c̄_k(x)[k] of every test image and shift, each (M', K)."""
    z_mean = test.projection.mean(dim=2)  # (M', K, d)
    c_mean = test.shift_logits.mean(dim=2)  # (M', K, K)
    k = z_mean.shape[1]
    sim_max = torch.empty(z_mean.shape[0], k)
    for start in range(0, z_mean.shape[0], chunk):
        z = z_mean[start : start + chunk].transpose(0, 1)  # (K, c, d)
        sim_max[start : start + chunk] = torch.bmm(z, stats.bank.transpose(1, 2)).amax(dim=2).T
    return sim_max, c_mean[:, torch.arange(k), torch.arange(k)]


def csi_normality_score(stats: CSIStatistics, test: Features, chunk: int = 1024) -> torch.Tensor:
    """s(x) for every test image (higher = more normal), (M',) float64."""
    sim_max, correct = _score_parts(stats, test, chunk)
    per_shift = stats.weight_con * sim_max + stats.weight_cls * correct
    return per_shift.double().mean(dim=1)


def csi_score_terms(
    stats: CSIStatistics, test: Features, chunk: int = 1024
) -> dict[str, torch.Tensor]:
    """The two terms of s(x) apart, each (M',) float64 (higher = more normal):

        contrast = (1/K) Σ_k λcon_k · max_m ⟨z̄_k(x), a_{k,m}⟩
        shift    = (1/K) Σ_k λcls_k · c̄_k(x)[k]

    Their sum is `csi_normality_score` up to rounding (that function adds the terms before it
    averages, as the published scores were computed, so it keeps its own arithmetic). A
    diagnostic, not a score the suite reports: it tells which term ranks the test images, e.g. a
    shift term with negative λcls (a shift head that learnt nothing, `csi_statistics` warns)
    working against the other.
    """
    sim_max, correct = _score_parts(stats, test, chunk)
    return {"contrast": (stats.weight_con * sim_max).double().mean(dim=1),
            "shift": (stats.weight_cls * correct).double().mean(dim=1)}


def csi_anomaly_score(train: Features, test: Features) -> torch.Tensor:
    """anomaly_score = −s(x): higher = more anomalous, (M',) float64."""
    return -csi_normality_score(csi_statistics(train), test)
