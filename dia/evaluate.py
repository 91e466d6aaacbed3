"""Score the test images with the CSI score of a trained DIA/CSI encoder: the `evaluate` stage.

    run = evaluate_amplifier(cfg, "dia", results_root="results")

Scores the LAST checkpoint of a finished amplify run (no test-set model selection), writes
`scores.csv` (sample_id, label, anomaly_score; label 1 = anomalous) and `metrics.csv` (AUC with a
bootstrap interval) through `dia.metrics`, then `DONE`. Where the dataset has a labelled
validation split (MedMNIST's official val, the synthetic set's), it is scored the same way into
`val_scores.csv` and a `val_auc` row: the figure to compare settings on (a DDPM length, a number
of epochs) without choosing them on the test set. Rows `auc_contrast` and `auc_shift` (and
`val_auc_contrast`, `val_auc_shift`) give the AUC of each of the score's two terms alone
(`dia.scoring.csi_score_terms`), to see which term ranks the images; the table reads only `auc`.
Plotting helpers for the notebook (ROC, score histograms, most/least anomalous images) read the
test files back.

Reference: shijianjian/DIA README `eval.py --mode ood_pre --ood_score CSI --shift_trans_type
rotation --ood_samples 10 --resize_factor 0.54 --resize_fix` (see `dia.scoring`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from dia.config import ExperimentConfig
from dia.metrics import (
    SPLITS, auc_rows, check_test_labels, labelled_splits, read_metrics_file, read_scores_file,
    score_split, write_metrics,
)
from dia.lineage import UPSTREAM, Damage, refuse_out_of_date, upstream_change, upstream_record
from dia.results import DONE, Run, RunError, atomic_savefig
from dia.runtime import stage_device
from dia.scoring import csi_normality_score, csi_score_terms, csi_statistics, extract_features
from dia.stages import is_stage_done, open_stage_run, stage_run_dir
from dia.train_encoder import CHECKPOINT, _check_method, encoder_precision, load_encoder

SCORES = SPLITS["test"].scores  # per-image scores of the test split
log = logging.getLogger(__name__)


def finished_amplify_run(
    cfg: ExperimentConfig, method: str, results_root: str | Path = "results"
) -> Run:
    """The DONE amplify run of `cfg`, made from the DDPM checkpoint there now (`dia.lineage`), or
    a RunError saying how to produce it (creates nothing)."""
    _check_method(method)
    path = stage_run_dir(cfg, "amplify", method, results_root)
    if not (path / "DONE").is_file():
        state = "is not finished (no DONE marker)" if path.is_dir() else "does not exist"
        raise RunError(
            f"amplify run {path} {state}: train the {method.upper()} encoder first with "
            f"dia.train_encoder.train_amplifier(cfg, {method!r}) "
            "(notebooks/20_train_amplifier.ipynb)"
        )
    refuse_out_of_date(path, "amplify run",  # a DIA encoder of a DDPM trained again since
                       f"delete the run folder to train the {method.upper()} encoder again")
    return open_stage_run(cfg, "amplify", method, results_root)


def evaluate_amplifier(
    cfg: ExperimentConfig,
    method: str = "dia",
    *,
    results_root: str | Path = "results",
    data_root: str | Path | None = None,
    device: torch.device | str | None = None,
) -> Run:
    """CSI-score the test split with the last checkpoint of the amplify run of (cfg, method).

    Returns:
        the finished evaluate `Run` (scores.csv, metrics.csv, csi_statistics.json, DONE; and
        val_scores.csv where the dataset has a validation split with both classes).
    """
    amplify = finished_amplify_run(cfg, method, results_root)
    if is_stage_done(cfg, "evaluate", method, results_root):
        return open_stage_run(cfg, "evaluate", method, results_root)
    cfg, device = stage_device(cfg, device)
    from dia.data import load_for_config

    model, meta = load_encoder(amplify, cfg, method, device)  # errors before anything is written
    upstream = upstream_record(amplify.path, amplify.checkpoint_dir / CHECKPOINT)
    splits = load_for_config(cfg, data_root=data_root, results_root=results_root)
    splits.require_training_normals("the CSI score's statistics")  # before any file is written
    check_test_labels(splits, cfg.dataset)  # before the training set's features and any file
    run = open_stage_run(cfg, "evaluate", method, results_root)
    with run.exclusive():  # another process scoring this run: wait, then find it DONE
        _forget_stale_scores(run.path)
        if not run.is_done():
            _score(run, cfg, method, model, splits, device,
                   encoder_info={"amplify_run": amplify.run_id, "epoch": meta["epoch"],
                                 UPSTREAM: upstream})
    return run


def _forget_stale_scores(path: Path) -> None:
    """Scores of an encoder trained again since are scored again: their DONE and score files go,
    with a warning (scoring is minutes, and the old scores belong to a checkpoint that is gone;
    a validation split that has since lost a class would otherwise keep its old scores)."""
    change = upstream_change(path)
    if change is not None:  # or its own DONE is damaged (a lineage.Damage): scored again too
        what = "scoring it again" if isinstance(change, Damage) else "scoring the new encoder"
        log.warning("evaluate run %s: %s; %s", path, change, what)
        (path / DONE).unlink(missing_ok=True)
        for name in (*(split.scores for split in SPLITS.values()), "metrics.csv"):
            (path / name).unlink(missing_ok=True)  # not left beside the new ones where unwritten


def _score(run: Run, cfg: ExperimentConfig, method: str, model, splits, device: torch.device,
           encoder_info: dict) -> None:
    """Score the test (and val) split with `model`, write the files and mark `run` DONE.

    `encoder_info` (the amplify run and epoch scored) goes into DONE.
    """
    s = cfg.score
    autocast = encoder_precision(cfg.amplify.precision, device,
                                 cpu_bf16=cfg.amplify.cpu_bf16).autocast_dtype
    common = dict(num_samples=s.num_samples, crop_scale=s.crop_scale, shift=cfg.amplify.shift,
                  device=device, autocast_dtype=autocast, progress=True)
    train_feats = extract_features(model, splits.train, batch_size=s.train_batch_size, **common)
    stats = csi_statistics(train_feats)
    info = dict(method=method, profile=cfg.profile, image_size=splits.image_size)
    rows, term_rows = [], []  # the score's AUC per split; then its two terms' (a diagnostic)
    for split, images, labels, ids in labelled_splits(splits, cfg.dataset):
        feats = extract_features(model, images, batch_size=s.batch_size, **common)
        rows += score_split(run, split, sample_ids=ids, labels=labels,
                            anomaly_score=(-csi_normality_score(stats, feats)).numpy(), **info)
        for name, normality in csi_score_terms(stats, feats).items():
            term_rows += auc_rows(run, labels=labels, anomaly_score=(-normality).numpy(),
                                  metric=f"{SPLITS[split].metric}_{name}", **info)
    write_metrics(run, rows + term_rows)
    run.write_json("csi_statistics.json", {
        "weight_con": stats.weight_con.tolist(), "weight_cls": stats.weight_cls.tolist(),
        "num_train": int(splits.train.shape[0]), "num_test": int(splits.test.shape[0]),
    })
    aucs = {row["metric"]: row["value"] for row in rows}  # auc, and val_auc when scored
    run.mark_done({**aucs, "ci_low": rows[0]["ci_low"], "ci_high": rows[0]["ci_high"],
                   **encoder_info})


# -- reading results back and plotting (for notebooks/30_evaluate) -------------------------------


def read_scores(run: Run):
    """scores.csv of a finished evaluate run as a DataFrame (sample_id, label, anomaly_score);
    one damaged is a RunError naming it and what to do (`read_scores_file`)."""
    return read_scores_file(run.finished_file(SCORES, "evaluate"))


def read_metrics(run: Run):
    """metrics.csv of a finished evaluate run (`read_metrics_file`: one damaged says what to do).

    Rows: the test AUC (metric ``auc``), the validation AUC (``val_auc``) where scored, and the
    AUC of each of the score's two terms (a diagnostic)."""
    return read_metrics_file(run.finished_file("metrics.csv", "evaluate"))


def plot_roc(runs: Run | list[Run], ax=None):
    """ROC curves of one or more evaluate runs, AUC in the legend; returns the figure."""
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_auc_score, roc_curve

    runs = [runs] if isinstance(runs, Run) else list(runs)
    if ax is None:
        _, ax = plt.subplots(figsize=(4.5, 4.5))
    for run in runs:
        df = read_scores(run)
        fpr, tpr, _ = roc_curve(df["label"], df["anomaly_score"])
        auc = roc_auc_score(df["label"], df["anomaly_score"])
        ax.plot(fpr, tpr, label=f"{run.method.upper()} s{run.seed} (AUC {auc:.3f})")
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=0.8)
    ax.set(xlabel="false positive rate", ylabel="true positive rate",
           title=f"ROC, {runs[0].dataset} (label 1 = anomalous)")
    ax.legend(loc="lower right")
    return ax.figure


def plot_score_histograms(run: Run, ax=None, bins: int = 30):
    """Histograms of anomaly scores, normal vs anomalous test images; returns the figure."""
    import matplotlib.pyplot as plt

    df = read_scores(run)
    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 3.5))
    edges = np.histogram_bin_edges(df["anomaly_score"], bins=bins)
    for label, name, color in ((0, "normal", "tab:blue"), (1, "anomalous", "tab:red")):
        values = df.loc[df["label"] == label, "anomaly_score"]
        ax.hist(values, bins=edges, alpha=0.55, color=color, label=f"{name} (n={len(values)})")
    ax.set(xlabel="anomaly score = −s(x)", ylabel="test images",
           title=f"{run.method.upper()} on {run.dataset}")
    ax.legend()
    return ax.figure


def plot_extreme_images(run: Run, splits, num: int = 8):
    """Grid: the `num` most anomalous (top row) and least anomalous (bottom row) test images."""
    import matplotlib.pyplot as plt

    df = read_scores(run)
    index = {sid: i for i, sid in enumerate(splits.test_ids)}
    order = df.sort_values("anomaly_score", ascending=False)
    num = min(num, len(df) // 2) or 1
    rows = (("most anomalous", order.head(num)), ("least anomalous", order.tail(num)[::-1]))
    fig, axes = plt.subplots(2, num, figsize=(1.6 * num, 3.8), squeeze=False)
    for r, (title, part) in enumerate(rows):
        for c, (_, row) in enumerate(part.iterrows()):
            ax = axes[r][c]
            image = splits.test[index[row["sample_id"]]].permute(1, 2, 0).numpy()
            ax.imshow(image)
            ax.set_title(f"{'A' if row['label'] else 'N'} {row['anomaly_score']:.2f}", fontsize=8,
                         color="tab:red" if row["label"] else "tab:blue")
            ax.axis("off")
        axes[r][0].text(-0.1, 0.5, title, transform=axes[r][0].transAxes, rotation=90,
                        va="center", ha="right", fontsize=9)
    fig.suptitle(f"{run.method.upper()} on {run.dataset}: A = anomalous, N = normal (score)")
    fig.tight_layout()
    return fig


def save_figure(fig, results_root: str | Path, name: str) -> Path:
    """Save `fig` as <results_root>/figures/<name>.png (150 dpi) and return the path."""
    return atomic_savefig(fig, Path(results_root) / "figures" / f"{name}.png", dpi=150,
                          bbox_inches="tight")


def figure_name(run: Run, kind: str) -> str:
    """A stable figure name: <kind>_<dataset>_<method>_<profile>_s<seed>."""
    return f"{kind}_{run.dataset}_{run.method}_{run.profile}_s{run.seed}"


PLOTS = {"roc": plot_roc, "scores": plot_score_histograms, "extremes": plot_extreme_images}


def save_plot(run: Run, kind: str, results_root: str | Path, **kwargs) -> Path:
    """Draw the `kind` figure of an evaluate run (`PLOTS`; keyword arguments go to its function,
    e.g. splits= for "extremes"), save it under `figure_name` and return the path. The figure
    stays open, so a notebook cell shows it."""
    if kind not in PLOTS:
        raise ValueError(f"unknown figure {kind!r}; choose one of {', '.join(PLOTS)}")
    return save_figure(PLOTS[kind](run, **kwargs), results_root, figure_name(run, kind))


def plot_training_log(run: Run):
    """Loss terms and learning rate per epoch of an amplify run (train_log.jsonl)."""
    import matplotlib.pyplot as plt
    import pandas as pd

    log = pd.DataFrame(run.read_log())
    if log.empty:
        raise RunError(f"amplify run {run.path} has no training log yet")
    fig, (ax_loss, ax_lr) = plt.subplots(1, 2, figsize=(9, 3.2))
    terms = (("loss", "total"), ("loss_contrastive", "contrastive"), ("loss_shift", "shift CE"))
    for key, name in terms:
        ax_loss.plot(log["epoch"], log[key], marker=".", label=name)
    ax_loss.set(xlabel="epoch", ylabel="loss (epoch mean)",
                title=f"{run.method.upper()} on {run.dataset}")
    ax_loss.legend()
    ax_lr.plot(log["epoch"], log["lr"], marker=".")
    ax_lr.set(xlabel="epoch", ylabel="learning rate (end of epoch)", title="warm-up, then cosine")
    fig.tight_layout()
    return fig
