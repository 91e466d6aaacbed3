"""The driver behind `./run_all.sh`: plan, then render each notebook through papermill.

    python -m dia.suite [--profile smoke|quick|paper] [--datasets a,b] [--seeds N]
                        [--seed-list 3,4] [--methods dia,csi,ddad,ganomaly,patchcore]
                        [--results-root DIR] [--data-root DIR]

One line per job with its elapsed time; finished jobs are skipped; a failing job is reported
with its notebook and cell and does not stop the other datasets; the exit code is non-zero when
anything failed. One driver at a time per results folder (a lock file); a second one refuses.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
from pathlib import Path

from dia import interrupt
from dia.config import DATASETS, PROFILES, ConfigError, load_config
from dia.data.registry import DataError, DataOffline, check_given_data_root
from dia.driver_paths import REPO, paths_as_shown, repo_relative, set_caller_dir, shown
from dia.estimate import describe, estimate
from dia.executors import EXECUTORS, SlurmOptions, run_plan
from dia.notebook_jobs import roots_as_shown
from dia.plan import (
    METHODS, PlanRequest, build_plan, is_job_done, only_to_render, parse_seed_list, rendered_path,
)
from dia.results import LOCK, flock_now
from dia.status import format_status, plan_status


class LockedError(RuntimeError):
    """Another driver holds the results folder."""


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="run_all.sh", description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="quick", help=f"one of {', '.join(PROFILES)}")
    parser.add_argument("--datasets", default=None, help="comma list; default: every dataset found")
    parser.add_argument("--seeds", type=int, default=None, help="seeds 0..N-1 (default: 3 for paper, else 1)")
    parser.add_argument("--seed-list", default=None,
                        help="comma list, e.g. 3,4: these seeds' trainings and evaluations "
                             "instead of those of 0..N-1 (the DDPM, table and --ablations over "
                             "--seeds as usual)")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma list of dia, csi, ddad, ganomaly, patchcore")
    parser.add_argument("--results-root", default="",
                        help="default: results/ in the repository; a relative path is taken from "
                             "the current folder, as --data-root and $DIA_DATA_ROOT are")
    parser.add_argument("--data-root", default="", help="default: $DIA_DATA_ROOT, else data/")
    parser.add_argument("--ablations", action="store_true", help="also run the ablation notebook")
    parser.add_argument("--plan-only", action="store_true", help="print the plan and stop")
    parser.add_argument("--status", action="store_true",
                        help="print each job's state (done, running, failed, pending) and stop")
    parser.add_argument("--executor", choices=EXECUTORS, default=None,
                        help="sequential (default), local-parallel (--jobs at once, one process "
                             "each) or slurm (submit job arrays and return)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="jobs at once for local-parallel; more than 1 implies it")
    parser.add_argument("--slurm-partition", default=None, help="slurm: partition")
    parser.add_argument("--gpus-per-job", type=int, default=1, help="slurm: GPUs per job")
    parser.add_argument("--slurm-time", type=int, default=24 * 60, help="slurm: minutes per job")
    parser.add_argument("--cpus-per-job", type=int, default=8, help="slurm: CPUs per job")
    return parser.parse_args(argv)


def _validate(args: argparse.Namespace) -> tuple[list[str], tuple[str, ...]]:
    if args.profile not in PROFILES:
        raise ConfigError(f"unknown profile {args.profile!r}; choose one of {', '.join(PROFILES)}")
    datasets = list(dict.fromkeys(d.strip() for d in (args.datasets or "").split(",")
                                  if d.strip()))
    if args.datasets is not None and not datasets:  # `--datasets "$EMPTY"`: not every dataset
        raise ConfigError(f"--datasets {args.datasets!r} names no dataset: give a comma list of "
                          f"{', '.join(DATASETS)}, or leave the option out for every dataset "
                          "found")
    unknown = [d for d in datasets if d not in DATASETS]
    if unknown:
        raise ConfigError(f"unknown dataset(s) {', '.join(unknown)}; choose from {', '.join(DATASETS)}")
    methods = tuple(dict.fromkeys(m.strip() for m in args.methods.split(",") if m.strip()))
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise ConfigError(f"unknown method(s) {', '.join(bad) or '(none)'}; choose from {', '.join(METHODS)}")
    if args.seeds is not None and args.seeds < 1:
        raise ConfigError("--seeds must be at least 1")
    if args.seed_list is not None:  # parsed once, here: `_request` takes the tuple
        args.seed_list = parse_seed_list(args.seed_list, args.seeds)
    if args.jobs < 1:
        raise ConfigError("--jobs must be at least 1")
    if not args.status:  # --status starts no kernel: it reads the results only
        _check_omp_threads(os.environ.get("OMP_NUM_THREADS"))
    for dataset in datasets or DATASETS:  # a profile file's error, said once, before any plan
        load_config(args.profile, dataset=dataset)
    if args.executor == "sequential" and args.jobs > 1:
        raise ConfigError("--jobs > 1 needs --executor local-parallel")
    if args.executor == "slurm":
        for flag, value, least in (("--gpus-per-job", args.gpus_per_job, 0),
                                   ("--slurm-time", args.slurm_time, 1),
                                   ("--cpus-per-job", args.cpus_per_job, 1)):
            if value < least:
                raise ConfigError(f"{flag} {value}: must be at least {least}")
        if not (args.status or args.plan_only) and shutil.which("sbatch") is None:
            raise ConfigError("--executor slurm needs a Slurm cluster (no sbatch on PATH): run "
                              "it on a login node, or use --executor sequential or local-parallel")
    return datasets, methods


def _check_omp_threads(value: str | None) -> None:
    """OMP_NUM_THREADS as libgomp takes it (unset, or a comma list of counts): anything else,
    an empty value included, makes every notebook's kernel print libgomp's warning into its
    rendering and run on its default thread count."""
    if value is None:
        return
    counts = [part.strip() for part in value.split(",")]
    if not all(c.isdigit() and int(c) > 0 for c in counts):
        raise ConfigError(f"OMP_NUM_THREADS={value!r} is not a number of threads: unset it "
                          "(unset OMP_NUM_THREADS: torch's default), or set it, e.g. "
                          "OMP_NUM_THREADS=1 when other work shares the cores")


def _available(requested: list[str], data_root: str, results_root: str, *, fetch: bool,
               log) -> tuple[list[str], dict[str, tuple[str, str]], set[str]]:
    """Datasets to run, those that cannot run with the reason, and those DDAD applies to.

    Without `requested`, every dataset found under the data root is meant: one that is there
    but unusable (BROKEN) cannot run, as one asked for by name and MISSING cannot; datasets not
    there at all are named in one line. With `fetch`, the MedMNIST files meant and not on disk
    are downloaded first."""
    from dia.data.check import check_datasets, state
    from dia.data.registry import resolve_data_root

    root = resolve_data_root(data_root or None)
    if fetch:
        from dia.data.medmnist_files import fetch_medmnist

        for key in [k for k in ("pneumonia", "breast") if not requested or k in requested]:
            try:
                fetch_medmnist(key, root, timeout=10)
            except DataOffline:
                log("[fetch] offline: MedMNIST files were not downloaded; using what is on disk")
                break
            except DataError as err:  # this file only: a folder in its place, a bad MD5, ...
                log(f"[fetch] {key}: {err}")
    rows = {r["dataset"]: r for r in check_datasets(root, results_root)}
    keys = requested or [k for k, r in rows.items() if r["found"]]
    present = [k for k in keys if rows[k]["present"]]
    # the problems name files under the root: shown as the user gave it, not repository-relative
    unusable = {k: (state(rows[k]), paths_as_shown(str(rows[k]["problem"]), [root]))
                for k in keys if not rows[k]["present"]}
    ddad = {k for k in present if int(rows[k]["pool_anomalous"] or 0) > 0}
    absent = [k for k, r in rows.items() if not r["found"] and not requested]
    if absent:  # with no --datasets, what is not there: said once, not an error
        log(f"not found under the data root, so not run: {', '.join(absent)} "
            f"(see `{_check_command(data_root)}`)")
    return present, unusable, ddad


def _report_without_ddad(present: list[str], ddad: set[str], methods: tuple[str, ...],
                         log) -> None:
    """Datasets DDAD-ASR does not apply to, said once rather than left out silently."""
    without = [k for k in present if k not in ddad]
    if "ddad" in methods and without:
        log(f"DDAD-ASR not run on {', '.join(without)}: the training split holds no anomalous "
            "images to draw its unlabeled set from (`dia data check`: train anomalous/pool)")


def _report_unusable(unusable: dict[str, tuple[str, str]], data_root: str, log) -> None:
    for key, (what, why) in unusable.items():
        log(f"{what.lower()} dataset {key}: {why.split(';')[0]} "
            f"(see `{_check_command(data_root)}`)")


def _check_command(data_root: str) -> str:
    command = f"{shlex.quote(shown(REPO / '.venv' / 'bin' / 'dia'))} data check"
    return command + (f" --data-root {shlex.quote(shown(data_root))}" if data_root else "")


def _lock(results_root: Path):
    try:
        results_root.mkdir(parents=True, exist_ok=True)
        handle = open(results_root / LOCK, "w")
    except OSError as err:
        raise ConfigError(f"cannot write to the results root {shown(results_root)} "
                          f"({err.strerror}): "
                          "pass a writable folder with --results-root") from err
    if not flock_now(handle):
        handle.close()
        raise LockedError(
            f"another run_all.sh is using {shown(results_root)} (it holds "
            f"{shown(results_root / LOCK)}); "
            "wait for it to finish, or use --results-root for a separate folder"
        )
    return handle


def _request(args: argparse.Namespace, present: list[str], methods: tuple[str, ...],
             results_root: Path, ddad: set[str]) -> PlanRequest:
    return PlanRequest(
        profile=args.profile, datasets=present,
        seeds=args.seeds or (3 if args.profile == "paper" else 1), seed_list=args.seed_list,
        methods=methods,
        results_root=str(results_root), data_root=args.data_root, ablations=args.ablations,
        ddad_datasets=frozenset(ddad),
    )


def _expanded_results_root(path: str | Path) -> Path:
    try:
        return Path(path).expanduser()
    except RuntimeError as err:  # ~name of no user
        raise ConfigError(f"--results-root {path}: {err} (no such user?)") from None


def _unusable_results_root(root: Path) -> str:
    """Why `root` cannot be the results root ("" if it can): it, or the first of its parents
    that is there, is no folder (a file, a link to nothing) or cannot be looked at."""
    try:
        there = next((p for p in (root, *root.parents) if os.path.lexists(p)), None)
        if there is None or there.is_dir():
            return ""
    except OSError as err:  # a parent without permission to look inside
        return f"cannot be looked at ({err.strerror})"
    if there == root:
        return "is not a folder"
    return f"cannot be made: {shown(there)} is not a folder"


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    log = lambda msg: print(msg, flush=True)  # noqa: E731
    try:
        requested, methods = _validate(args)
        # `--data-root=~/x` reaches us with its ~ (the shell expands it only after a space):
        # both roots are expanded here
        data_root = check_given_data_root(args.data_root or None)
        given = args.results_root or REPO / "results"  # the default: results/ of the repository
        results_root = repo_relative(_expanded_results_root(given))
    except (ConfigError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.data_root:
        args.data_root = str(repo_relative(data_root))
    elif os.environ.get("DIA_DATA_ROOT"):  # the notebooks read it too, from the repository
        os.environ["DIA_DATA_ROOT"] = str(repo_relative(data_root))
    set_caller_dir(Path.cwd())
    os.chdir(REPO)  # paths are now relative to the repository, as the notebooks see them
    why = _unusable_results_root(results_root)  # refused before --status says "pending"
    if why:
        print(f"error: --results-root {shown(results_root)} {why}", file=sys.stderr)
        return 2
    try:
        return _drive(args, requested, methods, results_root, log)
    except ConfigError as err:  # found while planning (the jobs' own errors stay in them)
        print(f"error: {err}", file=sys.stderr)
        return 2


def _drive(args: argparse.Namespace, requested: list[str], methods: tuple[str, ...],
           results_root: Path, log) -> int:
    """--status, --plan-only, or the run under the results root's lock."""
    if args.status:  # read-only: no lock, no download
        present, unusable, ddad = _available(requested, args.data_root, str(results_root),
                                             fetch=False, log=log)
        req = _request(args, present, methods, results_root, ddad)
        print(roots_as_shown(format_status(plan_status(build_plan(req), req)), req))
        _report_unusable(unusable, args.data_root, log)
        _report_without_ddad(present, ddad, methods, log)
        return 0
    executor = args.executor or ("local-parallel" if args.jobs > 1 else "sequential")
    if args.plan_only:  # prints only: no lock (a running driver's folder can be planned)
        return _run(args, requested, methods, results_root, executor, log)
    try:
        lock = _lock(results_root)
    except LockedError as err:
        print(f"error: {err}", file=sys.stderr)
        return 3
    try:
        with interrupt.sigterm_as_interrupt():
            return _run(args, requested, methods, results_root, executor, log)
    except KeyboardInterrupt as err:
        terminated = isinstance(err, interrupt.Terminated)
        print(f"{'terminated (SIGTERM)' if terminated else 'interrupted'}: finished runs are kept "
              "and unfinished ones resume from their last checkpoint; run the same command "
              "again to go on", file=sys.stderr)
        return 143 if terminated else 130
    finally:
        lock.close()


def _run(args: argparse.Namespace, requested: list[str], methods: tuple[str, ...],
         results_root: Path, executor: str, log) -> int:
    """Plan, then run (or only print) the jobs; to run them, the caller holds the results root's
    lock."""
    present, unusable, ddad = _available(
        requested, args.data_root, str(results_root),
        fetch=not args.plan_only, log=log)
    req = _request(args, present, methods, results_root, ddad)
    seeds = (f"{req.seeds} seed(s)" if req.seed_list is None
             else f"seeds {','.join(map(str, req.seed_list))}")
    jobs = build_plan(req)
    todo = [j for j in jobs if not is_job_done(j, req)]
    priced = [j for j in todo if not only_to_render(j, req)]  # the others take seconds
    low, high, basis = estimate(priced, args.profile, gpu=shutil.which("nvidia-smi") is not None)
    render = f" ({len(todo) - len(priced)} only to render again)" if len(priced) < len(todo) else ""
    log(f"plan: profile {args.profile}, {seeds}, methods {','.join(methods)}, "
        f"datasets {','.join(present) or '(none)'}; {len(jobs)} jobs, {len(todo)} to run{render}, "
        f"rough estimate {describe(low, high)} ({basis})")
    _report_unusable(unusable, args.data_root, log)
    _report_without_ddad(present, ddad, methods, log)
    if args.plan_only:
        for job in jobs:
            log(f"  {job.key} -> {shown(rendered_path(results_root, job))}"
                + (f" (after {', '.join(job.depends_on)})" if job.depends_on else ""))
        return 0
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    slurm = SlurmOptions(partition=args.slurm_partition, gpus_per_job=args.gpus_per_job,
                         time_min=args.slurm_time, cpus_per_job=args.cpus_per_job)
    outcome = run_plan(jobs, req, executor=executor, jobs_at_once=args.jobs, slurm=slurm,
                       log=log)
    if executor == "slurm":
        log(f"submitted {len(outcome.submitted)} job(s), {len(outcome.skipped)} done already; "
            "not waiting (see `run_all.sh --status` with the same arguments)")
        return 0
    log(f"finished: {len(outcome.done)} ran, {len(outcome.skipped)} skipped, "
        f"{len(outcome.failed)} failed, {len(unusable)} dataset(s) missing or broken")
    for key, why in outcome.failed.items():
        log(f"  FAILED {key}: {why}")
    for key, (what, _) in unusable.items():
        log(f"  {what} {key}")
    return 1 if outcome.failed or unusable else 0


if __name__ == "__main__":
    raise SystemExit(main())
