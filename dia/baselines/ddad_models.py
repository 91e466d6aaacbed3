"""DDAD-ASR building blocks: backbones, score maps, the unlabeled set, synthetic anomalies.

Pure tensor code with no run folders; `dia.baselines.ddad` drives training. Everything follows
the reference code caiyu6666/DDAD-ASR as described in `reference/algorithms.md` part B:

* images are 64x64 grayscale in [-1, 1] (`to_ddad_gray`);
* `AutoEncoder` is the reference AE (B2); `uncertainty=True` gives AE-U (mean, log-variance);
  `MemAE` puts a 25-slot memory on the 16-d latent, shrinkage off (`shrink_thres` 0);
* `score_maps` gives the rec / intra / inter pixel maps of B4 (unbiased std over the NDM; AE-U
  divides by the NDM's mean predicted variance only, C2.2);
* `draw_unlabeled` builds D_u at the asked anomaly rate, deterministically for a seed;
* `paste_patches` makes the ASR-Net's self-supervised anomalies (B5);
* `RefineNet` and `focal_loss` are the ASR-Net and its loss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

BACKBONES = ("ae", "aeu", "memae")
GRAY_WEIGHTS = (0.299, 0.587, 0.114)  # PIL's convert("L"), ITU-R 601-2


# -- preprocessing ------------------------------------------------------------------------------


def to_ddad_gray(images: torch.Tensor, image_size: int) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float (N, 1, S, S) grayscale in [-1, 1] (reference: PIL "L", bilinear).

    RGB goes to gray with PIL's luma weights; one channel is taken as is. Resizing is bilinear,
    antialiased when shrinking (as PIL's bilinear resize is).
    """
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected uint8 images (N, 1|3, H, W), got shape {tuple(images.shape)}")
    x = images.float()
    if x.shape[1] == 3:
        w = torch.tensor(GRAY_WEIGHTS, dtype=x.dtype).view(1, 3, 1, 1)
        x = (x * w).sum(dim=1, keepdim=True)
    if x.shape[-2:] != (image_size, image_size) and x.shape[0] > 0:
        shrink = x.shape[-1] > image_size or x.shape[-2] > image_size
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear",
                          align_corners=False, antialias=shrink)
    elif x.shape[0] == 0:
        x = x.new_zeros(0, 1, image_size, image_size)
    return (x / 255.0).clamp(0, 1) * 2 - 1


# -- backbones (B2) -----------------------------------------------------------------------------


def _down(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True)]


def _up(cin: int, cout: int) -> list[nn.Module]:
    return [nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True)]


class AutoEncoder(nn.Module):
    """The reference AE: 4 strided convs -> MLP to a 16-d latent -> MLP -> 4 transposed convs.

    With `uncertainty=True` (AE-U) the last layer has 2 channels, returned as (mean, log-variance).
    No output activation. `image_size` must be a multiple of 16.
    """

    def __init__(self, image_size: int = 64, latent_size: int = 16, base_width: int = 16,
                 uncertainty: bool = False):
        super().__init__()
        if image_size % 16:
            raise ValueError(f"DDAD image_size must be a multiple of 16, got {image_size}")
        self.fm = image_size // 16
        self.uncertainty = uncertainty
        w1, w2, w3 = base_width, 2 * base_width, 4 * base_width
        self.top = w3
        flat = w3 * self.fm * self.fm
        self.encoder = nn.Sequential(*_down(1, w1), *_down(w1, w2), *_down(w2, w3), *_down(w3, w3))
        self.linear_enc = nn.Sequential(
            nn.Linear(flat, 2048), nn.BatchNorm1d(2048), nn.ReLU(True),
            nn.Linear(2048, latent_size))
        self.linear_dec = nn.Sequential(
            nn.Linear(latent_size, 2048), nn.BatchNorm1d(2048), nn.ReLU(True),
            nn.Linear(2048, flat))
        self.decoder = nn.Sequential(
            *_up(w3, w3), *_up(w3, w2), *_up(w2, w1),
            nn.ConvTranspose2d(w1, 2 if uncertainty else 1, 4, 2, 1, bias=False))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_enc(self.encoder(x).flatten(1))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        h = self.linear_dec(z).view(z.shape[0], self.top, self.fm, self.fm)
        return self.decoder(h)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.decode(self.encode(x))
        if self.uncertainty:
            mean, log_var = out.chunk(2, dim=1)
            return {"rec": mean, "log_var": log_var}
        return {"rec": out}


class MemAE(AutoEncoder):
    """AE with `mem_dim` memory slots on the latent; attention = softmax(z M^T), no shrinkage."""

    def __init__(self, image_size: int = 64, latent_size: int = 16, base_width: int = 16,
                 mem_dim: int = 25):
        super().__init__(image_size, latent_size, base_width, uncertainty=False)
        bound = 1.0 / math.sqrt(latent_size)
        self.memory = nn.Parameter(torch.empty(mem_dim, latent_size).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        z = self.encode(x)
        att = torch.softmax(z @ self.memory.t(), dim=1)  # shrink_thres = 0: no hard shrinkage
        return {"rec": self.decode(att @ self.memory), "att": att}


def build_backbone(backbone: str, *, image_size: int, latent_size: int = 16,
                   base_width: int = 16, mem_dim: int = 25) -> AutoEncoder:
    if backbone == "ae":
        return AutoEncoder(image_size, latent_size, base_width)
    if backbone == "aeu":
        return AutoEncoder(image_size, latent_size, base_width, uncertainty=True)
    if backbone == "memae":
        return MemAE(image_size, latent_size, base_width, mem_dim)
    raise ValueError(f"unknown DDAD backbone {backbone!r}; choose one of {', '.join(BACKBONES)}")


def reconstruction_loss(out: dict[str, torch.Tensor], x: torch.Tensor,
                        entropy_weight: float = 0.0002) -> torch.Tensor:
    """B3: AE mean (x̂-x)²; AE-U mean(exp(-s)(μ-x)²) + mean(s); MemAE adds attention entropy."""
    err = (out["rec"] - x) ** 2
    if "log_var" in out:
        s = out["log_var"]
        return (torch.exp(-s) * err).mean() + s.mean()
    loss = err.mean()
    if "att" in out:
        att = out["att"]
        loss = loss + entropy_weight * (-(att * torch.log(att + 1e-12)).sum(dim=1)).mean()
    return loss


# -- score maps (B4) ----------------------------------------------------------------------------


@dataclass
class ScoreMaps:
    """Pixel maps (N, 1, S, S) of one batch; image score = mean over pixels."""

    rec: torch.Tensor
    intra: torch.Tensor
    inter: torch.Tensor
    mean_a: torch.Tensor  # UDM mean reconstruction
    mean_b: torch.Tensor  # NDM mean reconstruction

    def image_scores(self) -> dict[str, torch.Tensor]:
        return {k: getattr(self, k).mean(dim=(1, 2, 3)) for k in ("rec", "intra", "inter")}


def score_maps(x: torch.Tensor, recs_a: torch.Tensor, recs_b: torch.Tensor,
               log_vars_b: torch.Tensor | None = None) -> ScoreMaps:
    """Rec / intra / inter maps from K_A UDM and K_B NDM reconstructions.

    Args:
        x: images (N, 1, S, S).
        recs_a: UDM reconstructions (K_A, N, 1, S, S).
        recs_b: NDM reconstructions (K_B, N, 1, S, S), K_B >= 2.
        log_vars_b: AE-U only: NDM predicted log-variances (K_B, N, 1, S, S). The UDM's are not
            used (reference behaviour, C2.2).

    AE/MemAE: rec = (x-μ_B)², intra = unbiased std_i B̂_i (÷(K-1)), inter = |μ_A-μ_B|.
    AE-U with σ² = mean_i exp(s_i) over the NDM: rec/σ², intra = sqrt(var_unbiased/σ²),
    inter = |μ_A-μ_B|/σ.
    """
    if recs_b.shape[0] < 2:
        raise ValueError("the intra-discrepancy needs at least 2 NDM members (K >= 2)")
    mean_a, mean_b = recs_a.mean(dim=0), recs_b.mean(dim=0)
    rec = (x - mean_b) ** 2
    var_b = recs_b.var(dim=0, unbiased=True)
    inter = (mean_a - mean_b).abs()
    if log_vars_b is None:
        intra = var_b.sqrt()
    else:
        sigma2 = torch.exp(log_vars_b).mean(dim=0)
        rec = rec / sigma2
        intra = torch.sqrt(var_b / sigma2)
        inter = inter / sigma2.sqrt()
    return ScoreMaps(rec=rec, intra=intra, inter=inter, mean_a=mean_a, mean_b=mean_b)


@torch.no_grad()
def ensemble_maps(x: torch.Tensor, nets_a: list[nn.Module], nets_b: list[nn.Module]) -> ScoreMaps:
    """Run frozen UDM (`nets_a`) and NDM (`nets_b`) members (eval mode) on `x`; build the maps."""
    outs_a = [net(x) for net in nets_a]
    outs_b = [net(x) for net in nets_b]
    recs_a = torch.stack([o["rec"] for o in outs_a])
    recs_b = torch.stack([o["rec"] for o in outs_b])
    log_vars = torch.stack([o["log_var"] for o in outs_b]) if "log_var" in outs_b[0] else None
    return score_maps(x, recs_a, recs_b, log_vars)


# -- the unlabeled set (B1) ---------------------------------------------------------------------


@dataclass
class UnlabeledSplit:
    """Indices that make D_n (known normals) and D_u (unlabeled) from `train` and `pool`.

    known: indices into `train` (D_n; the NDM sees only these).
    unlabeled_train: indices into `train` held out as D_u's normals (empty when the pool has
        normals of its own, as DDAD's braintumor list has).
    unlabeled_pool: indices into `pool` (D_u's pool images; their labels are never trained on).
    num_normal / num_anomalous: D_u's composition.
    """

    known: torch.Tensor
    unlabeled_train: torch.Tensor
    unlabeled_pool: torch.Tensor
    num_normal: int
    num_anomalous: int

    @property
    def size(self) -> int:
        return self.num_normal + self.num_anomalous

    @property
    def anomaly_rate(self) -> float:
        return self.num_anomalous / max(self.size, 1)


def draw_unlabeled(num_train: int, pool_labels: torch.Tensor, *, anomaly_rate: float,
                   size: int | None = None, seed: int = 0,
                   selection: str = "seeded") -> UnlabeledSplit:
    """Build D_u with `int(size·anomaly_rate)` anomalous and the rest normal images.

    D_u's anomalous images come from the pool. Its normals come from the pool's normals when it
    has any (braintumor: DDAD's `train/unlabeled/0`); otherwise they are *held out* of the
    training normals and removed from D_n, because in the reference D_n and D_u never overlap.
    `size=None` makes |D_u| = |D_n|, as every reference config does (extra_data ≈ |train/0|);
    with held-out normals that means size = num_train / (2 - rate). When a class is short the
    size shrinks so the rate stays as asked. `selection="seeded"` draws with a
    `torch.Generator(seed)`; `"first"` takes list order, as the reference does.
    """
    if not 0.0 <= anomaly_rate <= 1.0:
        raise ValueError(f"anomaly_rate must be in [0, 1], got {anomaly_rate}")
    if selection not in ("seeded", "first"):
        raise ValueError(f"unlabeled selection must be 'seeded' or 'first', got {selection!r}")
    pool_labels = torch.as_tensor(pool_labels).long().view(-1)
    pool_normal = torch.nonzero(pool_labels == 0).view(-1)
    pool_anom = torch.nonzero(pool_labels == 1).view(-1)
    hold_out = pool_normal.numel() == 0
    if size is None:
        size = int(num_train / (2 - anomaly_rate)) if hold_out else num_train
    avail_normal = max(num_train - 2, 0) if hold_out else pool_normal.numel()  # keep >= 2 known
    caps = [size]
    if anomaly_rate > 0:
        caps.append(int(pool_anom.numel() / anomaly_rate + 1e-9))
    if anomaly_rate < 1:
        caps.append(int(avail_normal / (1 - anomaly_rate) + 1e-9))
    size = max(min(caps), 0)
    n_anom = min(int(size * anomaly_rate + 1e-9), pool_anom.numel())
    n_norm = min(size - n_anom, avail_normal)

    gen = torch.Generator().manual_seed(seed)

    def pick(idx: torch.Tensor, n: int) -> torch.Tensor:
        if selection == "first":
            return idx[:n]
        return idx[torch.randperm(idx.numel(), generator=gen)[:n]].sort().values

    chosen_anom = pick(pool_anom, n_anom)
    if hold_out:
        held = pick(torch.arange(num_train), n_norm)
        mask = torch.ones(num_train, dtype=torch.bool)
        mask[held] = False
        known = torch.nonzero(mask).view(-1)
        pool_idx = chosen_anom
    else:
        held = torch.zeros(0, dtype=torch.long)
        known = torch.arange(num_train)
        pool_idx = torch.cat([pick(pool_normal, n_norm), chosen_anom]).sort().values
    return UnlabeledSplit(known=known, unlabeled_train=held, unlabeled_pool=pool_idx,
                          num_normal=int(n_norm), num_anomalous=int(n_anom))


# -- synthetic anomalies for the ASR-Net (B5) ---------------------------------------------------


def paste_patches(x: torch.Tensor, generator: torch.Generator, *, clean_prob: float = 0.5,
                  core_percent: float = 0.8) -> tuple[torch.Tensor, torch.Tensor]:
    """Foreign-patch interpolation on a batch of known normals (N, 1, S, S), N >= 2.

    Each image is left clean with probability `clean_prob`; otherwise a square [c-w, c+w) with
    centre c in [int(S(1-core)/2), int(S(1+core)/2)) and half-width w in
    [round(0.05 S), round(0.2 S)) is blended with the same region of *another* image of the
    batch, one α ~ U(0, 1) per patch. Returns (images, mask) with mask 1 inside each patch.
    """
    n, _, h, w_img = x.shape
    if n < 2:
        raise ValueError("paste_patches needs at least 2 images (patches come from another one)")
    out, mask = x.clone(), torch.zeros_like(x)
    lo, hi = int(h * (1 - core_percent) / 2), int(h * (1 + core_percent) / 2)
    wmin, wmax = round(0.05 * h), round(0.2 * h)
    for i in range(n):
        if torch.rand((), generator=generator).item() < clean_prob:
            continue
        j = int(torch.randint(0, n - 1, (), generator=generator))
        j = j + 1 if j >= i else j  # a different image
        cy, cx = (int(v) for v in torch.randint(lo, hi, (2,), generator=generator))
        half = int(torch.randint(wmin, max(wmax, wmin + 1), (), generator=generator))
        alpha = float(torch.rand((), generator=generator))
        y0, y1 = max(cy - half, 0), min(cy + half, h)
        x0, x1 = max(cx - half, 0), min(cx + half, w_img)
        region = (slice(None), slice(y0, y1), slice(x0, x1))
        out[i][region] = (1 - alpha) * x[i][region] + alpha * x[j][region]
        mask[i, :, y0:y1, x0:x1] = 1.0
    return out, mask


# -- ASR-Net (B5) -------------------------------------------------------------------------------


class RefineNet(nn.Module):
    """Three 3x3 convs at full resolution (C_in -> 128 -> 128 -> 2), BN + ReLU between."""

    def __init__(self, in_channels: int = 2, width: int = 128):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, 1, 1), nn.BatchNorm2d(width), nn.ReLU(True),
            nn.Conv2d(width, width, 3, 1, 1), nn.BatchNorm2d(width), nn.ReLU(True),
            nn.Conv2d(width, 2, 3, 1, 1))

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        return self.net(maps)  # logits (N, 2, S, S)


def refine_inputs(maps: ScoreMaps, mode: str) -> torch.Tensor:
    """R_dual: [inter, intra] (2 channels); R_intra: [intra]. Raw, unnormalised maps."""
    if mode == "dual":
        return torch.cat([maps.inter, maps.intra], dim=1)
    if mode == "intra":
        return maps.intra
    raise ValueError(f"refine mode must be 'dual' or 'intra', got {mode!r}")


def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0,
               smooth: float = 1e-5) -> torch.Tensor:
    """The reference FocalLoss on softmax probabilities: mean of -(1-pt)^γ log pt, α = 1."""
    prob = torch.softmax(logits, dim=1)
    onehot = torch.cat([1 - target, target], dim=1).clamp(smooth, 1 - smooth)
    pt = (onehot * prob).sum(dim=1) + smooth
    return (-(1 - pt) ** gamma * pt.log()).mean()


def anomaly_probability(logits: torch.Tensor) -> torch.Tensor:
    """Per-pixel anomaly probability (softmax channel 1), shape (N, 1, S, S)."""
    return torch.softmax(logits, dim=1)[:, 1:2]
