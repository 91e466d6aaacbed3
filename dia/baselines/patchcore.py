"""PatchCore (Roth et al., CVPR 2022) on an ImageNet MobileNetV2 (`dia.mobilenet`).

1. Patch features: the outputs of MobileNetV2 `features` blocks `cfg.peers.patchcore_layers`
   (default 6 and 13: strides 8 and 16, the analogue of WideResNet-50 layer2 + layer3), each
   locally aggregated by a 3x3 average pool (stride 1, padding 1), upsampled (bilinear) to the
   first layer's grid and concatenated: one vector per position of the stride-8 grid.
2. Memory bank: every patch vector of every training normal, reduced by a greedy k-centre
   coreset (`patchcore_coreset_ratio`), selected on a Gaussian random projection to
   `patchcore_projection_dim` dims (Johnson-Lindenstrauss, as the paper) for speed.
3. Score: each test patch's Euclidean distance to its nearest memory-bank vector; the image score
   is the maximum over its patches.

Images are resized (bilinear) to `patchcore_image_size` and normalised with ImageNet mean/std.
The run's memory bank is checkpointed (atomically) once selected; a killed run resumes from it.
Not implemented: the paper's neighbourhood re-weighting of the max patch score (b = 9); the
reference implementation also uses WideResNet-50, the DIA paper's row says MobileNetV2.
"""

from __future__ import annotations

import io
import time
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F
from tqdm import tqdm

from dia.checkpoints import load_run_checkpoint, save_checkpoint
from dia.results import Run, atomic_write_bytes

METHOD = "patchcore"
BANK = "memory_bank.pt"


# -- features -----------------------------------------------------------------------------------


def prepare_images(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> ImageNet-normalised float at `size` x `size` (bilinear)."""
    from dia.mobilenet import imagenet_normalize

    x = images.float() / 255.0
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                          antialias=x.shape[-1] > size)
    return imagenet_normalize(x)


@torch.no_grad()
def patch_features(backbone, images: torch.Tensor, *, layers: tuple[int, ...], image_size: int,
                   batch_size: int = 32, device: torch.device | str = "cpu",
                   desc: str | None = None) -> torch.Tensor:
    """(N, P, D) locally aware patch features of uint8 images (P = positions of the first
    layer's grid, D = the summed channels of `layers`)."""
    out = []
    starts = range(0, images.shape[0], batch_size)
    for start in tqdm(starts, desc=desc or "patchcore features", disable=desc is None):
        x = prepare_images(images[start:start + batch_size], image_size).to(device)
        maps = backbone.intermediate(x, tuple(layers))
        pooled = [F.avg_pool2d(maps[i], 3, 1, 1) for i in layers]
        grid = pooled[0].shape[-2:]
        pooled = [p if p.shape[-2:] == grid else
                  F.interpolate(p, size=grid, mode="bilinear", align_corners=False) for p in pooled]
        feats = torch.cat(pooled, dim=1)  # (B, D, h, w)
        out.append(feats.flatten(2).transpose(1, 2).float().cpu())
    return torch.cat(out)


# -- coreset ------------------------------------------------------------------------------------


def greedy_coreset(features: torch.Tensor, k: int, *, projection_dim: int | None = 128,
                   start: int | None = None, generator: torch.Generator | None = None,
                   device: torch.device | str = "cpu", chunk: int = 1 << 20,
                   progress: bool = False) -> torch.Tensor:
    """Indices of a greedy k-centre coreset of `features` (M, D) (Sener & Savarese 2018).

    Start from `start` (default: a seeded random index), then repeatedly add the point farthest
    from the selected set. With `projection_dim` < D the distances are computed on a Gaussian
    random projection (the paper's speed-up); None or >= D keeps the features as they are.
    """
    m = features.shape[0]
    if not 1 <= k <= m:
        raise ValueError(f"coreset size {k} must be in 1..{m}")
    gen = generator or torch.Generator().manual_seed(0)
    x = features.float()
    if projection_dim is not None and projection_dim < x.shape[1]:
        proj = torch.randn(x.shape[1], projection_dim, generator=gen) / projection_dim ** 0.5
        x = x @ proj
    x = x.to(device)
    if start is None:
        start = int(torch.randint(m, (1,), generator=gen))
    selected = torch.empty(k, dtype=torch.long)
    selected[0] = start
    min_dist = torch.full((m,), float("inf"), device=device)
    sq = (x * x).sum(1)
    last = start
    for i in tqdm(range(1, k), desc="patchcore coreset", disable=not progress, mininterval=5):
        # squared distance of every point to the last selected centre
        for a in range(0, m, chunk):
            d = torch.addmv(sq[a:a + chunk], x[a:a + chunk], x[last], alpha=-2).add_(sq[last])
            torch.minimum(min_dist[a:a + chunk], d, out=min_dist[a:a + chunk])
        last = int(torch.argmax(min_dist))
        selected[i] = last
    return selected


# -- scoring ------------------------------------------------------------------------------------


@torch.no_grad()
def nearest_distance(queries: torch.Tensor, bank: torch.Tensor, *, chunk: int = 4096,
                     device: torch.device | str = "cpu") -> torch.Tensor:
    """Euclidean distance of each row of `queries` (Q, D) to its nearest row of `bank` (M, D)."""
    bank = bank.to(device).float()
    bank_sq = (bank * bank).sum(1)
    out = []
    for a in range(0, queries.shape[0], chunk):
        q = queries[a:a + chunk].to(device).float()
        d2 = (q * q).sum(1, keepdim=True) - 2 * q @ bank.T + bank_sq[None]
        out.append(d2.min(1).values.clamp_min(0).sqrt().cpu())
    return torch.cat(out)


@torch.no_grad()
def score_patchcore(backbone, bank: torch.Tensor, images: torch.Tensor, *,
                    layers: tuple[int, ...], image_size: int, batch_size: int = 32,
                    device: torch.device | str = "cpu", progress: bool = False,
                    desc: str = "patchcore test") -> tuple[np.ndarray, np.ndarray]:
    """(image scores (N,), patch score maps (N, h, w)): max over patches of the NN distance."""
    scores, maps = [], []
    starts = range(0, images.shape[0], batch_size)
    for start in tqdm(starts, desc=desc, disable=not progress):
        feats = patch_features(backbone, images[start:start + batch_size], layers=layers,
                               image_size=image_size, batch_size=batch_size, device=device)
        b, p, d = feats.shape
        dist = nearest_distance(feats.reshape(b * p, d), bank, device=device).view(b, p)
        scores.append(dist.max(1).values)
        side = int(round(p ** 0.5))
        maps.append(dist.view(b, side, side) if side * side == p else dist)
    return torch.cat(scores).double().numpy(), torch.cat(maps).numpy()


# -- the run ------------------------------------------------------------------------------------


def _save_bank(run: Run, state: dict[str, Any]) -> None:
    save_checkpoint(run.checkpoint_dir / BANK, state)


def load_bank(run: Run) -> dict[str, Any] | None:
    return load_run_checkpoint(run.checkpoint_dir / BANK, run, needs=("bank", "patches"))


def build_memory_bank(run: Run, cfg, backbone, train: torch.Tensor,
                      device: torch.device) -> dict[str, Any]:
    """Features of every training normal -> coreset -> memory bank (checkpointed; resumed)."""
    state = load_bank(run)
    if state is not None:
        run.append_log({"event": "resume", "bank": list(state["bank"].shape)})
        return state
    p = cfg.peers
    t0 = time.perf_counter()
    feats = patch_features(backbone, train, layers=p.patchcore_layers,
                           image_size=p.patchcore_image_size, batch_size=p.patchcore_batch_size,
                           device=device, desc="patchcore train features")
    feats = feats.reshape(-1, feats.shape[-1])
    t1 = time.perf_counter()
    run.append_log({"event": "features", "patches": int(feats.shape[0]), "dim": int(feats.shape[1]),
                    "seconds": round(t1 - t0, 3)})
    k = max(1, int(round(feats.shape[0] * p.patchcore_coreset_ratio)))
    if k < feats.shape[0]:
        gen = torch.Generator().manual_seed(cfg.seed)
        idx = greedy_coreset(feats, k, projection_dim=p.patchcore_projection_dim, generator=gen,
                             device=device, progress=True)
        bank = feats[idx].clone()
    else:
        bank = feats
    t2 = time.perf_counter()
    state = {"run_hash": run.hash, "bank": bank, "patches": int(feats.shape[0]),
             "feature_seconds": round(t1 - t0, 3), "coreset_seconds": round(t2 - t1, 3)}
    _save_bank(run, state)
    run.append_log({"event": "coreset", "bank": list(bank.shape), "seconds": round(t2 - t1, 3)})
    return state


def run_patchcore(run: Run, cfg, splits, *, device: torch.device | str = "cpu") -> dict[str, Any]:
    """Fit PatchCore in `run` on `splits` (a `DatasetSplits`) or reuse its memory bank, score the
    test set (and the validation split where it has both classes), write scores.csv,
    patch_maps.npy (test), val_scores.csv and metrics.csv. Returns the summary for DONE."""
    from dia.metrics import score_splits, write_metrics
    from dia.mobilenet import mobilenet_v2

    p = cfg.peers
    device = torch.device(device)
    backbone = mobilenet_v2(pretrained=True).to(device)
    counts = splits.sizes()
    run.append_log({"event": "start", "device": str(device), "image_size": p.patchcore_image_size,
                    "layers": list(p.patchcore_layers), **counts})
    t0 = time.perf_counter()
    state = build_memory_bank(run, cfg, backbone, splits.train, device)
    fit_seconds = time.perf_counter() - t0
    seconds: dict[str, float] = {}

    def score(images: torch.Tensor, split: str) -> np.ndarray:
        t1 = time.perf_counter()
        scores, maps = score_patchcore(
            backbone, state["bank"], images, layers=p.patchcore_layers,
            image_size=p.patchcore_image_size, batch_size=p.patchcore_batch_size, device=device,
            progress=True, desc=f"patchcore {split}")
        seconds[split] = round(time.perf_counter() - t1, 1)
        if split == "test":  # the maps of the test images, for the notebook's figure
            buffer = io.BytesIO()
            np.save(buffer, maps.astype(np.float16))
            atomic_write_bytes(run.file("patch_maps.npy"), buffer.getvalue())
        return scores

    rows = score_splits(run, splits, score, method=METHOD, profile=cfg.profile,
                        image_size=p.patchcore_image_size, dataset=cfg.dataset)
    write_metrics(run, rows)
    run.append_log({"event": "scored", "seconds": seconds})
    return {**{row["metric"]: row["value"] for row in rows},
            "image_size": p.patchcore_image_size,
            "layers": list(p.patchcore_layers), "bank": list(state["bank"].shape),
            "patches": state["patches"], "fit_seconds": round(fit_seconds, 1),
            "score_seconds": seconds["test"], "val_score_seconds": seconds.get("val"), **counts,
            "device": str(device)}
