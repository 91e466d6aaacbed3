"""Figures of the diffusion stage: the dissolving gallery, the DDPM loss curve and its noise error.

Each writes a PNG under ``<results_root>/figures/`` (matplotlib, Agg) and returns its path;
`show` displays one in a notebook.
"""

from __future__ import annotations

from pathlib import Path

import torch

from dia.config import ExperimentConfig
from dia.diffusion import describe_focus
from dia.results import Run, RunError, atomic_savefig, is_finite_number, retrain_advice

VALUE_RANGES = ("reference", "normalized")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _pick(labels: torch.Tensor, cls: int, num: int, seed: int) -> torch.Tensor:
    idx = torch.nonzero(labels == cls).flatten()
    g = torch.Generator().manual_seed(seed)
    return idx[torch.randperm(idx.numel(), generator=g)[:num]].sort().values


def _rgb(x: torch.Tensor):
    return x.clamp(0, 1).permute(1, 2, 0).cpu().numpy()


def dissolving_gallery(
    cfg: ExperimentConfig,
    *,
    results_root: str | Path = "results",
    data_root: str | Path | None = None,
    timesteps: tuple[int, ...] = (100, 200, 400),
    num_images: int = 4,
    device: torch.device | str | None = None,
) -> Path:
    """Real normal and anomalous test images, dissolved at each t with both value ranges.

    Columns: the original; for each t the ``reference`` dissolving ([0, 1] fed as is, output
    clamped to [−1, 1] and shown clipped to [0, 1]); for each t the ``normalized`` ablation; for
    each t the absolute difference |reference − original| (channel mean; one colour scale).
    Rows: `num_images` normal then `num_images` anomalous test images (seeded choice).

    Returns:
        ``<results_root>/figures/dissolving_<dataset>_<profile>.png``.
    """
    from dia.data import load_for_config
    from dia.diffusion import diffusion_run_dir, load_dissolver_model
    from dia.dissolve import dissolve

    unet, alphas_cumprod = load_dissolver_model(diffusion_run_dir(cfg, results_root), device)
    splits = load_for_config(cfg, data_root=data_root or None, results_root=results_root)
    rows = [(i, "normal") for i in _pick(splits.test_labels, 0, num_images, cfg.seed).tolist()]
    rows += [(i, "anomalous") for i in _pick(splits.test_labels, 1, num_images, cfg.seed).tolist()]
    if not rows:
        raise ValueError(f"dataset {cfg.dataset!r} has no test images to show")
    images = splits.test[[i for i, _ in rows]].float() / 255.0
    out = {}
    for vr in VALUE_RANGES:
        for t in timesteps:
            out[vr, t] = dissolve(images, unet, alphas_cumprod, int(t), value_range=vr)
    diffs = {t: (out["reference", t] - images).abs().mean(1) for t in timesteps}
    vmax = max(float(d.max()) for d in diffs.values()) or 1.0

    columns = [("original", None, None)]
    columns += [(f"reference\nt = {t}", "reference", t) for t in timesteps]
    columns += [(f"normalized\nt = {t}", "normalized", t) for t in timesteps]
    columns += [(f"|reference − original|\nt = {t}", "diff", t) for t in timesteps]
    plt = _pyplot()
    size = 1.45
    fig, axes = plt.subplots(len(rows), len(columns), squeeze=False,
                             figsize=(size * len(columns), size * len(rows) + 0.9))
    for r, (index, kind) in enumerate(rows):
        for c, (title, what, t) in enumerate(columns):
            ax = axes[r, c]
            if what is None:
                ax.imshow(_rgb(images[r]))
            elif what == "diff":
                ax.imshow(diffs[t][r].cpu().numpy(), cmap="magma", vmin=0, vmax=vmax)
            else:
                ax.imshow(_rgb(out[what, t][r]))
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(title, fontsize=8)
            if c == 0:
                ax.set_ylabel(f"{kind}\n{splits.test_ids[index]}"[:28], fontsize=7)
    steps = cfg.diffusion.steps
    fig.suptitle(
        f"Dissolving on {cfg.dataset} ({splits.image_size}px, DDPM width {cfg.diffusion.width}, "
        f"{steps} steps): x̂₀ = √(1/ᾱₜ)·x − √(1/ᾱₜ − 1)·ε_θ(x, t), one step, no noise added",
        fontsize=9,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    path = atomic_savefig(
        fig, Path(results_root) / "figures" / f"dissolving_{cfg.dataset}_{cfg.profile}.png",
        dpi=100)
    plt.close(fig)
    return path


def plot_loss_curve(run: Run, *, results_root: str | Path | None = None) -> Path:
    """The DDPM training loss (L1 on the noise, one point per log window) and throughput.

    Returns:
        ``<results_root>/figures/ddpm_loss_<dataset>_<profile>.png`` (results_root defaults to the
        one the run folder lives in).
    """
    records = run.read_log()
    if not records:
        raise ValueError(f"{run.path} has no train_log.jsonl records to plot")
    if not all(is_finite_number(r.get(key)) for r in records for key in ("step", "loss")):
        raise RunError(f"{run.path / 'train_log.jsonl'} has a record without a step and a loss "
                       f"that are finite numbers: it was edited or damaged; restore it from a "
                       f"copy, or {retrain_advice(run.path)}")
    root = Path(results_root) if results_root is not None else run.path.parents[4]
    steps = [r["step"] for r in records]
    plt = _pyplot()
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(9, 3.2))
    ax.plot(steps, [r["loss"] for r in records], marker="." if len(steps) < 50 else None)
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("L1 loss on ε (window mean)")
    ax.set_title(f"DDPM loss — {run.dataset}, seed {run.seed}", fontsize=10)
    ax.grid(alpha=0.3)
    ax2.plot(steps, [r.get("images_per_s", float("nan")) for r in records], color="tab:green")
    ax2.set_xlabel("optimiser step")
    ax2.set_ylabel("images / s")
    ax2.set_title("throughput", fontsize=10)
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    path = atomic_savefig(fig, root / "figures" / f"ddpm_loss_{run.dataset}_{run.profile}.png",
                          dpi=100)
    plt.close(fig)
    return path


def plot_noise_error(
    rows: list[dict[str, float]], cfg: ExperimentConfig, *, results_root: str | Path = "results",
) -> Path:
    """The DDPM's L1 noise error against t (`dia.noise_check`), one line per image sample
    (training normals, held-out normals), with dissolving's t range shaded.

    Returns:
        ``<results_root>/figures/ddpm_noise_error_<dataset>_<profile>.png``.
    """
    if not rows:
        raise ValueError("no noise-error rows to plot (run dia.noise_check.check_ddpm first)")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.4))
    ax.axvspan(cfg.dissolve.t_min, cfg.dissolve.t_max - 1, color="tab:orange", alpha=0.15,
               label=f"t used by dissolving ({cfg.dissolve.t_min}-{cfg.dissolve.t_max - 1})")
    labels = {"train": "DDPM, training normals", "val": "DDPM, held-out normals (val)"}
    for split, label in labels.items():  # rows written before the val check have no "split"
        own = [r for r in rows if r.get("split", "train") == split]
        if own:
            ax.plot([r["t"] for r in own], [r["l1"] for r in own], marker="o", label=label)
    ax.axhline(rows[0]["zero_l1"], color="grey", linestyle="--", label="always predict ε = 0")
    ax.set_xscale("log")
    ticks = sorted({r["t"] for r in rows})
    ax.set_xticks(ticks, [str(t) for t in ticks])  # the measured t, not powers of ten
    ax.minorticks_off()
    ax.set_xlabel("timestep t (of 1000)")
    ax.set_ylabel("mean |ε_θ(x_t, t) − ε|")
    d = cfg.diffusion
    focus = (", " + describe_focus(d.focus_fraction, d.focus_t_min, d.focus_t_max)
             if d.focus_fraction else "")
    ax.set_title(f"Noise-prediction error — {cfg.dataset}, width {d.width}, {d.steps} steps "
                 f"× {d.batch_size}{focus}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = atomic_savefig(
        fig, Path(results_root) / "figures" / f"ddpm_noise_error_{cfg.dataset}_{cfg.profile}.png",
        dpi=100)
    plt.close(fig)
    return path


def show(path: str | Path):
    """Display a saved PNG in a notebook (works with any matplotlib backend)."""
    from IPython.display import Image

    return Image(filename=str(path))
