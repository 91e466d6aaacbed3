"""The suite as a list of jobs with dependencies, built from the same arguments as `run_all.sh`.

Each job renders one notebook through papermill. A job is finished when every run folder it
completes has its DONE marker (same config hash), was made from the upstream checkpoints there
now (`dia.lineage`), and its rendered notebook exists, is the one its stamp records (not one put
back by `git checkout results/`) and was stamped with the same config (and with the checkpoints
there now, for a job that `reads` a run, the gallery); finished
jobs are skipped, interrupted ones resume (the library resumes from checkpoints), and deleting
one DONE re-runs that stage, and what depends on it where its checkpoint comes out different.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from dia.config import (
    MAX_SEED, ConfigError, ExperimentConfig, config_hash, load_config, replace,
)
from dia.lineage import file_sha256, is_current, record_change, upstream_record
from dia.metrics import read_metrics_file, read_scores_file
from dia.results import DONE, RunError, finished_file
from dia.stages import require_stage_config, stage_run_dir, stage_run_hash

METHODS = ("dia", "csi", "ddad", "ganomaly", "patchcore")
NOTEBOOKS = {
    "diffusion": "10_train_diffusion",
    "gallery": "15_dissolving_gallery",
    "amplify": "20_train_amplifier",
    "evaluate": "30_evaluate",
    "ddad": "40_ddad",
    "peers": "45_peers",
    "ablations": "50_ablations",
    "table": "90_auc_table",
}
# What a finished run folder of each stage must hold for the jobs after it: its config (the table
# reads the profile there) and, of the scoring stages, metrics.csv (the table's AUCs, dia.report)
# and scores.csv (the evaluation's figures). A run folder marked finished without one (the file
# deleted, or the folder copied without it), or with one damaged or another run's, does not make
# its job done (`missing_result`): run again, the job writes a missing config.yaml anew
# (`dia.results.open_run`) and stops, naming the file and what to do, at any other.
_SCORED = ("config.yaml", "metrics.csv", "scores.csv")
FINISHED_FILES = {"diffusion": ("config.yaml",), "amplify": ("config.yaml",),
                  "evaluate": _SCORED, "peers": _SCORED, "ddad": _SCORED}


@dataclass(frozen=True)
class Job:
    """One notebook execution."""

    key: str  # unique, e.g. "amplify/pneumonia/dia/s0"
    notebook: str  # file stem under notebooks/
    output_name: str  # rendered notebook under <results_root>/notebooks/, named with the profile
    parameters: dict[str, Any]
    runs: tuple[tuple[str, str], ...] = ()  # (stage, method) run folders the job completes
    reads: tuple[tuple[str, str], ...] = ()  # (stage, method) runs whose checkpoints it shows
    depends_on: tuple[str, ...] = ()
    dataset: str | None = None
    method: str | None = None
    seed: int | None = None
    config_hash: str = ""
    always: bool = False  # the table is rebuilt on every call

    @property
    def stage(self) -> str:
        return self.key.split("/")[0]


@dataclass
class PlanRequest:
    """What `run_all.sh` was asked for."""

    profile: str = "quick"
    datasets: list[str] = field(default_factory=list)
    seeds: int = 1
    seed_list: tuple[int, ...] | None = None  # these seeds' jobs instead of 0..seeds-1
    methods: tuple[str, ...] = METHODS
    results_root: str = "results"
    data_root: str = ""
    ablations: bool = False
    ddad_datasets: frozenset[str] = frozenset()  # datasets whose training split has anomalies
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class Outcome:
    """What a run of the plan did: job keys done, skipped, failed (with why), and for Slurm the
    job id of each submitted job."""

    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)
    submitted: dict[str, str] = field(default_factory=dict)


def parse_seed_list(text: str, seeds: int | None = None) -> tuple[int, ...]:
    """`"3,4"` -> (3, 4), sorted and without repeats; with `seeds`, each must be below it.

    Anything else (a word, a negative seed, no seed) raises ConfigError naming the flag."""
    usage = f"--seed-list {text}: give seeds as a comma list of numbers from 0, e.g. 3,4"
    try:
        chosen = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise ConfigError(usage) from None
    if not chosen or chosen[0] < 0 or chosen[-1] > MAX_SEED:
        raise ConfigError(f"{usage} (at most {MAX_SEED})")
    if seeds is not None and chosen[-1] >= seeds:
        raise ConfigError(f"--seed-list {text}: with --seeds {seeds} the seeds are 0..{seeds - 1}")
    return tuple(chosen)


def _cfg(req: PlanRequest, dataset: str, seed: int) -> ExperimentConfig:
    return load_config(req.profile, dataset=dataset, seed=seed, overrides=req.overrides or None)


def _hash(*parts: str) -> str:
    return hashlib.sha256("/".join(parts).encode()).hexdigest()[:8]


def build_plan(req: PlanRequest) -> list[Job]:
    """Jobs in an order that respects their dependencies (datasets one after another)."""
    common = {"profile": req.profile, "results_root": req.results_root, "data_root": req.data_root}
    jobs: list[Job] = []
    for dataset in req.datasets:
        base = _cfg(req, dataset, 0)
        ddpm_seed_cfg = replace(base, {"seed": base.diffusion.seed})
        diffusion_key = f"diffusion/{dataset}/ddpm/s{base.diffusion.seed}"
        if "dia" in req.methods:
            jobs.append(Job(
                key=diffusion_key, notebook=NOTEBOOKS["diffusion"],
                output_name=f"10_train_diffusion-{dataset}-{req.profile}.ipynb",
                parameters={**common, "dataset": dataset, "seed": base.diffusion.seed},
                runs=(("diffusion", "ddpm"),), dataset=dataset, method="ddpm",
                seed=base.diffusion.seed,
                config_hash=config_hash(ddpm_seed_cfg, ("data", "diffusion")),
            ))
            jobs.append(Job(
                key=f"gallery/{dataset}", notebook=NOTEBOOKS["gallery"],
                output_name=f"15_dissolving_gallery-{dataset}-{req.profile}.ipynb",
                parameters={**common, "dataset": dataset, "seed": base.diffusion.seed},
                depends_on=(diffusion_key,), dataset=dataset, reads=(("diffusion", "ddpm"),),
                config_hash=config_hash(ddpm_seed_cfg, ("data", "diffusion", "dissolve")),
            ))
        for seed in range(req.seeds) if req.seed_list is None else req.seed_list:
            cfg = _cfg(req, dataset, seed)
            for method in ("dia", "csi"):
                if method not in req.methods:
                    continue
                train_key = f"amplify/{dataset}/{method}/s{seed}"
                stem = f"{dataset}-{method}-{req.profile}-s{seed}"
                jobs.append(Job(
                    key=train_key, notebook=NOTEBOOKS["amplify"],
                    output_name=f"20_train_amplifier-{stem}.ipynb",
                    parameters={**common, "dataset": dataset, "method": method, "seed": seed},
                    runs=(("amplify", method),),
                    depends_on=(diffusion_key,) if method == "dia" else (),
                    dataset=dataset, method=method, seed=seed,
                    config_hash=stage_run_hash(cfg, "amplify", method),
                ))
                jobs.append(Job(
                    key=f"evaluate/{dataset}/{method}/s{seed}", notebook=NOTEBOOKS["evaluate"],
                    output_name=f"30_evaluate-{stem}.ipynb",
                    parameters={**common, "dataset": dataset, "method": method, "seed": seed},
                    runs=(("evaluate", method),), depends_on=(train_key,),
                    dataset=dataset, method=method, seed=seed,
                    config_hash=stage_run_hash(cfg, "evaluate", method),
                ))
            for method in ("ganomaly", "patchcore"):
                if method not in req.methods:
                    continue
                jobs.append(Job(
                    key=f"peers/{dataset}/{method}/s{seed}", notebook=NOTEBOOKS["peers"],
                    output_name=f"45_peers-{dataset}-{method}-{req.profile}-s{seed}.ipynb",
                    parameters={**common, "dataset": dataset, "method": method, "seed": seed},
                    runs=(("peers", method),), dataset=dataset, method=method, seed=seed,
                    config_hash=stage_run_hash(cfg, "peers", method),
                ))
            if "ddad" in req.methods and dataset in req.ddad_datasets:
                method = f"ddad-{cfg.ddad.backbone}"
                jobs.append(Job(
                    key=f"ddad/{dataset}/{method}/s{seed}", notebook=NOTEBOOKS["ddad"],
                    output_name=f"40_ddad-{dataset}-{method}-{req.profile}-s{seed}.ipynb",
                    parameters={**common, "dataset": dataset, "seed": seed,
                                "backbone": cfg.ddad.backbone},
                    runs=(("ddad", method),), dataset=dataset, method=method, seed=seed,
                    config_hash=stage_run_hash(cfg, "ddad", method),
                ))
    if req.ablations:
        for dataset in req.datasets:
            jobs.append(Job(
                key=f"ablations/{dataset}", notebook=NOTEBOOKS["ablations"],
                output_name=f"50_ablations-{dataset}-{req.profile}.ipynb",
                parameters={**common, "dataset": dataset, "seeds": req.seeds},
                dataset=dataset, config_hash=_hash("ablations", dataset, req.profile, str(req.seeds)),
            ))
    jobs.append(Job(
        key="table", notebook=NOTEBOOKS["table"], output_name="90_auc_table.ipynb",
        parameters={"results_root": req.results_root}, always=True,  # from whatever finished
    ))
    return jobs


def job_config(job: Job, req: PlanRequest) -> ExperimentConfig | None:
    if job.dataset is None:
        return None
    return _cfg(req, job.dataset, job.seed if job.seed is not None else 0)


def stamp_path(results_root: str | Path, job: Job) -> Path:
    """The record that a job's rendering is of its config (one per rendering, so per profile)."""
    return Path(results_root) / "notebooks" / ".stamps" / (Path(job.output_name).stem + ".json")


def rendered_path(results_root: str | Path, job: Job) -> Path:
    """Where a job's notebook lands once it has run to its end."""
    return Path(results_root) / "notebooks" / job.output_name


def partial_path(results_root: str | Path, job: Job) -> Path:
    """Where papermill writes a job's notebook while it runs (git-ignored)."""
    return Path(results_root) / "notebooks" / ".partial" / job.output_name


def failed_path(results_root: str | Path, job: Job) -> Path:
    """Where the notebook of a job's last failed or interrupted attempt is kept (git-ignored)."""
    return Path(results_root) / "notebooks" / ".failed" / job.output_name


def _read_stamp(stamp: Path) -> dict[str, Any]:
    """A job's stamp; empty when there is none or it cannot be read (a stamp cut short by a kill
    means: not done, run it again)."""
    try:
        record = json.loads(stamp.read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def stamp_record(job: Job, req: PlanRequest) -> dict[str, Any]:
    """What a job's stamp holds once it has rendered: its config hash and parameters, the sha256
    of the rendered notebook, and the `dia.lineage.upstream_record` of each checkpoint of the runs
    it `reads` (a gallery's DDPM)."""
    root, cfg = Path(req.results_root), job_config(job, req)
    if job.reads and cfg is None:
        raise ValueError(f"job {job.key} reads {job.reads} but names no dataset to find them by")
    folders = [stage_run_dir(cfg, stage, method, root) for stage, method in job.reads]
    reads = [upstream_record(folder, checkpoint) for folder in folders
             for checkpoint in sorted((folder / "checkpoints").glob("*.pt"))]
    rendering = rendered_path(root, job)
    return {"config_hash": job.config_hash, "parameters": job.parameters, "reads": reads,
            "rendering": file_sha256(rendering) if rendering.is_file() else None}


def job_run_dirs(job: Job, req: PlanRequest) -> list[tuple[str, Path]]:
    """(stage, run folder) of each run the job completes ([] for a job of no dataset)."""
    cfg = job_config(job, req)
    if cfg is None:
        return []
    root = Path(req.results_root)
    return [(stage, stage_run_dir(cfg, stage, method, root)) for stage, method in job.runs]


def only_to_render(job: Job, req: PlanRequest) -> bool:
    """Every run folder of the job is marked finished: running it renders its notebook again
    (and writes anew what `missing_result` allows), training nothing."""
    folders = job_run_dirs(job, req)
    return bool(folders) and all((run / DONE).is_file() for _, run in folders)


class Unfinished(NamedTuple):
    """What keeps a run folder marked finished from counting as done (`missing_result`)."""

    detail: str  # the file, what is wrong with it and what to do
    anew: bool  # the next call mends it by itself (a config.yaml written anew), training nothing


def missing_result(job: Job, req: PlanRequest,
                   folders: list[tuple[str, Path]] | None = None) -> Unfinished | None:
    """The first file of `FINISHED_FILES` that a run folder of the job marked finished lacks,
    or holds damaged or another run's (a config.yaml of another config, a metrics.csv or
    scores.csv that its readers refuse); None where nothing is wrong. A missing config.yaml,
    which the next call writes anew, only where nothing else is: the others need a rerun that
    trains or scores, or someone to act. `folders`: `job_run_dirs`, if known."""
    readers = {"metrics.csv": read_metrics_file, "scores.csv": read_scores_file}
    no_config, cfg = None, None
    folders = job_run_dirs(job, req) if folders is None else folders
    for (stage, run), (_, method) in zip(folders, job.runs, strict=True):
        if not (run / DONE).is_file():
            continue
        for name in FINISHED_FILES[stage]:
            if name == "config.yaml" and not (run / name).is_file():
                if no_config is None:
                    no_config = Unfinished(
                        f"{run} is marked finished but has no config.yaml: run the same command "
                        "again, which writes it anew (nothing is trained again)", anew=True)
                continue
            try:
                path = finished_file(run, name)  # its RunError says what to do
                if name == "config.yaml":
                    cfg = cfg or job_config(job, req)
                    require_stage_config(cfg, stage, method, run)
                else:
                    try:
                        readers[name](path)
                    except ValueError as err:  # read_metrics_file's (not RunErrors)
                        raise RunError(str(err)) from None
            except RunError as err:
                return Unfinished(str(err), anew=False)
    return no_config


def is_job_done(job: Job, req: PlanRequest) -> bool:
    """Finished: run folders DONE (same hash), holding their `FINISHED_FILES` and made from the
    upstream checkpoints there now (`dia.lineage`), rendered notebook present and the one
    stamped, stamp of the same config and of the checkpoints there now."""
    if job.always:
        return False
    root = Path(req.results_root)
    rendering = rendered_path(root, job)
    if not rendering.is_file():
        return False
    stamp = _read_stamp(stamp_path(root, job))
    if stamp.get("config_hash") != job.config_hash:
        return False
    if isinstance(stamp.get("rendering"), str) and stamp["rendering"] != file_sha256(rendering):
        return False  # another rendering was put there since (`git checkout results/`, a copy)
    reads = stamp.get("reads")
    if isinstance(reads, list) and any(record_change(r, root) is not None for r in reads):
        return False  # a checkpoint the rendering shows was trained again since
    folders = job_run_dirs(job, req)
    if len(folders) < len(job.runs) or not all(is_current(run) for _, run in folders):
        return False
    return missing_result(job, req, folders) is None
