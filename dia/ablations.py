"""Ablations of DIA: which of its ingredients matter, measured on our own runs.

Each ablation is a set of variants; a variant is a set of config overrides on the profile. Every
(variant, seed) is trained and scored through the same run-folder machinery as the main suite
(`train_amplifier` + `evaluate_amplifier`), so finished variants are skipped on the next call and
the default variant is shared with the main table's run. Variant runs whose config differs from
the profile's are kept out of the main AUC table (`dia.report` shows only the profile's config).

    frame = run_ablations("pneumonia", "quick", seeds=3, which=("dissolver", "value_range"))
    readme_layout(frame)        # rows = shift x dissolver, as the DIA repository's README

`write_ablation_tables` also enters every scored run in a ledger (`tables/ablation_runs.csv`:
run id, AUC, machine, commit), which is committed with the published tables: with
`train=False` a later call on a fresh machine publishes the grid from it, run folders or not.
A run id names a config, not a machine: the ledger keeps one row per run id and kind of machine
(any CPU, or a GPU model: `dia.report.machine_kind`), so a GPU score of a cell never replaces
the published CPU one, nor the other way round.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from dia.config import ConfigError, load_config
from dia.diffusion import describe_focus
from dia.metrics import not_aucs, read_metrics_file
from dia.results import atomic_savefig, finished_file, read_whole_csv

log = logging.getLogger(__name__)

# name -> list of (variant label, overrides, method)
ABLATIONS: dict[str, list[tuple[str, dict[str, Any], str]]] = {
    "dissolver": [
        ("diffusion", {}, "dia"),
        ("gaussian_blur", {"dissolve.dissolver": "gaussian_blur"}, "dia"),
        ("median_blur", {"dissolve.dissolver": "median_blur"}, "dia"),
        ("none (CSI)", {}, "csi"),
    ],
    "shift": [
        ("rotation", {}, "dia"),
        ("cutperm", {"amplify.shift": "cutperm"}, "dia"),
        ("cutperm, gaussian_blur", {"amplify.shift": "cutperm", "dissolve.dissolver": "gaussian_blur"}, "dia"),
        ("cutperm, median_blur", {"amplify.shift": "cutperm", "dissolve.dissolver": "median_blur"}, "dia"),
    ],
    "value_range": [
        ("reference", {}, "dia"),
        ("normalized", {"dissolve.value_range": "normalized"}, "dia"),
    ],
    "exclusion": [
        ("own dissolved copy excluded", {}, "dia"),
        ("own dissolved copy negative", {"amplify.exclude_own_dissolved": False}, "dia"),
    ],
    "epoch_draws": [  # the reference's README protocol repeats epoch 2's draws (DECISIONS 21)
        ("DIA, fresh each epoch", {}, "dia"),
        ("DIA, epoch 2's replayed", {"amplify.replay_epoch_draws": True}, "dia"),
        ("CSI, fresh each epoch", {}, "csi"),
        ("CSI, epoch 2's replayed", {"amplify.replay_epoch_draws": True}, "csi"),
    ],
    "keep_gray": [  # a short DDPM tints gray images; only dissolved views would carry colour
        ("tint kept (reference)", {}, "dia"),
        ("gray kept gray", {"dissolve.keep_gray": True}, "dia"),
    ],
    "resolution": [  # 224-pixel datasets only: MedMNIST is always dissolved at 32 (padded 28)
        ("32", {}, "dia"),
        ("64", {"dissolve.resolution": 64}, "dia"),
    ],
}
DDPM_STEP_FRACTIONS = (0.25, 0.5, 1.0)  # of the profile's diffusion.steps
# The DDPM's size and batch against the profile's: x2 width and x4 images per step turn quick's
# DDPM (width 32, 10.7 M parameters, 600 x 128 images) into the budget of the reference authors'
# short run (DIA 0.906): width 64 (42.9 M; their U-Net has 36.3 M) and 512 images per step.
DDPM_BUDGET_SCALES = ((1, 1), (2, 4))  # (width, images per step) factors; (1, 1) = the profile's
# The DDPM's timestep focus (`diffusion.focus_fraction`: the share of each batch whose t is drawn
# from the range dissolving uses, DECISIONS.md DIA 17): can a DDPM of a quarter of the profile's
# steps serve DIA as well as the profile's when all or half of its t lie where dissolving needs them?
DDPM_FOCUS = ((0.25, 0.0), (0.25, 0.5), (0.25, 1.0))  # (x diffusion.steps, focus_fraction)
# The DDPM's own draw: one DDPM serves every amplifier seed (DECISIONS.md DIA 10), so a spread
# over seeds leaves out how far DIA moves with the DDPM it dissolves with. This trains the
# profile's DDPM under its own `diffusion.seed` and the next ones (docs/MEASUREMENTS.md
# *Ablations*: checkpoints of one short DDPM already moved DIA by as much as amplifier seeds do).
DDPM_SEEDS = 3
# The DDPM's layout: our diffusers U-Net against the reference code's lucidrains one
# (`diffusion.architecture`, DECISIONS.md DIA 20), at the profile's width and batch and, for the
# reference layout, also at the budget of the reference authors' short run (the last
# `ddpm_budget` scales): for `quick` a DDPM that differs from theirs only in length (600 steps
# here, 580 there).
COMPUTED = ("ddpm_steps", "ddpm_budget", "ddpm_focus", "ddpm_seed", "ddpm_arch")  # on the profile


def variants(which: Sequence[str], profile: str, dataset: str) -> list[tuple[str, str, dict, str]]:
    """(ablation, label, overrides, method) for the requested ablations."""
    unknown = [w for w in which if w not in ABLATIONS and w not in COMPUTED]
    if unknown:
        raise ValueError(f"unknown ablation(s) {unknown}; choose from {[*ABLATIONS, *COMPUTED]}")
    ddpm = load_config(profile, dataset=dataset).diffusion
    out = []
    for name in which:
        if name == "ddpm_steps":
            for fraction in DDPM_STEP_FRACTIONS:
                n = _scaled_steps(ddpm.steps, fraction)
                out.append((name, str(n), {} if fraction == 1.0 else {"diffusion.steps": n}, "dia"))
        elif name == "ddpm_budget":
            for width_x, batch_x in DDPM_BUDGET_SCALES:
                width, batch = ddpm.width * width_x, ddpm.batch_size * batch_x
                overrides = {"diffusion.width": width, "diffusion.batch_size": batch}
                out.append((name, f"width {width}, {ddpm.steps} x {batch} images",
                            {} if (width_x, batch_x) == (1, 1) else overrides, "dia"))
        elif name == "ddpm_focus":
            own = (ddpm.steps, ddpm.focus_fraction)
            pairs = [own] + [(_scaled_steps(ddpm.steps, x), f) for x, f in DDPM_FOCUS]
            for n, focus in dict.fromkeys(pairs):  # a pair equal to the profile's runs once
                where = describe_focus(focus, ddpm.focus_t_min, ddpm.focus_t_max)
                overrides = {"diffusion.steps": n, "diffusion.focus_fraction": focus}
                out.append((name, f"{n} steps, {where}", {} if (n, focus) == own else overrides,
                            "dia"))
        elif name == "ddpm_seed":
            for k in range(DDPM_SEEDS):
                seed = ddpm.seed + k
                out.append((name, f"DDPM seed {seed}", {} if k == 0 else {"diffusion.seed": seed},
                            "dia"))
        elif name == "ddpm_arch":
            width_x, batch_x = DDPM_BUDGET_SCALES[-1]
            reference = {"diffusion.architecture": "reference"}
            big = {"diffusion.width": ddpm.width * width_x,
                   "diffusion.batch_size": ddpm.batch_size * batch_x}
            for label, overrides in (
                    (f"diffusers, width {ddpm.width}, {ddpm.steps} x {ddpm.batch_size}", {}),
                    (f"reference, width {ddpm.width}, {ddpm.steps} x {ddpm.batch_size}", reference),
                    (f"reference, width {big['diffusion.width']}, {ddpm.steps} x "
                     f"{big['diffusion.batch_size']}", {**reference, **big})):
                out.append((name, label, overrides, "dia"))
        elif name == "resolution" and dataset in ("pneumonia", "breast", "synthetic"):
            continue
        else:
            out += [(name, label, overrides, method) for label, overrides, method in ABLATIONS[name]]
    return out


def _scaled_steps(steps: int, fraction: float) -> int:
    return max(1, int(round(steps * fraction)))


def cells(dataset: str, profile: str, *, seeds: int,
          which: Sequence[str]) -> Iterator[tuple[dict[str, Any], Any]]:
    """Every (variant, seed) of the requested ablations, variant by variant: (row, cfg).

    `row` holds the cell's labels (dataset, ablation, variant, method, seed, profile, overrides
    as JSON); `cfg` is the config its run is trained under.
    """
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ConfigError(f"seeds = {seeds!r}: give how many seeds, a whole number >= 1 (seeds "
                          "0..seeds-1 are run)")
    for ablation, label, overrides, method in variants(which, profile, dataset):
        for seed in range(seeds):
            cfg = load_config(profile, dataset=dataset, seed=seed, overrides=overrides or None)
            yield ({"dataset": dataset, "ablation": ablation, "variant": label, "method": method,
                    "seed": seed, "profile": profile, "overrides": json.dumps(overrides)}, cfg)


def train_and_score(cfg, method: str, *, results_root: str | Path = "results",
                    data_root: str | Path | None = None, device: str | None = None) -> dict:
    """Train one cell's encoder (and its DDPM) unless done, score it.

    Returns:
        {auc, val_auc, status, run_id, device}; val_auc is NaN where the dataset has no
        validation split; device is the machine the scoring ran on (its `env.json`).
    """
    from dia.evaluate import evaluate_amplifier
    from dia.results import read_run_env
    from dia.train_encoder import train_amplifier

    train_amplifier(cfg, method, results_root=results_root, data_root=data_root, device=device)
    run = evaluate_amplifier(cfg, method, results_root=results_root, data_root=data_root,
                             device=device)
    return {**_aucs_of(run.path), "status": "done", "run_id": run.run_id,
            "device": read_run_env(run.path).get("device", "")}


def _aucs_of(path: Path) -> dict[str, float]:
    """The test AUC and the validation AUC (NaN when not scored) of an evaluate run's folder; a
    damaged metrics.csv is a ValueError naming it and what to do (`read_metrics_file`)."""
    values = read_metrics_file(finished_file(path, "metrics.csv")).set_index("metric")["value"]
    return {"auc": float(values["auc"]), "val_auc": float(values.get("val_auc", float("nan")))}


def run_ablations(
    dataset: str,
    profile: str,
    *,
    seeds: int = 3,
    which: Sequence[str] = ("dissolver", "value_range", "exclusion", "ddpm_steps"),
    results_root: str | Path = "results",
    data_root: str | Path | None = None,
    device: str | None = None,
    train: bool = True,
) -> pd.DataFrame:
    """Train and score every (variant, seed); one row per run: ablation, variant, seed, auc.

    With `train=False` nothing is trained or written: runs already scored are read back (status
    "done"); a run whose folder is not on this machine but which `record_runs` entered in the
    ledger `results_root/tables/ablation_runs.csv` under the same run id (so the same config
    hash) is taken from there (status "recorded"); the others get status "not run" and no AUC,
    among them a scored run here whose encoder or DDPM was trained again since (`dia.lineage`).
    A grid measured over several machines can so be published as what it is, and a stale record
    (its config changed since) never enters. A run recorded on several kinds of machine is
    taken from this machine's kind (`device`) where it has a row, else from its latest row; a
    run folder here wins over the ledger, whatever machine made it. Each row's `device` names
    the machine its AUC comes from.
    """
    from dia.lineage import is_current, unfinished_upstream, upstream_change
    from dia.results import read_run_env, run_id_of
    from dia.stages import stage_run_dir

    if not isinstance(train, bool):  # the text "False" would count as true
        raise ConfigError(f"train = {train!r}: give True or False")
    recorded = {} if train else _recorded_aucs(read_ledger(results_root), device)
    rows = []
    for row, cfg in cells(dataset, profile, seeds=seeds, which=which):
        method = row["method"]
        if train:
            rows.append({**row, **train_and_score(cfg, method, results_root=results_root,
                                                  data_root=data_root, device=device)})
            continue
        path = stage_run_dir(cfg, "evaluate", method, results_root)  # read, never written
        run_id = run_id_of(path)
        unfinished = unfinished_upstream(path)  # None without DONE
        if is_current(path) and unfinished is None:  # of the checkpoints there now (lineage)
            rows.append({**row, **_aucs_of(path), "status": "done", "run_id": run_id,
                         "device": read_run_env(path).get("device", "")})
        elif run_id in recorded and not (path / "DONE").is_file():  # a DONE one is out of date
            rows.append({**row, **recorded[run_id], "status": "recorded", "run_id": run_id})
        else:
            if (path / "DONE").is_file():  # said, or the cell would vanish from the grid unseen
                why = upstream_change(path) or f"{unfinished} is not finished (no DONE)"
                log.warning("ablation run %s is left out (not run): %s", path, why)
            rows.append({**row, "auc": float("nan"), "val_auc": float("nan"),
                         "status": "not run", "run_id": "", "device": ""})
    return pd.DataFrame(rows)


LEDGER_COLUMNS = ["run_id", "dataset", "method", "seed", "overrides", "auc", "val_auc", "device",
                  "git_commit", "created"]
OPTIONAL_COLUMNS = {"val_auc"}  # ledgers written before val_auc existed lack it


def ledger_path(results_root: str | Path) -> Path:
    """Every ablation run scored under `results_root`: one row per run id and kind of machine,
    kept across calls."""
    return Path(results_root) / "tables" / "ablation_runs.csv"


def read_ledger(results_root: str | Path) -> pd.DataFrame:
    """The ledger's rows; one cut short, or with an AUC that is no number in [0, 1] (a row
    without its test AUC included), is a ValueError naming it and what to do: its rows are
    published without their run folders, and `record_runs` writes back what is read here."""
    path = ledger_path(results_root)
    if not path.is_file():
        return pd.DataFrame(columns=LEDGER_COLUMNS)
    remedy = ("restore it (git checkout -- results/tables/ablation_runs.csv for the published "
              "one) or mend the row by hand")
    ledger = read_whole_csv(path, remedy, keep_default_na=False, na_values=[""])
    missing = set(LEDGER_COLUMNS) - OPTIONAL_COLUMNS - set(ledger.columns)
    if missing:
        raise ValueError(f"{path} lacks the columns {sorted(missing)}: it is not an ablation "
                         "ledger; move it away and rerun")
    text = ["device", "git_commit", "created"]  # unknown for runs entered by hand: blank
    ledger[text] = ledger[text].astype(object).fillna("")
    ledger = ledger.reindex(columns=LEDGER_COLUMNS)  # a missing optional column is NaN
    for column in ("auc", "val_auc"):  # val_auc blank in runs scored before it existed
        bad = not_aucs(ledger[column], blank_ok=column == "val_auc")
        if bad.any():
            row = ledger[bad].iloc[0]
            given = (f"no {column}" if pd.isna(row[column])
                     else f"{column} {row[column]}, which is no AUC")
            raise ValueError(f"{path} gives run {row['run_id']} {given}: {remedy}")
        ledger[column] = pd.to_numeric(ledger[column])
    return ledger


def _recorded_aucs(ledger: pd.DataFrame, device: str | None) -> dict[str, dict[str, Any]]:
    """run id -> its ledger AUCs and device: the row of this machine's kind where the run has
    rows of several kinds, else its latest row."""
    from dia.report import machine_kind
    from dia.runtime import describe_device

    here = ""  # asked only when needed: it may initialise CUDA
    if ledger["run_id"].duplicated().any():
        try:
            here = machine_kind(describe_device(device or "auto"))
        except ConfigError:  # e.g. device "cuda" on a machine without one: take the latest
            pass
    ledger = ledger.assign(here=[bool(here) and machine_kind(d) == here
                                 for d in ledger["device"]])
    ledger = ledger.sort_values(["here", "created"])  # the row to take comes last
    return {row.run_id: {"auc": row.auc, "val_auc": row.val_auc, "device": row.device}
            for row in ledger.itertuples()}


def record_runs(frame: pd.DataFrame, results_root: str | Path) -> Path:
    """Add the frame's scored runs to the ledger. A run scored again replaces its row of the
    same kind of machine and a row without a machine; its rows of other kinds stay (a run whose
    machine is not recorded replaces only a row without one).

    Each row names the machine and commit the run was made with (its folder's `env.json`;
    commits joined by `+` when its code may come from more than one, `dia.results.run_commits`).
    """
    from dia.report import machine_kind
    from dia.results import atomic_write_text, read_run_env, run_commits, run_path

    done = frame[frame["status"] == "done"].drop_duplicates("run_id")
    rows = []
    for row in done.itertuples():
        env = read_run_env(run_path(results_root, row.run_id))
        rows.append({"run_id": row.run_id, "dataset": row.dataset, "method": row.method,
                     "seed": row.seed, "overrides": row.overrides, "auc": row.auc,
                     "val_auc": getattr(row, "val_auc", float("nan")),
                     "device": env.get("device", ""), "git_commit": "+".join(run_commits(env)),
                     "created": env.get("created", "")})
    old = read_ledger(results_root)
    now = {row["run_id"]: machine_kind(row["device"]) for row in rows}
    replaced = [run_id in now and machine_kind(device) in ("", now[run_id])
                for run_id, device in zip(old["run_id"], old["device"])]
    kept = old[~pd.Series(replaced, index=old.index, dtype=bool)]
    ledger = pd.concat([kept, pd.DataFrame(rows, columns=LEDGER_COLUMNS)], ignore_index=True)
    ledger = ledger.sort_values(["run_id", "created"], ignore_index=True)
    path = ledger_path(results_root)
    atomic_write_text(path, ledger.to_csv(index=False))
    return path


def provenance(frame: pd.DataFrame, results_root: str | Path) -> pd.DataFrame:
    """The ledger's row behind each AUC of the frame: where, when and with which commit it was
    made (matched by run id and the frame's `device`; a frame without one: every row of its run
    ids)."""
    ledger = read_ledger(results_root)
    if "device" not in frame:
        return ledger[ledger["run_id"].isin(frame["run_id"])].reset_index(drop=True)
    used = set(zip(frame["run_id"], frame["device"].fillna("")))
    keep = [(r, d) in used for r, d in zip(ledger["run_id"], ledger["device"])]
    return ledger[pd.Series(keep, index=ledger.index, dtype=bool)].reset_index(drop=True)


def not_run(frame: pd.DataFrame) -> pd.DataFrame:
    """The (variant, seed) cells without a result, with the overrides that would produce them."""
    return frame.loc[frame["status"] == "not run", ["ablation", "variant", "method", "seed", "overrides"]]


def summary(frame: pd.DataFrame, metric: str = "auc") -> pd.DataFrame:
    """Mean ± std over seeds per (ablation, variant), as text cells per dataset, in run order.

    `metric`: "auc" (the test split) or "val_auc" (the validation split, where settings
    should be compared; a cell whose runs have a test AUC and none of `metric` says so).
    """
    grouped = frame.groupby(["ablation", "variant", "dataset"], sort=False)
    stats = grouped[metric].agg(["mean", "std", "count"]).reset_index()
    ran = grouped["auc"].count().to_numpy()  # a test AUC: the cell was run and scored
    none = f"no {metric} (no validation split, or scored before it existed)"
    stats["cell"] = [mean_cell(m, s, n) if n or not r else none
                     for m, s, n, r in zip(stats["mean"], stats["std"], stats["count"], ran)]
    order = list(dict.fromkeys(zip(stats["ablation"], stats["variant"])))
    table = stats.pivot(index=["ablation", "variant"], columns="dataset", values="cell")
    return table.reindex(pd.MultiIndex.from_tuples(order, names=["ablation", "variant"]))


def mean_cell(mean: float, std: float, count: int) -> str:
    """"0.803 ± 0.039 (n=3)"; one seed has no spread: "0.829 (n=1)"."""
    if not count:
        return "not run"
    return f"{mean:.3f} (n=1)" if count == 1 else f"{mean:.3f} ± {std:.3f} (n={count})"


def readme_layout(frame: pd.DataFrame) -> pd.DataFrame:
    """The DIA README's layout: rows = shift × dissolver, columns = datasets."""
    parts = frame[frame["ablation"].isin(["dissolver", "shift"])].copy()
    if parts.empty:
        return pd.DataFrame()
    shift_of = lambda v: "cutperm" if v.startswith("cutperm") else "rotation"  # noqa: E731
    dissolver_of = {"diffusion": "diffusion", "rotation": "diffusion", "cutperm": "diffusion",
                    "gaussian_blur": "gaussian_blur", "median_blur": "median_blur",
                    "cutperm, gaussian_blur": "gaussian_blur", "cutperm, median_blur": "median_blur",
                    "none (CSI)": "none (CSI)"}
    parts["shift"] = parts["variant"].map(shift_of)
    parts["dissolver"] = parts["variant"].map(dissolver_of)
    parts = parts.drop_duplicates(["shift", "dissolver", "dataset", "seed"])
    stats = parts.groupby(["shift", "dissolver", "dataset"])["auc"].agg(["mean", "std", "count"])
    stats["cell"] = [mean_cell(m, s, n) for m, s, n in zip(stats["mean"], stats["std"], stats["count"])]
    return stats["cell"].unstack("dataset")


def plot_ddpm_steps(frame: pd.DataFrame, path: str | Path) -> Path | None:
    """AUC against DDPM training steps (seeds as dots, mean as a line, CSI's mean dashed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = frame[(frame["ablation"] == "ddpm_steps") & frame["auc"].notna()].copy()
    if data.empty:
        return None
    data["steps"] = data["variant"].astype(int)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.scatter(data["steps"], data["auc"], alpha=0.6, label="one seed")
    mean = data.groupby("steps")["auc"].mean()
    ax.plot(mean.index, mean.values, "o-", color="black", label="mean over seeds")
    csi = frame[(frame["method"] == "csi") & frame["auc"].notna()]["auc"]
    if len(csi):  # the same schedule without a dissolved view: what the DDPM has to beat
        ax.axhline(csi.mean(), ls="--", color="grey", label=f"CSI, mean of {len(csi)} seed(s)")
    ax.set_xscale("log")
    ax.set_xticks(mean.index, [str(s) for s in mean.index])
    ax.minorticks_off()
    ax.set_xlabel("DDPM optimiser steps")
    ax.set_ylabel("DIA AUC")
    ax.set_title(f"{data['dataset'].iloc[0]}, profile {data['profile'].iloc[0]}")
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    path = atomic_savefig(fig, path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def write_ablation_tables(frame: pd.DataFrame, results_root: str | Path) -> dict[str, Path]:
    from dia.results import atomic_write_text

    tables = Path(results_root) / "tables"
    name = f'{frame["dataset"].iloc[0]}_{frame["profile"].iloc[0]}'
    paths = {"csv": tables / f"ablations_{name}.csv", "md": tables / f"ablations_{name}.md",
             "ledger": record_runs(frame, results_root)}
    atomic_write_text(paths["csv"], frame.to_csv(index=False))
    text = "## Ablations, mean ± std over seeds\n\n" + summary(frame).reset_index().to_markdown(index=False) + "\n"
    if "val_auc" in frame and frame["val_auc"].notna().any():
        text += ("\n## The validation split (val_auc): compare settings on this\n\n"
                 + summary(frame, "val_auc").reset_index().to_markdown(index=False) + "\n")
    layout = readme_layout(frame)
    if not layout.empty:
        text += "\n## Shift × dissolver (DIA README layout)\n\n" + layout.reset_index().to_markdown(index=False) + "\n"
    atomic_write_text(paths["md"], text)
    figure = plot_ddpm_steps(frame, Path(results_root) / "figures" / f"ablation_ddpm_steps_{name}.png")
    if figure:
        paths["figure"] = figure
    return paths
