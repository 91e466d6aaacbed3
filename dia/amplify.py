"""The amplifying objective: 3-view batch assembly and the DIA / CSI contrastive loss.

Batch (per iteration, B real images, K shifts, N = K·B), all views shift-major (index k·B + j is
image j under shift k):

* V1, V2 = two clean views, each with its own random horizontal flip per sample;
* V3 (DIA only) = for each shift k a fresh flip of the batch, dissolved with one t_k shared by the
  batch (the reference calls the dissolver once per shift), then shifted by k.

The 3N (CSI: 2N) images go through ONE augmentation call and ONE forward pass, so batch norm sees
clean and dissolved views together.

Loss (`training/contrastive_loss.py::NT_xent_neg`, mode `shifted_removed`): NT-Xent with τ = 0.5
over ℓ2-normalised projections; the positive of a V1/V2 anchor is the same (j, k) in the other
clean view; dissolved images are negatives only (never anchors); each clean image's own dissolved
copy under the same shift is excluded from its denominator; the sum over the 2N positive terms is
divided by 3N (CSI's `NT_xent`: 2N); plus the shift cross-entropy over all views (weight 1).

This module does not read config objects: it takes plain arguments.

Reference: shijianjian/DIA `training/unsup/simclr_DIA.py`, `training/contrastive_loss.py`;
alinlab/CSI `training/unsup/simclr_CSI.py` (the baseline).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F

from dia import runtime
from dia.augment import (
    AugmentParams,
    apply_hflip,
    hflip_mask,
    num_shifts,
    random_hflip,
    shift_chunks,
    shift_labels,
    shift_major,
    simclr_augment,
)

Dissolve = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class AmplifyBatch(NamedTuple):
    images: torch.Tensor  # (V·N, 3, H, W) views concatenated V1, V2[, V3], before augmentation
    shift_labels: torch.Tensor  # (V·N,) int64
    num_views: int  # 2 (CSI) or 3 (DIA)
    t: torch.Tensor | None  # (K·B,) int64 dissolving step of each V3 image (DIA), else None


def sample_shift_t(
    k: int, b: int, generator: torch.Generator, t_min: int, t_max: int, device=None
) -> torch.Tensor:
    """Dissolving steps of the K·B dissolved images: one t per shift, shared by its B images.

    Each t_k comes from `dia.dissolve.sample_t` (t = int(t_min + (t_max − t_min)·U)), as the
    reference draws one t per call of its transform, i.e. per (batch, shift). Returns int64 (K·B,).
    """
    from dia.dissolve import sample_t

    return torch.cat([sample_t(b, generator, t_min, t_max, device) for _ in range(k)])


def assemble_views(
    images01: torch.Tensor,
    generator: torch.Generator,
    *,
    shift: str = "rotation",
    dissolve: Dissolve | None = None,
    t_min: int = 30,
    t_max: int = 100,
    indices: torch.Tensor | None = None,
) -> AmplifyBatch:
    """Build the 3N-image DIA batch (or the 2N-image CSI batch when `dissolve` is None).

    Args:
        images01: float (B, 3, H, W) in [0, 1], the real normal images of this iteration.
        generator: explicit generator on the images' device (flips, t).
        shift: "rotation" or "cutperm".
        dissolve: `(images01 (M,3,H,W), t (M,) int64) -> (M,3,H,W)`, e.g. `dia.dissolve.Dissolver`;
            its output (values in [−1, 1] under the reference value range) is used as is.
        t_min, t_max: dissolving steps, t ∈ {t_min … t_max − 1}.
        indices: int64 (B,) dataset indices of the images; with a `DissolveCache` or a
            `DissolveTable` as `dissolve` they key its lookup (the random draws are the same
            with or without one).

    Returns:
        `AmplifyBatch` with views V1, V2[, V3] concatenated, each shift-major.
    """
    b = images01.shape[0]
    k = num_shifts(shift)
    clean = random_hflip(images01.repeat(2, 1, 1, 1), generator)  # independent flip per view
    v1, v2 = clean.chunk(2)
    views = [shift_major(v1, shift), shift_major(v2, shift)]
    t = None
    if dissolve is not None:
        # a fresh flip per shift, one t per shift shared by the batch, ONE dissolver call
        flip = hflip_mask(k * b, generator, device=images01.device)
        flipped = apply_hflip(images01.repeat(k, 1, 1, 1), flip)
        t = sample_shift_t(k, b, generator, t_min, t_max, images01.device)
        with torch.no_grad():
            if hasattr(dissolve, "lookup") and indices is not None:
                dissolved = dissolve.lookup(indices.repeat(k), flip, t, flipped)
            else:
                dissolved = dissolve(flipped, t)
        views.append(shift_chunks(dissolved.to(images01.dtype), shift))
    labels = shift_labels(b, shift, device=images01.device).repeat(len(views))
    return AmplifyBatch(torch.cat(views), labels, len(views), t)


class DissolveCache:
    """Memoise the dissolver: the dissolved view depends only on (image, flip, t).

    A DIA run dissolves each training image 4 times per epoch with one of 2 × 70 (flip, t)
    combinations, so over many epochs most calls repeat. Entries are kept (on the dissolver's
    output device) until `max_bytes` is reached, then new ones are computed and not stored. The
    values are the dissolver's own; they can differ from a fresh call only by the U-Net's
    floating-point reordering across batch sizes (about 1e-7).

    Args:
        dissolve: the dissolver, `(images01, t) -> dissolved`.
        max_bytes: memory budget of the stored entries.
    """

    def __init__(self, dissolve: Dissolve, max_bytes: int):
        self.dissolve = dissolve
        self.max_bytes = int(max_bytes)
        self.store: dict[tuple[int, bool, int], torch.Tensor] = {}
        self.bytes = 0
        self.hits = self.misses = 0

    def __call__(self, images01: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.dissolve(images01, t)

    def lookup(
        self, indices: torch.Tensor, flip: torch.Tensor, t: torch.Tensor, flipped: torch.Tensor
    ) -> torch.Tensor:
        """Dissolved `flipped` (M, 3, H, W), reading (index, flip, t) entries from the store."""
        keys = list(zip(indices.tolist(), flip.tolist(), t.tolist()))
        miss = [i for i, key in enumerate(keys) if key not in self.store]
        hit = [i for i, key in enumerate(keys) if key in self.store]
        out = torch.empty_like(flipped)
        if miss:
            rows = torch.tensor(miss, device=flipped.device)
            fresh = self.dissolve(flipped[rows], t[rows]).to(flipped.dtype)
            out[rows] = fresh
            entry = fresh[0].numel() * fresh.element_size()
            for j, i in enumerate(miss):
                if keys[i] not in self.store and self.bytes + entry <= self.max_bytes:
                    self.store[keys[i]] = fresh[j].clone()
                    self.bytes += entry
        if hit:
            rows = torch.tensor(hit, device=flipped.device)
            out[rows] = torch.stack([self.store[keys[i]] for i in hit])
        self.hits += len(hit)
        self.misses += len(miss)
        return out

    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0


class DissolveTable:
    """Every dissolved (image, flip, t) of a training set, computed before training starts.

    The dissolved view depends only on (image, flip, t), so for N images there are
    N × 2 × (t_max − t_min) of them (170k for PneumoniaMNIST's 1,214 normals). Computed in large
    batches they take a GPU seconds, and each iteration then only gathers its rows: no dissolver
    call and no host read, which a lazily filled `DissolveCache` needs to find its misses. A short
    run on the CPU dissolves fewer images lazily (24 epochs of PneumoniaMNIST touch about half
    the keys), so `dia.train_encoder` builds a table on CUDA only (`use_dissolve_table`). The
    values are the dissolver's own, up to the dissolver's differences between batch sizes
    (fp32 rounding on the CPU; under bf16 autocast on CUDA possibly more, as for the cache).

    Args:
        dissolve: the dissolver, `(images01, t) -> dissolved`.
        images: uint8 (N, 3, H, W), the training set as the training loop indexes it.
        t_min, t_max: the dissolving steps, t ∈ {t_min … t_max − 1}.
        batch: images per dissolver call while filling.
        progress: show a progress bar while filling.
    """

    def __init__(self, dissolve: Dissolve, images: torch.Tensor, t_min: int, t_max: int, *,
                 batch: int = 2048, progress: bool = True):
        from tqdm import tqdm

        if images.dtype != torch.uint8:
            raise TypeError(f"DissolveTable takes the uint8 training images, got {images.dtype}")
        n, device = images.shape[0], images.device
        self.t_min, self.steps = t_min, t_max - t_min
        self.table = torch.empty(n, 2, self.steps, *images.shape[1:], device=device)
        starts = range(0, n, batch)
        bar = tqdm(total=2 * self.steps * len(starts), desc="dissolve table", unit="batch",
                   disable=not progress)
        for start in starts:
            x = images[start:start + batch].float().div_(255.0)
            for flip, flipped in enumerate((x, x.flip(-1))):
                for step in range(self.steps):
                    t = torch.full((flipped.shape[0],), t_min + step, device=device)
                    self.table[start:start + batch, flip, step] = dissolve(flipped, t)
                    bar.update(1)
        bar.close()

    @staticmethod
    def nbytes(images: torch.Tensor, t_min: int, t_max: int) -> int:
        """Memory of the table of `images` (float32)."""
        return 2 * (t_max - t_min) * images[:1].numel() * images.shape[0] * 4

    def lookup(self, indices: torch.Tensor, flip: torch.Tensor, t: torch.Tensor,
               flipped: torch.Tensor | None = None) -> torch.Tensor:
        """The dissolved images of (index, flip, t), (M, 3, H, W): one gather on the device."""
        return self.table[indices, flip.long(), t - self.t_min]


def pair_masks(n: int, num_views: int, *, exclude_own_dissolved: bool = True):
    """Roles of every (anchor, candidate) pair of the (V·N)×(V·N) similarity matrix.

    Returns:
        positive: bool, True at (i, N+i) and (N+i, i) for i < N.
        excluded: bool, the diagonal, and for DIA with `exclude_own_dissolved` the four pairs
            (i, 2N+i), (2N+i, i), (N+i, 2N+i), (2N+i, N+i) linking a clean view to its own
            same-shift dissolved copy. Everything else (not excluded) is in the denominator.
        anchor: bool (V·N,), rows that contribute a loss term (V1 and V2).
    """
    size = num_views * n
    idx = torch.arange(n)
    positive = torch.zeros(size, size, dtype=torch.bool)
    positive[idx, n + idx] = True
    positive[n + idx, idx] = True
    excluded = torch.eye(size, dtype=torch.bool)
    if num_views == 3 and exclude_own_dissolved:
        for view in (0, n):
            excluded[view + idx, 2 * n + idx] = True
            excluded[2 * n + idx, view + idx] = True
    anchor = torch.zeros(size, dtype=torch.bool)
    anchor[: 2 * n] = True
    return positive, excluded, anchor


@runtime.once_per_device
def _kept_pairs(n: int, num_views: int, exclude_own_dissolved: bool) -> torch.Tensor:
    """float32 (2N, V·N): 1 where an anchor row's pair enters its denominator, 0 where excluded
    (built once per shape and device, `runtime.once_per_device`)."""
    _, excluded, _ = pair_masks(n, num_views, exclude_own_dissolved=exclude_own_dissolved)
    return (~excluded[: 2 * n]).float()


def contrastive_loss(
    projection: torch.Tensor,
    num_views: int,
    *,
    temperature: float = 0.5,
    exclude_own_dissolved: bool = True,
    eps: float = 1e-8,
) -> torch.Tensor:
    """NT-Xent of DIA (num_views=3, ÷3N) or CSI (num_views=2, ÷2N) on un-normalised projections.

    Only the 2N anchor rows are computed (V3 rows never contribute), which gives exactly the
    reference's value: P[r,c] = E[r,c]·(1−M[r,c]) / (Σ_c' E[r,c']·(1−M[r,c']) + 1e-8),
    ℓ = −log(P + 1e-8), L = Σ_{i<N} (ℓ[i, N+i] + ℓ[N+i, i]) / (V·N).
    """
    size = projection.shape[0]
    if size % num_views:
        raise ValueError(f"{size} projections do not split into {num_views} views")
    n = size // num_views
    z = projection.float()
    z = z / (z.norm(dim=1, keepdim=True) + eps)
    sim = z[: 2 * n] @ z.T  # (2N, V·N)
    logits = torch.exp(sim / temperature)
    logits = logits * _kept_pairs(n, num_views, exclude_own_dissolved, device=logits.device)
    denom = logits.sum(dim=1, keepdim=True)
    idx = torch.arange(2 * n, device=logits.device)
    positive_col = (idx + n) % (2 * n)  # i -> N+i, N+i -> i
    p_pos = logits[idx, positive_col] / (denom.squeeze(1) + eps)
    return -torch.log(p_pos + eps).sum() / (num_views * n)


def amplify_loss(
    projection: torch.Tensor,
    shift_logits: torch.Tensor,
    labels: torch.Tensor,
    num_views: int,
    *,
    temperature: float = 0.5,
    exclude_own_dissolved: bool = True,
    shift_weight: float = 1.0,
) -> dict[str, torch.Tensor]:
    """Named loss terms: contrastive, shift (CE over all V·N images), total = con + w·shift."""
    con = contrastive_loss(
        projection, num_views, temperature=temperature, exclude_own_dissolved=exclude_own_dissolved
    )
    cls = F.cross_entropy(shift_logits.float(), labels)
    return {"contrastive": con, "shift": cls, "total": con + shift_weight * cls}


def amplify_forward(
    model: torch.nn.Module,
    images01: torch.Tensor,
    generator: torch.Generator,
    *,
    shift: str = "rotation",
    dissolve: Dissolve | None = None,
    t_min: int = 30,
    t_max: int = 100,
    augment: AugmentParams = AugmentParams(),
    temperature: float = 0.5,
    exclude_own_dissolved: bool = True,
    shift_weight: float = 1.0,
    channels_last: bool = False,
    autocast_dtype: torch.dtype | None = None,
    indices: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """One training forward: assemble views → ONE augmentation call → ONE forward → loss terms."""
    batch = assemble_views(
        images01, generator, shift=shift, dissolve=dissolve, t_min=t_min, t_max=t_max,
        indices=indices,
    )
    x = simclr_augment(batch.images, generator, augment)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with runtime.autocast_if(x.device.type, autocast_dtype):
        out = model(x)
    return amplify_loss(
        out.projection, out.shift_logits, batch.shift_labels, batch.num_views,
        temperature=temperature, exclude_own_dissolved=exclude_own_dissolved,
        shift_weight=shift_weight,
    )
