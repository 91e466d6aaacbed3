"""DDAD-ASR end to end: data, the two ensembles, the ASR-Nets, scores, metrics, plots.

    run = train_ddad(cfg)            # results/runs/ddad/<dataset>/ddad-<backbone>/s<seed>-<hash>/

What a run folder holds (besides config.yaml, env.json, train_log.jsonl, DONE):

* ``unlabeled.json`` - how D_n and D_u were built (counts, rate, the ids of D_u).
* ``ensemble.json`` - the explicit list of checkpoint files that make the UDM ("module a"), the
  NDM ("module b") and the ASR-Nets. Only these files are ever loaded: a stale file lying in
  ``checkpoints/`` never joins an ensemble (the reference loads every file of a folder).
* ``checkpoints/{udm_i,ndm_i,refine_dual,refine_intra}.pt`` - written atomically after every
  epoch; a killed run resumes from them.
* ``scores.csv`` - the headline score, R_dual (DDAD-ASR), in the standard
  (sample_id, label, anomaly_score) format; ``scores_<kind>.csv`` for every kind:
  rec, intra, inter, asr (= scores.csv) and asr_intra (R_intra, when trained).
* ``metrics.csv`` - AUC rows for DDAD-rec, DDAD-intra, DDAD-inter and DDAD-ASR (R_dual); the
  R_intra AUC is in the DONE summary.

The unlabeled set (decision D4): see `dia.baselines.ddad_models.draw_unlabeled`. Its anomalous
images come from the training split's pool, its normals from the pool's normals when it has any
(braintumor) and otherwise are held out of the training normals and removed from D_n (the
reference's D_n and D_u never overlap). Test images are never used.
"""

from __future__ import annotations

import hashlib
import io
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from dia.baselines.ddad_models import (
    RefineNet,
    UnlabeledSplit,
    anomaly_probability,
    build_backbone,
    draw_unlabeled,
    ensemble_maps,
    focal_loss,
    paste_patches,
    reconstruction_loss,
    refine_inputs,
    to_ddad_gray,
)
from dia.results import Run, RunError, atomic_write_bytes, open_run

STAGE = "ddad"
SECTIONS = ("data", "ddad")
SCORE_KINDS = ("rec", "intra", "inter", "asr", "asr_intra")
METHOD_NAMES = {"rec": "DDAD-rec", "intra": "DDAD-intra", "inter": "DDAD-inter", "asr": "DDAD-ASR"}


class NotApplicable(RuntimeError):
    """DDAD cannot run on this dataset: its training split has no anomalous images to draw an
    unlabeled set from. The suite turns this into a "not applicable" row."""


def method_name(cfg) -> str:
    return f"ddad-{cfg.ddad.backbone}"


# -- data ---------------------------------------------------------------------------------------


@dataclass
class DDADData:
    """Grayscale [-1, 1] tensors (N, 1, S, S) of one dataset, split for DDAD."""

    known: torch.Tensor  # D_n: the NDM trains on these
    unlabeled: torch.Tensor  # D_u: the UDM trains on D_n and these
    test: torch.Tensor
    test_labels: np.ndarray
    test_ids: list[str]
    split: UnlabeledSplit
    unlabeled_ids: list[str]
    unlabeled_labels: list[int]  # bookkeeping only, never trained on

    def describe(self) -> dict[str, Any]:
        return {
            "known_normals": int(self.known.shape[0]),
            "unlabeled": self.split.size,
            "unlabeled_normal": self.split.num_normal,
            "unlabeled_anomalous": self.split.num_anomalous,
            "unlabeled_anomaly_rate": round(self.split.anomaly_rate, 6),
            "test": int(self.test.shape[0]),
        }


def build_ddad_data(splits, cfg) -> DDADData:
    """Split a `DatasetSplits` into D_n, D_u and the test set (grayscale, cfg.ddad.image_size).

    Raises:
        NotApplicable: the pool (training-split images outside `train`) has no anomalous image.
    """
    d = cfg.ddad
    pool_labels = torch.as_tensor(splits.pool_labels).long().view(-1)
    if int((pool_labels == 1).sum()) == 0 and d.anomaly_rate > 0:
        raise NotApplicable(
            f"DDAD-ASR needs unlabeled training images that contain anomalies, but the training "
            f"split of {splits.key!r} has no anomalous image outside the known normals "
            f"(pool counts: {splits.counts()}); it is not applicable to this dataset."
        )
    split = draw_unlabeled(
        splits.train.shape[0], pool_labels, anomaly_rate=d.anomaly_rate, size=d.unlabeled_size,
        seed=d.unlabeled_seed, selection=d.unlabeled_selection)
    size = d.image_size
    known = to_ddad_gray(splits.train[split.known], size)
    parts = [to_ddad_gray(splits.train[split.unlabeled_train], size)]
    ids = [splits.train_ids[i] for i in split.unlabeled_train.tolist()]
    labels = [0] * split.unlabeled_train.numel()
    if split.unlabeled_pool.numel():
        parts.append(to_ddad_gray(splits.pool[split.unlabeled_pool], size))
        ids += [splits.pool_ids[i] for i in split.unlabeled_pool.tolist()]
        labels += pool_labels[split.unlabeled_pool].tolist()
    overlap = set(ids) & set(splits.test_ids)
    if overlap:  # guards a loader bug: the test split must never be trained on
        raise RunError(f"{len(overlap)} unlabeled images are also test images, e.g. {sorted(overlap)[:3]}")
    return DDADData(
        known=known, unlabeled=torch.cat(parts), test=to_ddad_gray(splits.test, size),
        test_labels=np.asarray(splits.test_labels).astype(int), test_ids=list(splits.test_ids),
        split=split, unlabeled_ids=ids, unlabeled_labels=[int(v) for v in labels])


def prepare_data(cfg, *, data_root=None, results_root="results") -> DDADData:
    """Load `cfg.dataset` through `dia.data.load_for_config` at the DDAD size and split it."""
    from dia.data import load_for_config

    splits = load_for_config(cfg, data_root=data_root or None, results_root=results_root,
                             image_size=cfg.ddad.image_size)
    return build_ddad_data(splits, cfg)


# -- checkpoints --------------------------------------------------------------------------------


def _net_seed(seed: int, name: str) -> int:
    return int(hashlib.sha256(f"{seed}:{name}".encode()).hexdigest()[:8], 16)


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def _load_checkpoint(path: Path, run: Run, name: str) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    state = torch.load(path, map_location="cpu", weights_only=False)
    if state.get("name") != name or state.get("run_hash") != run.hash:
        raise RunError(f"{path} is not the checkpoint of {name!r} of run {run.run_id}")
    return state


def ensemble_plan(cfg) -> dict[str, Any]:
    """Checkpoint files (relative to the run folder) of every network of a run."""
    k = cfg.ddad.num_models
    plan = {
        "udm": [f"checkpoints/udm_{i}.pt" for i in range(k)],
        "ndm": [f"checkpoints/ndm_{i}.pt" for i in range(k)],
        "refine": {"dual": "checkpoints/refine_dual.pt"},
    }
    if cfg.ddad.refine_intra:
        plan["refine"]["intra"] = "checkpoints/refine_intra.pt"
    return plan


def _make_backbone(cfg, name: str) -> nn.Module:
    d = cfg.ddad
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_net_seed(cfg.seed, name))
        return build_backbone(d.backbone, image_size=d.image_size, latent_size=d.latent_size,
                              base_width=d.base_width, mem_dim=d.mem_dim)


def _make_refiner(cfg, mode: str) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_net_seed(cfg.seed, f"refine_{mode}"))
        return RefineNet(2 if mode == "dual" else 1, cfg.ddad.refine_width)


# -- training -----------------------------------------------------------------------------------


def _batches(n: int, batch_size: int, gen: torch.Generator) -> list[torch.Tensor]:
    """Shuffled batches with drop_last (reference loaders); one batch of all when n < batch_size."""
    perm = torch.randperm(n, generator=gen)
    bs = min(batch_size, n)
    return [perm[i:i + bs] for i in range(0, n - bs + 1, bs)]


