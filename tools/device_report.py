"""Publish the ablation grid of a session: its runs, a summary, and a figure beside the CPU's.

    python tools/device_report.py call1/grid.csv call2/grid.csv --name gpu_h200_pneumonia_quick \
        --cpu results/tables/ablations_pneumonia_quick.csv

Reads the grid CSVs that `tools/device_grid.py` wrote in one or more calls of a session (a cell
read back in a later call is counted once, with the seconds of the call that trained it) and
writes, under `--results-root`:

    tables/<name>.csv    one row per (ablation, variant, seed): AUC, run id, device, and the
                         seconds the cell took in its lane (a wait for another lane's DDPM too)
    tables/<name>.md     per run (DIA as specified, CSI, each variant): the AUC of every seed,
                         mean ± std, and the mean paired difference from DIA as specified; the
                         same for the validation AUC when the grid has one (`val_auc`)
    figures/<name>.png   AUC per seed and run, this session's beside the CPU grid's (`--cpu`);
                         `<name>_val.png` the validation AUC, when there is one
    figures/<name>_gpu_util.png   with `--util` (the session's gpu_util.csv): how busy the GPU
                         was over each call, 5-second means of nvidia-smi's 0.5-second samples

The GPU runs are kept out of `results/runs`: a run of a config the CPU also ran has the same run
id there, so the two would overwrite each other (tools/device_session.sh).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from dia.ablations import mean_cell
from dia.metrics import not_aucs
from dia.results import first_line, read_whole_csv

SPECIFIED, CSI = "DIA as specified", "CSI"
PAIRED = "paired − DIA as specified"


RUN_COLUMNS = ("dataset", "ablation", "variant", "method", "seed", "run_id", "overrides", "auc")
UTIL_COLUMNS = ("timestamp", "utilization.gpu [%]")


def read_table(path: Path, columns: tuple[str, ...], *, runs: bool = True,
               **read_csv) -> pd.DataFrame:
    """A CSV with at least `columns`; else SystemExit naming the file and what it lacks. A table
    of runs is read whole (`read_whole_csv`: device_grid appends rows, and a lane killed while
    writing one leaves it cut, whose AUC pandas would read with fewer digits) and must hold AUCs
    in [0, 1] (val_auc may be blank)."""
    try:
        if runs:  # its errors name the file and what to do
            frame = read_whole_csv(path, "mend or delete the damaged part", **read_csv)
        else:  # nvidia-smi's log: its last line is cut whenever the call ended
            frame = pd.read_csv(path, **read_csv)
    except (OSError, ValueError) as err:  # pandas' EmptyDataError, ParserError; no UTF-8
        said = first_line(err) if runs else f"{path} cannot be read as a CSV ({first_line(err)})"
        raise SystemExit(f"error: {said}") from None
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise SystemExit(f"error: {path} lacks the column(s) {', '.join(missing)}: is it the "
                         "right file?")
    for column in ("auc", "val_auc") if runs else ():
        if column not in frame:
            continue
        bad = not_aucs(frame[column], blank_ok=True)
        if bad.any():
            raise SystemExit(f"error: {path} gives {column} {frame[column][bad].iloc[0]}, which "
                             "is no AUC: mend or delete that row")
        frame[column] = pd.to_numeric(frame[column])
    return frame


def read_grids(paths: list[Path]) -> pd.DataFrame:
    """The cells of all calls, each once: the row with most seconds (the call that trained it)."""
    frame = pd.concat([read_table(p, (*RUN_COLUMNS, "seconds")) for p in paths],
                      ignore_index=True)
    key = ["dataset", "ablation", "variant", "method", "seed"]
    ids = frame.groupby(key)["run_id"].nunique()
    if (ids > 1).any():  # e.g. the code changed the config between calls: not one cell any more
        raise SystemExit(f"error: cells with more than one run id: {list(ids[ids > 1].index)}")
    frame = frame.sort_values("seconds", ascending=False, kind="stable")
    return frame.drop_duplicates(key).sort_index()  # in the order the calls wrote them


def by_run(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per distinct run: the profile's own DIA and CSI by name, the rest by variant."""
    frame = frame.drop_duplicates("run_id").copy()
    own = frame["overrides"].fillna("{}") == "{}"
    frame["run"] = frame["ablation"] + ": " + frame["variant"].astype(str)
    frame.loc[own & (frame["method"] == "dia"), "run"] = SPECIFIED
    frame.loc[own & (frame["method"] == "csi"), "run"] = CSI
    return frame


def summarise(runs: pd.DataFrame, metric: str = "auc") -> pd.DataFrame:
    """Per run: `metric` of each seed, mean ± std, mean paired difference from DIA as specified."""
    wide = runs.pivot_table(index="run", columns="seed", values=metric, sort=False)
    wide = wide[sorted(wide.columns)]
    base = wide.loc[SPECIFIED] if SPECIFIED in wide.index else None
    columns = ["run", *[f"seed {s}" for s in wide.columns], "mean ± std"]
    rows = []
    for run, aucs in wide.iterrows():
        seen = aucs.dropna()
        row = {"run": run, **{f"seed {s}": f"{a:.3f}" for s, a in seen.items()},
               "mean ± std": mean_cell(seen.mean(), seen.std(), len(seen))}
        if base is not None and run != SPECIFIED:
            paired = (aucs - base).dropna()
            row[PAIRED] = f"{paired.mean():+.3f} (n={len(paired)})" if len(paired) else "–"
        rows.append(row)
    table = pd.DataFrame(rows).reindex(columns=columns + ([PAIRED] if base is not None else []))
    first = {SPECIFIED: "0", CSI: "1"}  # then the variants, by ablation and variant
    return table.fillna("–").sort_values(
        "run", key=lambda c: c.map(lambda r: first.get(r, "2" + r)))


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot(runs: pd.DataFrame, cpu: pd.DataFrame | None, labels: list[str], path: Path,
         title: str, metric: str = "auc") -> Path:
    """`metric` per seed (dots) and mean (bar) per run, rows `labels`; the CPU grid's hollow."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(labels) + 1.2))
    sets = [(runs, "C0", "o", 0.12, f"{runs['device'].iloc[0]}, seeds "
             f"{'/'.join(str(s) for s in sorted(runs['seed'].unique()))}")]
    if cpu is not None:
        sets.append((cpu, "C1", "o", -0.12, "2-core CPU (README Ablations), seeds "
                     f"{'/'.join(str(s) for s in sorted(cpu['seed'].unique()))}"))
    for data, colour, marker, offset, label in sets:
        data = data[data["run"].isin(labels)]
        y = [labels.index(r) + offset for r in data["run"]]
        face = colour if offset > 0 else "none"
        ax.scatter(data[metric], y, color=colour, facecolors=face, marker=marker, label=label)
        means = data.groupby("run")[metric].mean()
        ax.scatter(means.values, [labels.index(r) + offset for r in means.index], color=colour,
                   marker="|", s=250, linewidths=2)
    ax.set_yticks(range(len(labels)), labels)
    ax.invert_yaxis()
    name = {"auc": "AUC", "val_auc": "validation AUC"}.get(metric, metric)
    ax.set_xlabel(f"{name} (dots: one seed each; bar: mean)")
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(0, -0.16), frameon=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_utilisation(paths: list[Path], path: Path) -> Path:
    """nvidia-smi's utilisation.gpu over each call (one line per gpu_util.csv), 5 s means."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 3))
    for number, csv_path in enumerate(paths, 1):
        util = read_table(csv_path, UTIL_COLUMNS, runs=False, skipinitialspace=True)
        time = pd.to_datetime(util["timestamp"], format="%Y/%m/%d %H:%M:%S.%f")
        busy = util["utilization.gpu [%]"].str.rstrip(" %").astype(float)
        seconds = (time - time.iloc[0]).dt.total_seconds()
        smooth = busy.groupby(seconds // 5).mean()
        ax.plot(smooth.index * 5, smooth.values, label=f"call {number}")
    ax.set_xlabel("seconds since the call's first sample")
    ax.set_ylabel("GPU busy, % of time")
    ax.set_ylim(0, 105)
    ax.grid(alpha=0.3)
    ax.legend(frameon=False)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("grids", nargs="+", type=Path, help="grid CSVs of tools/device_grid.py")
    parser.add_argument("--name", required=True, help="file stem of the table and figure")
    parser.add_argument("--cpu", type=Path, default=None,
                        help="the CPU grid's per-run CSV (tables/ablations_<dataset>_<profile>.csv)")
    parser.add_argument("--util", type=Path, nargs="*", default=[],
                        help="the calls' gpu_util.csv (tools/device_session.sh), in call order")
    parser.add_argument("--results-root", type=Path, default=Path("results"))
    args = parser.parse_args(argv)
    missing = [str(p) for p in [*args.grids, *args.util, args.cpu]
               if p is not None and not p.is_file()]
    if missing:
        parser.error(f"no such file: {', '.join(missing)}")

    cells = read_grids(args.grids)
    if cells.empty:
        parser.error(f"no cells in {', '.join(str(p) for p in args.grids)}")
    runs = by_run(cells)
    cpu = by_run(read_table(args.cpu, RUN_COLUMNS)) if args.cpu else None
    tables = args.results_root / "tables"
    tables.mkdir(parents=True, exist_ok=True)
    cells.to_csv(tables / f"{args.name}.csv", index=False)
    first = cells.iloc[0]
    devices = ", ".join(cells["device"].dropna().astype(str).unique())
    header = (f"AUC of the runs of a session ({first['dataset']}, profile {first['profile']}, "
              f"{devices}), from `tools/device_report.py`; per run in "
              f"`tables/{args.name}.csv`. DIA as specified is also each ablation's own variant "
              f"(dissolver `diffusion`, the profile's DDPM steps, focus, budget and seed); any "
              f"other run that is a variant of several ablations is one row, named after the "
              f"first.\n\n")
    table = summarise(runs)
    text = header + table.to_markdown(index=False, disable_numparse=True) + "\n"
    figures = args.results_root / "figures"
    title = f"{first['dataset']}, profile {first['profile']}"
    figure = plot(runs, cpu, list(table["run"]), figures / f"{args.name}.png",
                  f"{title}, test split")
    if "val_auc" in runs and runs["val_auc"].notna().any():
        val = summarise(runs[runs["val_auc"].notna()], "val_auc")
        text += ("\nValidation AUC (the official validation split, which no run trains on; "
                 "a choice between variants is made here, not on the test AUC above):\n\n"
                 + val.to_markdown(index=False, disable_numparse=True) + "\n")
        plot(runs, None, list(val["run"]), figures / f"{args.name}_val.png",
             f"{title}, validation split", "val_auc")
    (tables / f"{args.name}.md").write_text(text)
    if args.util:
        figure = plot_utilisation(args.util, figure.with_name(f"{args.name}_gpu_util.png"))
    print(f"wrote {tables / args.name}.csv, .md and {figure.parent}/{args.name}*.png",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
