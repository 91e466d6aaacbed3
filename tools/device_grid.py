"""Run ablation cells seed by seed until a time budget is spent: a GPU lease in one call.

    python tools/device_grid.py --dataset pneumonia --profile quick --seeds 3 \
        --which ddpm_steps,dissolver --budget-s 400 --out "$OUT/grid.csv"

Cells run seed 0 first, then seed 1, and so on, so a budget that ends early still leaves a whole
seed of every variant. Within a seed the main table's cells (no overrides: DIA and CSI as the
profile has them) come first, then the others in `--which` order. Several calls can share one GPU
and one results root, each with its own seeds (`--seed-list 0`, `--seed-list 1`, ...): one DDPM
serves every seed, its training is locked (`Run.exclusive`), and a call whose next cell needs a
DDPM that another call is training runs a cell that does not first. A cell starts only while the
time left exceeds 1.3 × the longest cell so far (a cell that trains its own DDPM, or waits for
one, included), so the call ends inside its budget with whole runs; the first cell always
starts. Each finished cell is appended to `--out` at once (labels, auc, run_id, seconds,
device), so a call killed later keeps what it finished. The runs themselves land in
`--results-root` through the usual run-folder machinery (`dia.ablations.train_and_score`): a cell
already done is read back, not retrained.

With `--no-train` nothing is trained or written under `--results-root`: the cells whose run
folder there is scored are read back (`run_ablations(..., train=False)`), each with the device its
run's `env.json` names, and the others are named and left out (exit status 1 when none is left).
That publishes a grid whose runs were made some other way (by `train_and_score` calls on a CPU,
say) in the same CSV, for `tools/device_report.py`.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import sys
import time
from pathlib import Path

COLUMNS = ["dataset", "ablation", "variant", "method", "seed", "profile", "overrides", "auc",
           "val_auc", "status", "run_id", "seconds", "device"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="pneumonia")
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--seed-list", default=None,
                        help="comma-separated seeds to run (of range(--seeds)); default all")
    parser.add_argument("--which", default="ddpm_steps,dissolver",
                        help="comma-separated ablations (dia.ablations.ABLATIONS and the computed "
                             "ddpm_steps, ddpm_focus, ddpm_seed, ddpm_budget, ddpm_arch)")
    parser.add_argument("--budget-s", type=float, default=None,
                        help="seconds this call may use (required unless --no-train)")
    parser.add_argument("--no-train", action="store_true",
                        help="train nothing: read back the cells already scored, name the rest")
    parser.add_argument("--out", type=Path, required=True, help="CSV, one row per finished cell")
    parser.add_argument("--results-root", default="results")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if present)")
    args = parser.parse_args(argv)
    if args.budget_s is None and not args.no_train:
        parser.error("--budget-s is required unless --no-train")

    from dia.ablations import cells, train_and_score
    from dia.config import ConfigError
    from dia.plan import parse_seed_list
    from dia.runtime import describe_device, stage_device

    started = time.perf_counter()
    which = [w.strip() for w in args.which.split(",") if w.strip()]
    seeds = range(args.seeds)
    if args.seed_list:
        try:
            seeds = parse_seed_list(args.seed_list, args.seeds)
        except ConfigError as err:
            parser.error(str(err))
    if args.budget_s is not None and args.budget_s < 0:
        parser.error(f"--budget-s {args.budget_s}: must be at least 0")
    try:  # an unknown ablation, dataset or profile, or no seeds: said here, not as a traceback
        every = list(cells(args.dataset, args.profile, seeds=args.seeds, which=which))
    except (ConfigError, ValueError) as err:
        parser.error(str(err))
    if args.no_train:
        return _read_back(args, which, seeds)
    grid = sorted(
        (cell for cell in every if cell[0]["seed"] in seeds),
        key=lambda cell: (cell[0]["seed"], cell[0]["overrides"] != "{}"),  # stable sort
    )
    if args.device:  # in each cell's config, so that every run's env.json names it
        grid = [(row, stage_device(cfg, args.device)[0]) for row, cfg in grid]
    device = describe_device(args.device or "auto")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    new_file = not args.out.is_file()
    longest, finished = 0.0, 0
    with args.out.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        if new_file:
            writer.writeheader()
        pending = list(grid)
        while pending:
            left = args.budget_s - (time.perf_counter() - started)
            if finished and left < 1.3 * longest:
                print(f"[grid] {left:.0f} s left, the longest cell took {longest:.0f} s: "
                      f"stopping with {len(pending)} of {len(grid)} cells not run",
                      file=sys.stderr, flush=True)
                break
            (row, cfg), claim = _next_cell(pending, args.results_root)
            pending.remove((row, cfg))
            tic = time.perf_counter()
            with claim:  # the lock of the DDPM this cell trains, if any, taken before we start
                result = train_and_score(cfg, row["method"], results_root=args.results_root,
                                         data_root=args.data_root, device=args.device)
            seconds = time.perf_counter() - tic
            longest, finished = max(longest, seconds), finished + 1
            writer.writerow({**row, **result, "seconds": round(seconds, 1), "device": device})
            handle.flush()
            print(f"[grid] {row['ablation']}={row['variant']} {row['method']} seed {row['seed']}: "
                  f"AUC {result['auc']:.4f} (val {result['val_auc']:.4f}) in {seconds:.0f} s",
                  file=sys.stderr, flush=True)
    return 0


def _read_back(args, which: list[str], seeds) -> int:
    """--no-train: the cells of `seeds` whose run folder is scored, appended to --out.

    A cell only in the ledger of --results-root (its folder on another machine) is named and
    left out, like one not run: the grid lists runs whose files are there to be published.
    """
    from dia.ablations import run_ablations
    from dia.results import read_run_env, run_path

    frame = run_ablations(args.dataset, args.profile, seeds=args.seeds, which=which,
                          results_root=args.results_root, train=False)
    if not frame.empty:
        frame = frame[frame["seed"].isin(list(seeds))]
        for row in frame[frame["status"] != "done"].itertuples():
            print(f"[grid] left out ({row.status}): {row.ablation}={row.variant} {row.method} "
                  f"seed {row.seed}", file=sys.stderr, flush=True)
        frame = frame[frame["status"] == "done"].copy()
    if frame.empty:
        print(f"error: no scored run folder of these cells under {args.results_root}/runs; "
              "nothing written", file=sys.stderr)
        return 1
    frame["device"] = [read_run_env(run_path(args.results_root, run_id)).get("device", "")
                       for run_id in frame["run_id"]]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    # reindex leaves `seconds` empty: this call spent none on these cells
    frame.reindex(columns=COLUMNS).to_csv(args.out, mode="a", header=not args.out.is_file(),
                                          index=False)
    print(f"[grid] read back {len(frame)} scored cells into {args.out}", file=sys.stderr)
    return 0


def _next_cell(pending: list, results_root: str):
    """The first cell whose DDPM no other process is training, with that DDPM's lock held.

    Claiming the lock here, before the cell loads its data, keeps two calls side by side from
    both starting the same DDPM. When every pending cell waits on another process's DDPM, the
    first one is returned without a claim: `train_diffusion` then waits for that DDPM.
    """
    for row, cfg in pending:
        ddpm = _untrained_ddpm(row, cfg, results_root)
        if ddpm is None:
            return (row, cfg), contextlib.nullcontext()
        claim = contextlib.ExitStack()
        if claim.enter_context(ddpm.exclusive(wait=False)):
            return (row, cfg), claim
        claim.close()
    return pending[0], contextlib.nullcontext()


def _untrained_ddpm(row: dict, cfg, results_root: str):
    """The run of the DDPM the cell will train, or None (it needs none, or it is DONE)."""
    from dia.diffusion import open_diffusion_run

    if row["method"] != "dia" or cfg.dissolve.dissolver != "diffusion":  # as prepare_dissolver
        return None
    run = open_diffusion_run(cfg, results_root)
    return None if run.is_done() else run


if __name__ == "__main__":
    sys.exit(main())
