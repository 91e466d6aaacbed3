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
  R_intra AUC is in the DONE summary (keyed by method name, as the others).
* ``val_scores.csv``, ``val_scores_<kind>.csv``, ``val_auc`` rows in metrics.csv and a
  ``val_auc`` dict in DONE (method name -> AUC, R_intra included): the same for the labelled
  validation split, where the dataset has one with both classes (MedMNIST's official val, the
  synthetic set's). Nothing trains on it; it is there to compare settings without the test set.

The unlabeled set (decision D4): see `dia.baselines.ddad_models.draw_unlabeled`. Its anomalous
images come from the training split's pool, its normals from the pool's normals when it has any
(braintumor) and otherwise are held out of the training normals and removed from D_n (the
reference's D_n and D_u never overlap). Test and validation images are never trained on.
"""

from __future__ import annotations

import hashlib
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
from dia.checkpoints import ensure_finite, load_run_checkpoint, save_checkpoint
from dia.results import Run, RunError, first_line, retrain_advice

STAGE = "ddad"
SCORE_KINDS = ("rec", "intra", "inter", "asr", "asr_intra")
METHOD_NAMES = {"rec": "DDAD-rec", "intra": "DDAD-intra", "inter": "DDAD-inter", "asr": "DDAD-ASR"}
INTRA_ASR_NAME = "DDAD-ASR-intra"  # R_intra: scored and in DONE, not a row of the table


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
    val: torch.Tensor  # the labelled validation split (empty where the dataset has none)
    val_labels: np.ndarray
    val_ids: list[str]

    def describe(self) -> dict[str, Any]:
        return {
            "known_normals": int(self.known.shape[0]),
            "unlabeled": self.split.size,
            "unlabeled_normal": self.split.num_normal,
            "unlabeled_anomalous": self.split.num_anomalous,
            "unlabeled_anomaly_rate": round(self.split.anomaly_rate, 6),
            "test": int(self.test.shape[0]),
            "val": len(self.val_ids),
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
    for name, held_out in (("test", splits.test_ids), ("validation", splits.val_ids)):
        overlap = set(ids) & set(held_out)
        if overlap:  # guards a loader bug: no labelled held-out image is ever trained on
            raise RunError(f"{len(overlap)} unlabeled images are also {name} images, "
                           f"e.g. {sorted(overlap)[:3]}")
    return DDADData(
        known=known, unlabeled=torch.cat(parts), test=to_ddad_gray(splits.test, size),
        test_labels=np.asarray(splits.test_labels).astype(int), test_ids=list(splits.test_ids),
        split=split, unlabeled_ids=ids, unlabeled_labels=[int(v) for v in labels],
        val=to_ddad_gray(splits.val, size),
        val_labels=np.asarray(splits.val_labels).astype(int), val_ids=list(splits.val_ids))


def prepare_data(cfg, *, data_root=None, results_root="results") -> DDADData:
    """Load `cfg.dataset` through `dia.data.load_for_config` at the DDAD size and split it."""
    from dia.data import load_for_config
    from dia.metrics import check_test_labels

    splits = load_for_config(cfg, data_root=data_root or None, results_root=results_root,
                             image_size=cfg.ddad.image_size)
    check_test_labels(splits, cfg.dataset)  # before hours of training
    return build_ddad_data(splits, cfg)


# -- seeds and the ensemble ---------------------------------------------------------------------


def _net_seed(seed: int, name: str) -> int:
    return int(hashlib.sha256(f"{seed}:{name}".encode()).hexdigest()[:8], 16)


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



def _fit(run: Run, name: str, model: nn.Module, optimizer: torch.optim.Optimizer, *, epochs: int,
         num_items: int, batch_size: int, loss_fn, device: torch.device) -> nn.Module:
    """Train `model` for `epochs` over `num_items` in shuffled batches; resume from and
    checkpoint to ``checkpoints/<name>.pt`` after every epoch (atomic write).

    `loss_fn(index_tensor, generator) -> loss` computes one batch's loss.
    """
    path = run.checkpoint_dir / f"{name}.pt"
    gen = torch.Generator().manual_seed(_net_seed(run.seed, name + ":data"))
    state = load_run_checkpoint(path, run, name=name,
                                needs=("model", "optimizer", "generator", "epoch"))
    start = 0
    model.to(device)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])  # moves its state to the params' device
        gen.set_state(state["generator"])
        start = state["epoch"]
    if start >= epochs:
        return model.eval()
    model.train()
    bar = tqdm(range(start, epochs), desc=f"ddad {name}", initial=start, total=epochs)
    for epoch in bar:
        t0, losses = time.perf_counter(), []
        for idx in _batches(num_items, batch_size, gen):
            loss = loss_fn(idx, gen)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        mean_loss = float(np.mean(losses)) if losses else float("nan")
        ensure_finite({"loss": mean_loss}, where=f"ddad {name} epoch {epoch + 1} ({run.path})",
                      hint="check the ddad learning rates")
        save_checkpoint(path, {
            "name": name, "run_hash": run.hash, "epoch": epoch + 1,
            "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "optimizer": optimizer.state_dict(), "generator": gen.get_state(),
        })
        run.append_log({"net": name, "epoch": epoch + 1, "loss": round(mean_loss, 6),
                        "seconds": round(time.perf_counter() - t0, 3)})
        bar.set_postfix(loss=f"{mean_loss:.4f}")
    bar.close()
    return model.eval()


def train_backbone(run: Run, cfg, name: str, images: torch.Tensor,
                   device: torch.device) -> nn.Module:
    """One reconstruction net (AE / AE-U / MemAE) on `images`: Adam(lr, betas (beta1, 0.999))."""
    d = cfg.ddad
    if images.shape[0] < 2:
        raise RunError(f"{name}: {images.shape[0]} training image(s); BatchNorm needs at least 2")
    model = _make_backbone(cfg, name).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=d.lr, betas=(d.beta1, 0.999),
                                 weight_decay=d.weight_decay)
    data = images.to(device)

    def loss_fn(idx, _gen):
        x = data[idx.to(device)]
        return reconstruction_loss(model(x), x, d.entropy_weight)

    return _fit(run, name, model, optimizer, epochs=d.epochs, num_items=data.shape[0],
                batch_size=d.batch_size, loss_fn=loss_fn, device=device)


def train_refiner(run: Run, cfg, mode: str, known: torch.Tensor, nets_a: list[nn.Module],
                  nets_b: list[nn.Module], device: torch.device) -> nn.Module:
    """The ASR-Net for `mode` ("dual" or "intra") on pasted-patch anomalies of the known normals.

    The frozen UDM/NDM (eval mode) give the discrepancy maps of each synthetic batch on the fly;
    the target is the binary patch mask; focal loss on the softmax.
    """
    d = cfg.ddad
    model = _make_refiner(cfg, mode).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=d.refine_lr, betas=(d.beta1, 0.999),
                                 weight_decay=d.refine_weight_decay)
    data = known.to(device)

    def loss_fn(idx, gen):
        pasted, mask = paste_patches(data[idx.to(device)], gen)
        maps = ensemble_maps(pasted, nets_a, nets_b)
        return focal_loss(model(refine_inputs(maps, mode)), mask)

    return _fit(run, f"refine_{mode}", model, optimizer, epochs=d.refine_epochs,
                num_items=data.shape[0], batch_size=d.refine_batch_size, loss_fn=loss_fn,
                device=device)


@torch.no_grad()
def score_images(images: torch.Tensor, nets_a: list[nn.Module], nets_b: list[nn.Module],
                 refiners: dict[str, nn.Module], *, batch_size: int = 128,
                 device: torch.device | str = "cpu") -> dict[str, np.ndarray]:
    """Image scores (mean over pixels of each map) of every kind in `SCORE_KINDS` present."""
    out: dict[str, list[torch.Tensor]] = {}
    for start in range(0, images.shape[0], batch_size):
        x = images[start:start + batch_size].to(device)
        maps = ensemble_maps(x, nets_a, nets_b)
        for kind, value in maps.image_scores().items():
            out.setdefault(kind, []).append(value.cpu())
        for mode, net in refiners.items():
            prob = anomaly_probability(net(refine_inputs(maps, mode)))
            kind = "asr" if mode == "dual" else f"asr_{mode}"
            out.setdefault(kind, []).append(prob.mean(dim=(1, 2, 3)).cpu())
    return {k: torch.cat(v).double().numpy() for k, v in out.items()}


# -- the public entry ---------------------------------------------------------------------------


def open_ddad_run(cfg, *, results_root="results") -> Run:
    from dia.stages import open_stage_run

    return open_stage_run(cfg, STAGE, method_name(cfg), results_root)


def train_ddad(cfg, *, results_root="results", data_root=None, device=None) -> Run:
    """Train (or resume) the 2K reconstruction nets and the ASR-Net(s), then score the test set
    (and the validation split, where the dataset has one with both classes).

    Args:
        cfg: an `ExperimentConfig`; `cfg.ddad` holds every setting.
        results_root: where `runs/ddad/<dataset>/ddad-<backbone>/...` is written.
        data_root: dataset root; None or "" = `$DIA_DATA_ROOT`, else `data/`.
        device: torch device or name; default `cfg.device` ("auto").

    Returns the `Run` (already DONE runs are returned untouched).

    Raises:
        NotApplicable: the training split has no anomalous image for the unlabeled set (raised
            before anything is written under `results_root/runs`).
        dia.metrics.MetricError: the test split lacks a class (also before any write).
    """
    from dia.runtime import stage_device
    from dia.stages import is_stage_done

    if is_stage_done(cfg, STAGE, method_name(cfg), results_root):
        return open_ddad_run(cfg, results_root=results_root)
    data = prepare_data(cfg, data_root=data_root, results_root=results_root)
    cfg, device = stage_device(cfg, device)
    run = open_ddad_run(cfg, results_root=results_root)
    with run.exclusive():  # another process training this run: wait, then find it DONE
        if not run.is_done():
            _train_and_score(run, cfg, data, device)
    return run


def _train_and_score(run: Run, cfg, data: DDADData, device: torch.device) -> None:
    """Train the ensemble of `run` (resuming each net from its checkpoint), score, mark DONE."""
    from dia.metrics import labelled_splits, score_split, scores_file, write_metrics, write_scores
    from dia.runtime import seed_everything

    seed_everything(cfg.seed)
    run.write_json("unlabeled.json", {**data.describe(), "unlabeled_ids": data.unlabeled_ids})
    plan = ensemble_plan(cfg)
    run.write_json("ensemble.json", plan)
    run.append_log({"event": "start", "device": str(device), **data.describe()})

    t0 = time.perf_counter()
    unknown_set = torch.cat([data.known, data.unlabeled])
    nets_a = [train_backbone(run, cfg, Path(p).stem, unknown_set, device) for p in plan["udm"]]
    nets_b = [train_backbone(run, cfg, Path(p).stem, data.known, device) for p in plan["ndm"]]
    for net in nets_a + nets_b:
        net.requires_grad_(False)
    refiners = {mode: train_refiner(run, cfg, mode, data.known, nets_a, nets_b, device)
                for mode in plan["refine"]}
    train_seconds = time.perf_counter() - t0

    def score(split: str, images: torch.Tensor, labels: np.ndarray, ids: list[str]):
        """Every kind's scores of one labelled split, to its files; the AUC row of each kind."""
        scores = score_images(images, nets_a, nets_b, refiners,
                              batch_size=cfg.ddad.eval_batch_size, device=device)
        write_scores(run, ids, labels, scores["asr"], name=scores_file(split))  # the headline
        return [row for kind, values in scores.items()
                for row in score_split(run, split, sample_ids=ids, labels=labels,
                                       anomaly_score=values, kind=kind, profile=cfg.profile,
                                       method=METHOD_NAMES.get(kind, INTRA_ASR_NAME),
                                       image_size=cfg.ddad.image_size)]

    rows = [row for split, images, labels, ids in labelled_splits(data, cfg.dataset)
            for row in score(split, images, labels, ids)]
    write_metrics(run, [row for row in rows if row["method"] != INTRA_ASR_NAME])
    summary = {row["method"]: row["value"] for row in rows if row["metric"] == "auc"}
    val = {row["method"]: row["value"] for row in rows if row["metric"] == "val_auc"}
    if val:
        summary["val_auc"] = val
    epoch_seconds = sum(r.get("seconds", 0.0) for r in run.read_log() if "net" in r)
    summary.update(train_seconds_this_session=round(train_seconds, 1),
                   train_seconds_all_epochs=round(epoch_seconds, 1), device=str(device),
                   **data.describe())
    run.append_log({"event": "done", **summary})
    run.mark_done(summary)


# -- loading a finished run and looking at it ---------------------------------------------------


def load_ensemble(run: Run, cfg, device: torch.device | str = "cpu") -> dict[str, Any]:
    """The networks of a run, from the files listed in its ensemble.json only (eval mode)."""
    plan = ensemble_plan(cfg)
    recorded = _read_json(run, "ensemble.json")
    if recorded != plan:
        raise RunError(f"{run.path}/ensemble.json does not list the networks this config expects: "
                       f"{retrain_advice(run.path)}")

    def load(rel: str, model: nn.Module) -> nn.Module:
        state = load_run_checkpoint(run.path / rel, run, name=Path(rel).stem,
                                    remedy=retrain_advice(run.path), needs=("model",))
        if state is None:
            raise _missing(run, rel)
        model.load_state_dict(state["model"])
        return model.to(device).eval().requires_grad_(False)

    return {
        "udm": [load(p, _make_backbone(cfg, Path(p).stem)) for p in plan["udm"]],
        "ndm": [load(p, _make_backbone(cfg, Path(p).stem)) for p in plan["ndm"]],
        "refine": {m: load(p, _make_refiner(cfg, m)) for m, p in plan["refine"].items()},
    }


def _read_json(run: Run, name: str) -> Any:
    import json

    path = run.path / name
    if not path.is_file():
        raise _missing(run, name)
    try:
        return json.loads(path.read_text())
    except ValueError as err:  # cut short, or not UTF-8
        raise RunError(f"{path} cannot be read ({first_line(err)}): "
                       f"{retrain_advice(run.path)}") from None


def _missing(run: Run, name: str) -> RunError:
    """A file of the run that is not there: a finished run (copied without its checkpoints?)
    is trained again, an unfinished one first finishes."""
    if run.is_done():
        return RunError(f"{run.path / name} is missing from the finished run (a folder copied "
                        f"without its checkpoints?): {retrain_advice(run.path)}")
    return RunError(f"{run.path / name} is missing; train the run first (train_ddad)")


def read_metrics(run: Run):
    """metrics.csv of a finished run as a DataFrame: method, metric (auc = test, val_auc =
    validation split), AUC and its 95 % interval."""
    from dia.metrics import read_metrics_file

    frame = read_metrics_file(run.finished_file("metrics.csv", "DDAD-ASR"))
    columns = ["dataset", "method", "seed", "profile", "image_size", "metric", "value", "ci_low",
               "ci_high"]
    return frame[columns]


def pick_examples(labels: np.ndarray, per_class: int = 3) -> list[int]:
    """The first `per_class` normal then the first `per_class` anomalous test indices."""
    labels = np.asarray(labels)
    return [int(i) for c in (0, 1) for i in np.flatnonzero(labels == c)[:per_class]]


@torch.no_grad()
def example_maps(run: Run, cfg, *, data_root=None, results_root="results", per_class: int = 3,
                 device: torch.device | str = "cpu") -> dict[str, Any]:
    """Inputs, reconstructions and score maps of a few normal and anomalous test images."""
    data = prepare_data(cfg, data_root=data_root, results_root=results_root)
    nets = load_ensemble(run, cfg, device)
    idx = pick_examples(data.test_labels, per_class)
    x = data.test[idx].to(device)
    maps = ensemble_maps(x, nets["udm"], nets["ndm"])
    asr = anomaly_probability(nets["refine"]["dual"](refine_inputs(maps, "dual")))
    return {
        "image": x.cpu(), "ndm_mean": maps.mean_b.cpu(), "udm_mean": maps.mean_a.cpu(),
        "rec": maps.rec.cpu(), "intra": maps.intra.cpu(), "inter": maps.inter.cpu(),
        "asr": asr.cpu(), "labels": data.test_labels[idx], "ids": [data.test_ids[i] for i in idx],
    }


def plot_examples(run: Run, cfg, *, data_root=None, results_root="results", per_class: int = 3):
    """One row per test image (normal first): input, NDM and UDM mean reconstructions,
    A_intra, A_inter and the ASR probability map."""
    import matplotlib.pyplot as plt

    ex = example_maps(run, cfg, data_root=data_root, results_root=results_root,
                      per_class=per_class)
    columns = [("image", "input", "gray"), ("ndm_mean", "NDM mean μ_B", "gray"),
               ("udm_mean", "UDM mean μ_A", "gray"), ("intra", "A_intra (NDM std)", "magma"),
               ("inter", "A_inter |μ_A − μ_B|", "magma"), ("asr", "ASR probability", "magma")]
    rows = len(ex["ids"])
    fig, axes = plt.subplots(rows, len(columns), figsize=(2.1 * len(columns), 2.1 * rows),
                             squeeze=False)
    for r in range(rows):
        for c, (key, title, cmap) in enumerate(columns):
            ax = axes[r, c]
            img = ex[key][r, 0].numpy()
            if cmap == "gray":
                ax.imshow(img, cmap="gray", vmin=-1, vmax=1, interpolation="nearest")
            elif key == "asr":
                ax.imshow(img, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
            else:  # discrepancy maps share one scale per column, so rows compare
                ax.imshow(img, cmap=cmap, vmin=0, vmax=float(ex[key].max()) or 1.0,
                          interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            if r == 0:
                ax.set_title(title, fontsize=8)
            if c == 0:
                kind = "anomalous" if ex["labels"][r] else "normal"
                ax.set_ylabel(f"{kind}\n{Path(ex['ids'][r]).name}", fontsize=7)
    fig.tight_layout()
    return fig


def plot_score_histograms(run: Run):
    """Normal vs anomalous histograms of every score kind (min-max normalised, as the reference)."""
    import matplotlib.pyplot as plt

    from dia.metrics import read_scores_file, scores_file

    run.require_done("DDAD-ASR")
    kinds = [k for k in SCORE_KINDS if (run.path / scores_file("test", k)).is_file()]
    fig, axes = plt.subplots(1, len(kinds), figsize=(3 * len(kinds), 2.6), squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        frame = read_scores_file(run.path / scores_file("test", kind))
        s = frame["anomaly_score"].to_numpy()
        s = (s - s.min()) / (s.max() - s.min() + 1e-12)
        for label, name in ((0, "normal"), (1, "anomalous")):
            ax.hist(s[frame["label"].to_numpy() == label], bins=30, range=(0, 1), alpha=0.6,
                    label=name)
        ax.set_title(METHOD_NAMES.get(kind, INTRA_ASR_NAME), fontsize=9)
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    return fig
