"""The AUC table, rebuilt from `results/runs` and the published rows, beside the paper's numbers.

Every DONE run's `metrics.csv` is read; nothing is typed in except the paper's table
(`dia/reference_data/paper_auc.csv`, transcribed once from the DIA poster). The last written
`auc.csv` doubles as the record of published runs: a row whose run folder is not on this machine
(a fresh clone, a run made elsewhere) is kept as long as its run id is still its profile's (same
config hash), with `origin` "recorded"; a stale one (config changed since) is dropped. A
recorded row made on another kind of machine (CPU or which GPU model; rows without a device
count as any) than the runs here of its cell, its own seed included, stays in auc.csv with
`origin` "other-machine" and out of the means: a user's GPU run of a cell is not averaged with
the published CPU seeds. (Recorded rows alone, or run folders of two kinds in one results root,
are not told apart.) To retract a run, delete its folder and its row. Outputs:

    results/tables/auc.csv         tidy: dataset, method, seed, profile, image_size, auc, ..., source,
                                   run_id, device, origin (folder / recorded / other-machine)
    results/tables/auc.md, .tex    rows = methods, columns = datasets; ours (mean ± std, n, profile)
                                   beside the paper's value; rows we do not run say so
    results/tables/paper_table.csv the transcription, for readers
    results/figures/auc_vs_paper.png

This module does not import torch.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import pandas as pd

from dia.data.registry import SPECS
from dia.lineage import refuse_out_of_date, unfinished_upstream
from dia.metrics import METRIC_COLUMNS, read_metrics_file
from dia.results import (
    RunError, atomic_savefig, atomic_write_text, find_runs, finished_file, first_line,
    parse_run_id, read_run_config, read_run_env, read_whole_csv, remake_advice, rerun_advice,
    run_id_of,
)

log = logging.getLogger(__name__)
PAPER_CSV = Path(__file__).resolve().parent / "reference_data" / "paper_auc.csv"
PAPER_DATASETS = ("pneumonia", "breast", "sars_cov2", "kvasir", "oct", "aptos")
TABLE_DATASETS = PAPER_DATASETS + ("braintumor", "synthetic")
DATASET_TITLES = {
    "pneumonia": "PneumoniaMNIST", "breast": "BreastMNIST", "sars_cov2": "SARS-COV-2",
    "kvasir": "Kvasir", "oct": "Retinal OCT", "aptos": "APTOS 2019", "braintumor": "BrainTumor",
    "synthetic": "Synthetic",
}
NATIVE_SIZE = {"pneumonia": 28, "breast": 28, "synthetic": 28}
# Our method keys (as written in metrics.csv) -> the row they belong to.
METHOD_ROWS = {
    "dia": "DIA", "csi": "CSI", "ganomaly": "GANomaly", "patchcore": "PatchCore (MobileNetV2)",
    "ddad-rec": "DDAD-rec", "ddad-intra": "DDAD-intra", "ddad-inter": "DDAD-inter",
    "ddad-asr": "DDAD-ASR",
}
EXTRA_DATA = {
    "DIA": "no", "CSI": "no", "Meanshift": "no", "GANomaly": "no",
    "PatchCore (MobileNetV2)": "ImageNet weights",
    **{f"DDAD-{s}": "unlabeled train images" for s in ("rec", "intra", "inter", "ASR")},
}
PROFILE_ORDER = {"paper": 0, "quick": 1, "smoke": 2}
NO_DATA = "no data (see `dia data check`)"
# DDAD-ASR runs on datasets whose training split holds anomalous images (SPEC §8); a seeded split
# puts every anomalous image in the test set, so it has none whatever is on disk
NOT_FOR_DDAD = "n/a (seeded split: no anomalous training images)"
# Stages whose finished runs hold a metrics.csv (evaluate, dia.peers.STAGE, dia.baselines.ddad.STAGE)
SCORING_STAGES = ("evaluate", "peers", "ddad")


def load_paper_table() -> pd.DataFrame:
    return pd.read_csv(PAPER_CSV, keep_default_na=False)


def collect_metrics(results_root: str | Path) -> pd.DataFrame:
    """Rows of every finished run's metrics.csv, with the run's device (runs without DONE are ignored).

    Only the scoring stages write a metrics.csv; a finished run of one without it is a RunError
    saying what to do: left out silently, the table would look complete without it."""
    frames = []
    paths = sorted(path for stage in SCORING_STAGES for path in find_runs(results_root, stage))
    for path in paths:
        if not (path / "DONE").is_file():
            continue
        finished_file(path, "config.yaml")  # without it the run's profile is unknown: not skipped
        profile = profile_run_of(path)
        if profile is None:
            continue
        metrics = finished_file(path, "metrics.csv")  # raises, saying what to do, when missing
        refuse_out_of_date(  # scores of an encoder replaced since, or of its DDPM
            path, "scored run", "run the same ./run_all.sh command again (or "
            "dia.evaluate.evaluate_amplifier), which scores the new encoder")
        unfinished = unfinished_upstream(path)
        if unfinished is not None:  # its checkpoint cannot be checked before it is DONE again
            raise RunError(f"scored run {path} was made from {unfinished}, which is not finished "
                           "(no DONE): run the same ./run_all.sh command again, which finishes it "
                           "and checks what was made from it")
        frame = read_metrics_file(metrics)
        other = frame.loc[frame["profile"] != profile, "profile"]
        if not other.empty:  # the table's cell would name it
            raise RunError(f"{metrics} is of the profile {other.iloc[0]!r}, its run's "
                           f"config.yaml of {profile!r} (edited?): {rerun_advice(path)}")
        frames.append(frame.assign(device=read_run_env(path).get("device", "")))
    if not frames:
        return pd.DataFrame(columns=[*METRIC_COLUMNS, "device"])
    return pd.concat(frames, ignore_index=True)


def profile_run_of(path: Path) -> str | None:
    """The profile of a run folder that holds its profile's own config; None for an ablation
    variant or a stale run.

    Ablation variants (`dia.ablations`) and runs of a profile file edited since keep their
    folders, but only the profile's current config enters the main table. Its config.yaml must
    be there (`collect_metrics` requires it, naming the run).
    """
    from dia.config import PROFILES

    profile = read_run_config(path).get("config", {}).get("profile")
    if profile is None:  # left out silently, the table would look complete without the run
        raise RunError(f"{path / 'config.yaml'} names no profile (edited?): "
                       f"{remake_advice(path)}")
    if profile not in PROFILES:  # a profile renamed or removed since
        log.warning("finished run %s is of the profile %r, which is none of %s: left out of the "
                    "table", path, profile, ", ".join(PROFILES))
        return None
    return profile if _is_profile_run_id(run_id_of(path), profile) else None


def _is_profile_run_id(run_id: str, profile: str) -> bool:
    """True when `run_id` names the run folder the profile's config has today."""
    from dia.config import ConfigError, load_config
    from dia.stages import stage_run_dir

    try:
        stage, dataset, method, seed = parse_run_id(run_id)
        expected = load_config(profile, dataset=dataset, seed=seed)
        return run_id_of(stage_run_dir(expected, stage, method)) == run_id
    except (KeyError, ValueError, ConfigError):
        return False


def recorded_rows(results_root: str | Path, present: dict[str, str]) -> pd.DataFrame:
    """Our rows of the last written `tables/auc.csv` whose run is not DONE here (`present`: run
    id -> device of the DONE runs here) or was made on another kind of machine than the one
    here, and whose run id is still their profile's: published runs made elsewhere. A run being
    redone here (its folder without DONE) keeps its last finished row, marked `recorded`, until
    the new one is DONE: the row may come from another machine, and a rebuild of the committed
    table must not erase it."""
    path = Path(results_root) / "tables" / "auc.csv"
    if not path.is_file():
        return pd.DataFrame()
    remedy = ("restore it (git checkout -- results/tables/auc.csv for the published one) or move "
              "it away and rebuild the table")
    old = read_whole_csv(path, remedy)
    if not {"source", "run_id", "method", "profile"} <= set(old.columns):
        raise ValueError(f"{path} is not an AUC table written by dia.report (no source, run_id, "
                         "method or profile column): move it away and rebuild the table")
    old = old[old["source"] == "re-run"]
    if "device" not in old:
        old = old.assign(device="")
    rows = Counter((run, method, machine_kind(device))  # a DDAD run scores several methods
                   for run, method, device in zip(old["run_id"], old["method"], old["device"]))
    twice = sorted({f"{run} ({method})" for (run, method, _), n in rows.items() if n > 1})
    if twice:  # a method's run on one kind of machine has one row; two would be two seeds
        raise ValueError(f"{path} holds run(s) {', '.join(map(str, twice))} more than once (a "
                         "merge that kept both sides?): keep one row per run, or " + remedy)
    try:  # typed once, here: the rows kept below are returned as they are
        old = old.astype({"seed": "Int64", "image_size": "Int64", "auc": float})
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{path} has a damaged seed, image_size or auc column ({err}): "
                         f"{remedy}") from None
    outside = ~old["auc"].between(0, 1)  # no AUC (NaN: a row cut short, a value edited)
    if outside.any():
        bad = old[outside].iloc[0]
        raise ValueError(f"{path} gives run {bad['run_id']} an auc of {bad['auc']}: {remedy}")
    keep = [_is_profile_run_id(str(r), p)
            and (r not in present or other_kind(device, present[r]))
            for r, p, device in zip(old["run_id"], old["profile"], old["device"])]
    recorded = old[pd.Series(keep, index=old.index, dtype=bool)].copy()
    recorded["device"] = recorded["device"].fillna("")
    recorded["origin"] = "recorded"
    return recorded


CELL = ["dataset", "method", "profile", "image_size"]  # the runs one mean ± std is taken over
OTHER_MACHINE = "other-machine"  # an `origin`: kept in auc.csv, left out of the means


def machine_kind(device) -> str:
    """"cpu" for every CPU, else the GPU's name (`env.json`'s device), "" when not recorded (rows
    published before devices were): the GPU's and the CPU's draws of a seed differ by as much as
    seeds do (README, *Measured so far*); CPUs of other instruction sets round differently too,
    but less, and count as one kind here."""
    if pd.isna(device) or not str(device):
        return ""
    return "cpu" if str(device).startswith("cpu") else str(device)


def other_kind(device, other) -> bool:
    """Whether two devices are known to be of different kinds (an unknown one matches any)."""
    kinds = {machine_kind(device), machine_kind(other)}
    return "" not in kinds and len(kinds) == 2


def _mark_other_machines(recorded: pd.DataFrame, ours: pd.DataFrame) -> pd.DataFrame:
    """Recorded rows of a cell whose runs here all come from another kind of machine get the
    origin `OTHER_MACHINE`: after a user's GPU run of a cell, its mean is over the GPU runs alone,
    not over them and the published CPU seeds, whose rows stay in auc.csv."""
    if recorded.empty or ours.empty:
        return recorded

    def text(value) -> str:  # an image size may be 28, 28.0 (a column with NaN) or <NA>
        if pd.isna(value):
            return ""
        return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)

    def keys(frame: pd.DataFrame) -> list[tuple]:
        cells = frame[CELL].astype(object).itertuples(index=False)
        return [tuple(text(v) for v in cell) for cell in cells]

    here: dict[tuple, list[str]] = {}
    for key, device in zip(keys(ours), ours["device"]):
        here.setdefault(key, []).append(device)
    other = [key in here and all(other_kind(device, mine) for mine in here[key])
             for key, device in zip(keys(recorded), recorded["device"])]
    recorded = recorded.copy()
    recorded.loc[pd.Series(other, index=recorded.index, dtype=bool), "origin"] = OTHER_MACHINE
    return recorded


def counted(tidy: pd.DataFrame) -> pd.DataFrame:
    """Our rows that enter the table's means and the figure (not `OTHER_MACHINE` ones)."""
    return tidy[(tidy["source"] == "re-run") & (tidy["origin"] != OTHER_MACHINE)]


def tidy_auc(results_root: str | Path) -> pd.DataFrame:
    """Our AUCs (one row per run and method: run folders, then the recorded rows of
    `recorded_rows`, those of another kind of machine marked `OTHER_MACHINE`) and the paper's
    (one row per cell), tidy."""
    ours = collect_metrics(results_root)
    ours = ours[ours["metric"] == "auc"].copy()
    ours["method"] = ours["method"].map(lambda m: METHOD_ROWS.get(str(m).lower(), str(m)))
    ours = ours.rename(columns={"value": "auc"})
    ours["auc_std"] = float("nan")
    ours["source"], ours["origin"] = "re-run", "folder"
    present = dict(zip(ours["run_id"], ours["device"]))
    recorded = _mark_other_machines(recorded_rows(results_root, present), ours)
    paper = load_paper_table()
    paper = paper.assign(seed=pd.NA, profile="paper (published)", image_size=pd.NA, ci_low=pd.NA,
                         ci_high=pd.NA, run_id="", source="paper", device="", origin="")
    columns = ["dataset", "method", "seed", "profile", "image_size", "auc", "auc_std", "ci_low",
               "ci_high", "source", "run_id", "device", "origin"]
    frames = [f[columns] for f in (ours, recorded, paper) if len(f)]
    return pd.concat(frames, ignore_index=True).sort_values(["source", "dataset", "method", "seed"],
                                                            ignore_index=True)


def summarise(tidy: pd.DataFrame) -> pd.DataFrame:
    """Mean ± std over seeds per (dataset, method, profile, image size) of our `counted` runs."""
    ours = counted(tidy)
    if ours.empty:
        return pd.DataFrame(columns=[*CELL, "mean", "std", "n"])
    grouped = ours.groupby(CELL, dropna=False)["auc"]
    out = grouped.agg(["mean", "std", "count"]).reset_index().rename(columns={"count": "n"})
    out["std"] = out["std"].fillna(0.0)
    return out


def keep_best_profile(frame: pd.DataFrame) -> pd.DataFrame:
    """Per (dataset, method), only the rows of the most complete profile (paper > quick > smoke)."""
    rank = frame["profile"].map(lambda p: PROFILE_ORDER.get(p, 9))
    best = rank.groupby([frame["dataset"], frame["method"]]).transform("min")
    return frame[rank == best]


def _seeded_split(dataset: str) -> bool:
    return dataset in SPECS and SPECS[dataset].split == "seeded"


def _ours_cell(rows: pd.DataFrame, dataset: str) -> str:
    best = keep_best_profile(rows).iloc[0]
    size = int(best["image_size"]) if pd.notna(best["image_size"]) else None
    native = NATIVE_SIZE.get(dataset, 224)
    at = f", {size}px" if size and size != native else ""
    spread = f" ± {best['std']:.3f}" if best["n"] > 1 else ""  # one seed: no spread to show
    return f"{best['mean']:.3f}{spread} (n={int(best['n'])}, {best['profile']}{at})"


def build_table(tidy: pd.DataFrame) -> pd.DataFrame:
    """Rows = methods, columns = datasets, plus `source` and `extra data` columns."""
    summary = summarise(tidy)
    paper = tidy[tidy["source"] == "paper"]
    paper_methods = list(dict.fromkeys(load_paper_table()["method"]))  # the poster's order
    ours_methods = [m for m in dict.fromkeys(summary["method"]) if m not in paper_methods]
    datasets_with_runs = set(summary["dataset"])
    records = []
    for method in paper_methods + sorted(ours_methods):
        mine = summary[summary["method"] == method]
        theirs = paper[paper["method"] == method]
        row = {"method": method}
        for dataset in TABLE_DATASETS:
            cell_paper = theirs[theirs["dataset"] == dataset]
            paper_text = (f"{cell_paper['auc'].iloc[0]:.3f} ± {cell_paper['auc_std'].iloc[0]:.2f}"
                          if len(cell_paper) else "")
            cell_ours = mine[mine["dataset"] == dataset]
            if len(cell_ours):
                text = _ours_cell(cell_ours, dataset)
                row[dataset] = f"{text}; paper {paper_text}" if paper_text else text
            elif method in paper_methods and not len(mine) and paper_text:
                row[dataset] = paper_text
            elif method.startswith("DDAD") and _seeded_split(dataset):
                row[dataset] = NOT_FOR_DDAD
            elif dataset not in datasets_with_runs and (len(mine) or method in ("DIA", "CSI")):
                row[dataset] = NO_DATA + (f"; paper {paper_text}" if paper_text else "")
            else:
                row[dataset] = f"paper {paper_text}" if paper_text else "–"
        row["source"] = ("re-run + paper" if len(mine) and len(theirs) else
                         "re-run" if len(mine) else "paper, not re-run")
        row["extra data"] = EXTRA_DATA.get(method, "see paper")
        records.append(row)
    table = pd.DataFrame.from_records(records)
    return table.rename(columns=DATASET_TITLES)


def to_latex(table: pd.DataFrame) -> str:
    def esc(text: object) -> str:
        return (str(text).replace("\\", r"\textbackslash{}").replace("&", r"\&").replace("_", r"\_")
                .replace("±", r"$\pm$").replace("`", "").replace("#", r"\#").replace("%", r"\%"))

    lines = [r"\begin{tabular}{" + "l" * len(table.columns) + "}", r"\toprule",
             " & ".join(esc(c) for c in table.columns) + r" \\", r"\midrule"]
    lines += [" & ".join(esc(v) for v in row) + r" \\" for row in table.itertuples(index=False)]
    lines += [r"\bottomrule", r"\end{tabular}", ""]
    return "\n".join(lines)


def plot_ours_vs_paper(tidy: pd.DataFrame, path: Path) -> Path | None:
    """Per dataset: our AUC per seed (dots) and mean, beside the paper's mean ± std."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    import seaborn as sns

    ours = counted(tidy)
    if ours.empty:
        return None
    ours = keep_best_profile(ours)  # as the table: a smoke dot never sits beside a quick one
    methods = sorted(set(ours["method"]))
    low = min(0.3, float(ours["auc"].min()) - 0.05)
    datasets = [d for d in TABLE_DATASETS if d in set(ours["dataset"])]
    fig, axes = plt.subplots(1, len(datasets), figsize=(3.2 * len(datasets) + 1, 3.6),
                             squeeze=False, sharey=True)
    paper = tidy[tidy["source"] == "paper"]
    rng_state = np.random.get_state()  # seaborn jitters with numpy's global generator:
    np.random.seed(0)  # seeded, the same rows draw the same figure; the caller's state is kept
    try:
        for ax, dataset in zip(axes[0], datasets):
            data = ours[ours["dataset"] == dataset]
            for smoke, colour in ((False, "tab:blue"), (True, "tab:gray")):  # smoke: no result
                part = data[(data["profile"] == "smoke") == smoke]
                if part.empty:
                    continue
                sns.stripplot(data=part, x="method", y="auc", order=methods, ax=ax, color=colour,
                              size=6, jitter=0.1)
                sns.pointplot(data=part, x="method", y="auc", order=methods, ax=ax, color=colour,
                              linestyle="none", marker="_", markersize=18, errorbar=None)
            for i, method in enumerate(methods):
                cell = paper[(paper["dataset"] == dataset) & (paper["method"] == method)]
                if len(cell):
                    ax.errorbar(i + 0.25, cell["auc"].iloc[0], yerr=cell["auc_std"].iloc[0],
                                fmt="s", color="tab:red", capsize=3,
                                label="paper" if i == 0 else None)
            ax.set_title(DATASET_TITLES[dataset])
            ax.set_xlabel("")
            ax.set_ylim(low, 1.02)
            ax.axhline(0.5, color="grey", lw=0.5, ls=":")
            plt.setp(ax.get_xticklabels(), rotation=45, ha="right", rotation_mode="anchor")
    finally:
        np.random.set_state(rng_state)
    axes[0][0].set_ylabel("AUC")
    profiles = ", ".join(sorted(set(ours["profile"])))
    fig.suptitle(f"Ours (blue: one dot per seed, bar = mean; grey: smoke, a pipeline check, not "
                 f"a result) vs the paper (red: mean ± std)\n"
                 f"profile(s) {profiles}, per cell the most complete one, as in the table; "
                 "built by notebooks/90_auc_table")
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def write_tables(results_root: str | Path = "results") -> dict[str, Path]:
    """Rebuild every table and the comparison figure from `results_root/runs` and the recorded
    rows of the last `auc.csv`."""
    root = Path(results_root)
    tidy = tidy_auc(root)
    table = build_table(tidy)
    tables = root / "tables"
    paths = {"csv": tables / "auc.csv", "md": tables / "auc.md", "tex": tables / "auc.tex",
             "paper": tables / "paper_table.csv"}
    atomic_write_text(paths["csv"], tidy.to_csv(index=False))
    header = ("AUC, image level, label 1 = anomalous. Ours: mean ± std over seeds (n, profile, "
              "and the image size where the networks saw another than the dataset's own), or one "
              "seed's value alone; smoke cells are pipeline checks, not results; the paper's "
              "value beside it. Rebuilt by notebooks/90_auc_table from results/runs "
              "and the published runs recorded in auc.csv (its device and origin columns say "
              "where each was measured; rows of origin other-machine are left out of the "
              "means).\n\n")
    atomic_write_text(paths["md"], header + table.to_markdown(index=False) + "\n")
    atomic_write_text(paths["tex"], to_latex(table))
    atomic_write_text(paths["paper"], load_paper_table().to_csv(index=False))
    figure = plot_ours_vs_paper(tidy, root / "figures" / "auc_vs_paper.png")
    if figure:
        paths["figure"] = figure
    return paths


README_START = "<!-- auc-table:start (written by `dia table --readme README.md`; do not edit) -->"
README_END = "<!-- auc-table:end -->"


def readme_parts(readme: str | Path) -> tuple[str, str]:
    """The README's text before its table's start marker and from its end marker on; a README
    that cannot be read, or lacks the two markers once each in that order, is a ValueError."""
    readme = Path(readme)
    try:
        content = readme.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"{readme} cannot be read ({first_line(err)})") from None
    counts = (content.count(README_START), content.count(README_END))
    if counts != (1, 1) or content.index(README_START) > content.index(README_END):
        raise ValueError(f"{readme} must hold the markers {README_START!r} and {README_END!r} "
                         f"once each, in that order (it has {counts[0]} and {counts[1]})")
    head, rest = content.split(README_START, 1)
    return head, rest[rest.index(README_END):]


def splice_into_readme(readme: str | Path, table_md: str | Path) -> None:
    """Copy `auc.md` into the README between the two markers (never by hand); a README that is
    a link is written through it."""
    readme = Path(readme).resolve()
    head, tail = readme_parts(readme)
    text = Path(table_md).read_text()
    atomic_write_text(readme, f"{head}{README_START}\n{text.strip()}\n{tail}")
