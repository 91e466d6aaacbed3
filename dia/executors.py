"""Three ways to run the plan of `dia.plan.build_plan`: `run_plan(jobs, req, executor=...)`.

- ``sequential``: `dia.notebook_jobs.execute`, one notebook after another in this process (the
  default).
- ``local-parallel``: each job is one call of `dia.notebook_jobs.run_job(job, req)` in its own
  process, started through submitit's `LocalExecutor`, at most `jobs_at_once` at a time. A job
  starts when every dependency finished OK (or was done already); dependents of a failed job are
  not run; the table job (``always``) starts after every other job has ended. When several GPUs are
  visible (`torch.cuda.device_count()`), each job gets one through ``CUDA_VISIBLE_DEVICES``,
  the least busy first (round robin when `jobs_at_once` equals the GPU count). Logs of each
  process: ``<results_root>/submitit/<pid>/``.
- ``slurm``: submits the plan and returns without waiting. One job array per (stage,
  dependency level) of the jobs still to do, with ``--dependency=afterok:<ids>`` on the arrays
  holding their upstream jobs (``afterany`` on everything for the table job) and
  ``--kill-on-invalid-dep=yes``; partition, GPUs per job, time and CPUs from `SlurmOptions`;
  logs under ``<results_root>/slurm/<jobid>/``. `slurm_arrays` returns the arrays and the
  parameters it would pass to submitit, without a cluster. A failure in one array task blocks
  the whole dependent array (afterok is per array), e.g. a failed DDPM of one dataset holds back
  the DIA amplifiers of every dataset; rerunning after a fix submits only what is not done.
  **The slurm path is tested only against submitit's mocked sbatch (tests/test_executors.py),
  never on a real cluster.**

In every mode finished jobs (`dia.plan.is_job_done`) are skipped, never resubmitted, and an
interrupted job resumes on the next call (the stages resume from their checkpoints). Locally a
job is judged once what it depends on has run (a DDPM trained anew can leave its encoder out of
date, `dia.lineage`); Slurm judges every job at submission. Each job
run through submitit writes a running marker read by `dia.status`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dia import notebook_jobs
from dia.driver_paths import REPO, caller_dir, set_caller_dir, shown
from dia.plan import Job, Outcome, PlanRequest, failed_path, is_job_done
from dia.status import marker_path

EXECUTORS = ("sequential", "local-parallel", "slurm")
LOCAL_TIMEOUT_MIN = 14 * 24 * 60  # submitit's LocalExecutor kills jobs after 2 min by default
CPU_ONLY_STAGES = ("table",)


@dataclass
class SlurmOptions:
    partition: str | None = None
    gpus_per_job: int = 1
    time_min: int = 24 * 60
    cpus_per_job: int = 8
    mem_gb: int | None = None
    account: str | None = None
    qos: str | None = None
    array_parallelism: int = 64
    setup: tuple[str, ...] = ()  # shell lines run before each job (module load ..., source ...)
    additional: dict[str, Any] = field(default_factory=dict)  # other sbatch flags, e.g. constraint


def run_plan(jobs: list[Job], req: PlanRequest, *, executor: str = "sequential",
             jobs_at_once: int = 1, slurm: SlurmOptions | None = None, log=print) -> Outcome:
    """Run (or, for slurm, submit) the plan; see the module docstring for the three executors."""
    if executor not in EXECUTORS:
        raise ValueError(f"unknown executor {executor!r}; choose one of {', '.join(EXECUTORS)}")
    if jobs_at_once < 1:
        raise ValueError(f"jobs_at_once must be at least 1, got {jobs_at_once}")
    if executor == "sequential":
        return notebook_jobs.execute(jobs, req, log)
    if executor == "local-parallel":
        return run_local_parallel(jobs, req, jobs_at_once=jobs_at_once, log=log)
    return submit_slurm(jobs, req, slurm or SlurmOptions(), log=log)


# ---------------------------------------------------------------------------------------------
# What runs inside each submitted process


def _job_entry(job: Job, req: PlanRequest, driver: dict[str, str],
               env: dict[str, str | None]) -> dict[str, Any]:
    """One job in a submitit process: `dia.notebook_jobs.run_job` with the driver's folders `driver`
    (`_driver_folders`) and the environment changes `env` (a None value unsets the variable).
    Returns {"ok": bool, "error": str}; notebook errors are returned, not raised (papermill's
    exceptions do not always pickle)."""
    from dia.interrupt import sigterm_as_interrupt
    from dia.status import running_marker

    if isinstance(driver, str):  # submitted (e.g. queued on Slurm) before the driver dict
        driver = {"notebook_dir": driver}
    notebook_jobs.NOTEBOOK_DIR = Path(driver["notebook_dir"])
    set_caller_dir(driver.get("caller_dir", REPO))  # for the paths in its error
    for name, value in env.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    if is_job_done(job, req):  # a requeued or duplicate submission
        return {"ok": True, "error": "", "skipped": True}
    # the interrupt first: once the marker is there, the driver may stop the job (`_stop_all`)
    with sigterm_as_interrupt(), running_marker(job, req):
        try:
            notebook_jobs.run_job(job, req)
        except Exception as err:  # noqa: BLE001 - reported to the driver
            return {"ok": False, "error": notebook_jobs.describe_failure(job, err, req)}
    return {"ok": True, "error": ""}


def visible_gpus() -> list[str]:
    """The CUDA_VISIBLE_DEVICES entries of this process's GPUs ([] without CUDA)."""
    try:
        import torch

        count = torch.cuda.device_count()
    except Exception:  # noqa: BLE001 - no torch / no driver: CPU
        return []
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env:
        ids = [d.strip() for d in env.split(",") if d.strip()]
    else:
        ids = [str(i) for i in range(count)]
    return ids[:count]


# ---------------------------------------------------------------------------------------------
# local-parallel


def _driver_folders() -> dict[str, str]:
    """The driver's notebook folder and the folder it was called from, for `_job_entry`."""
    return {"notebook_dir": str(notebook_jobs.NOTEBOOK_DIR), "caller_dir": str(caller_dir())}


def _default_local_executor(folder: Path):
    import submitit

    executor = submitit.LocalExecutor(folder=folder)
    executor.update_parameters(timeout_min=LOCAL_TIMEOUT_MIN, gpus_per_node=0)
    return executor


def run_local_parallel(jobs: list[Job], req: PlanRequest, *, jobs_at_once: int = 2, log=print,
                       poll_s: float = 0.2, gpus: list[str] | None = None,
                       executor_factory: Callable[[Path], Any] | None = None) -> Outcome:
    """Run independent jobs concurrently, each in its own process (submitit LocalExecutor).

    `gpus`: CUDA_VISIBLE_DEVICES entries to spread the jobs over (default: `visible_gpus()`).
    `executor_factory(folder)`: an object with submitit's `submit` (tests pass a fake one).
    """
    outcome = Outcome()
    total = len(jobs)
    number = {job.key: i for i, job in enumerate(jobs, 1)}
    in_plan = set(number)
    state: dict[str, str] = {}  # key -> ok | failed
    waiting: list[Job] = []
    to_run: set[str] = set()  # keys of the jobs not found done up front
    deferred: set[str] = set()  # ... of those judged once what they depend on has run

    def skip(job: Job) -> None:
        state[job.key] = "ok"
        outcome.skipped.append(job.key)
        log(f"[{number[job.key]}/{total}] {job.key}: done already, skipped")

    for job in jobs:  # a dependent of a job to run is judged once that one has run (it may
        # train a checkpoint anew, `dia.lineage`)
        if not to_run.isdisjoint(job.depends_on):
            deferred.add(job.key)
        elif is_job_done(job, req):
            skip(job)
            continue
        waiting.append(job)
        to_run.add(job.key)
    if not waiting:
        return outcome
    gpus = visible_gpus() if gpus is None else list(gpus)
    if len(gpus) < 2:  # none or one GPU: every job keeps this process's CUDA_VISIBLE_DEVICES
        gpus = []
    gpu_load = {gpu: 0 for gpu in gpus}
    parent_cuda = os.environ.get("CUDA_VISIBLE_DEVICES")
    driver = _driver_folders()
    factory = executor_factory or _default_local_executor
    executor = factory(Path(req.results_root) / "submitit" / "%j")
    running: dict[str, tuple[Job, Any, str | None, float]] = {}
    start_all = time.monotonic()

    def fail(job: Job, why: str) -> None:
        state[job.key] = "failed"
        outcome.failed[job.key] = why

    def ready(job: Job) -> bool:
        deps_ok = all(state.get(d) == "ok" for d in job.depends_on if d in in_plan)
        if job.always:  # the table: after everything else has ended, whatever the outcome
            return deps_ok and not any(not j.always for j in waiting) and not any(
                not j.always for j, *_ in running.values())
        return deps_ok

    try:
        while waiting or running:
            for job in list(waiting):  # dependents of failed jobs are not run
                blocked = [d for d in job.depends_on if state.get(d) == "failed"]
                if blocked:
                    waiting.remove(job)
                    fail(job, f"not run: {blocked[0]} failed")
                    log(f"[{number[job.key]}/{total}] {job.key}: not run ({blocked[0]} failed)")
            for job in list(waiting):
                if len(running) >= jobs_at_once:
                    break
                if not ready(job):
                    continue
                if job.key in deferred and is_job_done(job, req):  # done, after its dependencies
                    waiting.remove(job)
                    skip(job)
                    continue
                gpu = min(gpu_load, key=lambda g: (gpu_load[g], gpus.index(g))) if gpus else None
                if gpu is not None:
                    gpu_load[gpu] += 1
                # submitit sets CUDA_VISIBLE_DEVICES="" in the child: the GPU, or the parent's
                env = {"CUDA_VISIBLE_DEVICES": gpu if gpu is not None else parent_cuda,
                       # N jobs share the cores: oversubscribed OpenMP threads spin and can make
                       # a CPU job over 10x slower (measured here: a DDPM step 0.6 s -> 9.5 s)
                       "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")
                       or str(max(1, (os.cpu_count() or 1) // jobs_at_once))}
                handle = executor.submit(_job_entry, job, req, driver, env)
                waiting.remove(job)
                running[job.key] = (job, handle, gpu, time.monotonic())
                on = f", GPU {gpu}" if gpu is not None else ""
                log(f"[{number[job.key]}/{total}] {job.key}: running {job.notebook} "
                    f"(pid {handle.job_id}{on}, log {shown(handle.paths.stdout)}) ...")
            if not running:
                if waiting:  # only when a dependency can never finish (not expected)
                    for job in waiting:
                        fail(job, "not run: its dependencies never finished")
                    waiting.clear()
                break
            time.sleep(poll_s)
            for key, (job, handle, gpu, start) in list(running.items()):
                if not (handle.paths.result_pickle.exists() or handle.done()):
                    continue
                del running[key]
                if gpu is not None:
                    gpu_load[gpu] -= 1
                ok, why = _local_result(handle)
                took = time.monotonic() - start
                prefix = f"[{number[key]}/{total}] {key}"
                if ok:
                    state[key] = "ok"
                    outcome.done.append(key)
                    log(f"{prefix}: ok in {took:.0f}s (total {time.monotonic() - start_all:.0f}s)")
                else:
                    if notebook_jobs.keep_attempt(job, req):  # its process was killed (memory?)
                        why += f"; its notebook so far: {shown(failed_path(req.results_root, job))}"
                    fail(job, why)
                    log(f"{prefix}: FAILED after {took:.0f}s: {why}")
    except BaseException:
        _stop_all(running, req, log)  # Ctrl-C or SIGTERM: stop the children too
        raise
    return outcome


def _stop_all(running: dict[str, tuple[Job, Any, str | None, float]], req: PlanRequest, log,
              timeout_s: float = 60.0) -> None:
    """Stop the running jobs and wait (at most `timeout_s`) for them to end, each keeping its
    notebook so far in ``.failed/`` (`notebook_jobs.keep_attempt`, also where the controller
    killed the job before it could), before the caller releases the results root's lock.

    Each job's submitit controller gets a SIGTERM, which it passes on to the job process, where
    `_job_entry` makes it an interrupt; sent once the job has written its running marker (which
    names the controller, so an older job's marker does not count), as `_job_entry` does after
    it has set that up: before, submitit's own handler ignores it. Not submitit's `cancel`: its
    SIGINT is ignored by a driver started with `&` from a script (a shell without job control)
    and by every process it starts, so the jobs ran on; and where it is not ignored, the
    controller kills the job a second later, in the middle of its cleanup. A second interrupt
    while waiting signals every job at once and stops waiting, naming those still running."""
    if not running:
        return
    log(f"stopping {len(running)} running job(s) ...")
    stopped: set[str] = set()

    def still_running() -> dict[str, tuple[Job, Any, str | None, float]]:
        return {key: entry for key, entry in running.items() if not entry[1].done()}

    deadline = time.monotonic() + timeout_s
    try:
        while (left := still_running()) and time.monotonic() < deadline:
            for key, (job, handle, _, _) in left.items():
                if key not in stopped and _marker_names(marker_path(req.results_root, job),
                                                        handle):
                    _stop(handle)
                    stopped.add(key)
            time.sleep(0.2)
    except KeyboardInterrupt:  # asked again: no more waiting
        for key, (_, handle, _, _) in still_running().items():
            if key not in stopped:
                _stop(handle)
    left = still_running()
    for key, (job, _, _, _) in running.items():
        if key not in left:  # killed by its controller before it could keep its notebook
            notebook_jobs.keep_attempt(job, req)
    if left:
        log(f"still running, left to end on their own: {', '.join(left)} (see `--status`)")


def _marker_names(marker: Path, handle) -> bool:
    """Whether the running marker at `marker` was written by the job of `handle` (the marker
    records its submitit controller's pid, submitit's job id for a local job)."""
    try:
        return json.loads(marker.read_text()).get("controller") == str(handle.job_id)
    except (OSError, ValueError, AttributeError):  # not there (yet, or any more), being written
        return False


def _stop(handle) -> None:
    """SIGTERM to the job's submitit controller (`_stop_all`); submitit's cancel elsewhere."""
    process = getattr(handle, "_process", None)  # submitit 1.5's LocalJob (pinned)
    if process is None:
        handle.cancel(check=False)
        return
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGTERM)


def _local_result(handle, grace_s: float = 5.0) -> tuple[bool, str]:
    """(ok, why) of a finished submitit job running `_job_entry`."""
    deadline = time.monotonic() + grace_s  # the controller ended: the result is there or never
    while not handle.paths.result_pickle.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    if not handle.paths.result_pickle.exists():
        return False, ("its process ended without a result (killed?); see "
                       f"{shown(handle.paths.stderr)}")
    try:
        result = handle.result()
    except Exception as err:  # noqa: BLE001 - the wrapper itself failed (not a notebook error)
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        error = re.compile(r"^[\w.]+(Error|Exception|Interrupt|Exit)\b")
        what = next((line for line in reversed(lines) if error.match(line)), type(err).__name__)
        return False, f"{what} (see {shown(handle.paths.stderr)})"
    return bool(result.get("ok")), str(result.get("error", ""))


# ---------------------------------------------------------------------------------------------
# slurm


@dataclass
class SlurmArray:
    """One sbatch submission: a job array (or a single job) of the jobs of one stage and level."""

    name: str
    stage: str
    level: int
    keys: list[str]
    parameters: dict[str, Any]  # for SlurmExecutor.update_parameters, without the dependency
    after: list[int]  # indices (in the list returned by slurm_arrays) of upstream arrays
    after_kind: str = "afterok"

    def dependency(self, array_ids: list[str]) -> str | None:
        """The --dependency value once the upstream arrays have ids (array_ids[i] of array i)."""
        ids = [array_ids[i] for i in self.after]
        return f"{self.after_kind}:{':'.join(ids)}" if ids else None


def slurm_folder(req: PlanRequest) -> Path:
    return Path(req.results_root) / "slurm" / "%j"


def slurm_arrays(jobs: list[Job], req: PlanRequest, opts: SlurmOptions) -> list[SlurmArray]:
    """The submission, without submitting: jobs still to do, grouped by (stage, level)."""
    todo = [job for job in jobs if not is_job_done(job, req)]
    todo_keys = {job.key for job in todo}
    level: dict[str, int] = {}
    for job in todo:  # the plan lists dependencies first
        deps = [d for d in job.depends_on if d in todo_keys]
        level[job.key] = 1 + max((level[d] for d in deps), default=-1)
    groups: dict[tuple[str, int], list[Job]] = {}
    for job in sorted((j for j in todo if not j.always), key=lambda j: level[j.key]):
        groups.setdefault((job.stage, level[job.key]), []).append(job)
    arrays: list[SlurmArray] = []
    where: dict[str, int] = {}
    stage_levels: dict[str, int] = {}
    for stage, _ in groups:
        stage_levels[stage] = stage_levels.get(stage, 0) + 1
    for (stage, lvl), members in groups.items():
        upstream = sorted({where[d] for job in members for d in job.depends_on if d in where})
        name = f"dia-{stage}" + (f"-L{lvl}" if stage_levels[stage] > 1 else "")
        arrays.append(SlurmArray(name=name, stage=stage, level=lvl, keys=[j.key for j in members],
                                 parameters=_slurm_parameters(name, stage, len(members), opts),
                                 after=upstream))
        for job in members:
            where[job.key] = len(arrays) - 1
    for job in (j for j in todo if j.always):  # the table: after every other array, any outcome
        name = f"dia-{job.stage}"
        arrays.append(SlurmArray(name=name, stage=job.stage,
                                 level=1 + max(level.values(), default=0), keys=[job.key],
                                 parameters=_slurm_parameters(name, job.stage, 1, opts),
                                 after=list(range(len(groups))), after_kind="afterany"))
    return arrays


def _slurm_parameters(name: str, stage: str, count: int, opts: SlurmOptions) -> dict[str, Any]:
    params: dict[str, Any] = {
        "job_name": name,
        "time": int(opts.time_min),
        "cpus_per_task": int(opts.cpus_per_job),
        "ntasks_per_node": 1,
        "array_parallelism": max(1, min(count, opts.array_parallelism)),
        "additional_parameters": {"kill_on_invalid_dep": "yes", **opts.additional},
    }
    gpus = 0 if stage in CPU_ONLY_STAGES else int(opts.gpus_per_job)
    if gpus:
        params["gpus_per_node"] = gpus
    for key, value in (("partition", opts.partition), ("account", opts.account), ("qos", opts.qos)):
        if value:
            params[key] = value
    if opts.mem_gb:
        params["mem"] = f"{int(opts.mem_gb)}GB"
    if opts.setup:
        params["setup"] = list(opts.setup)
    return params


def _default_slurm_executor(folder: Path):
    import submitit

    return submitit.SlurmExecutor(folder=folder)


def submit_slurm(jobs: list[Job], req: PlanRequest, opts: SlurmOptions, *, log=print,
                 executor_factory: Callable[[Path], Any] | None = None) -> Outcome:
    """Submit every array of `slurm_arrays` with its afterok dependencies; do not wait."""
    factory = executor_factory or _default_slurm_executor
    outcome = Outcome()
    arrays = slurm_arrays(jobs, req, opts)
    todo = {key for array in arrays for key in array.keys}
    outcome.skipped = [job.key for job in jobs if job.key not in todo]
    if outcome.skipped:
        log(f"{len(outcome.skipped)} job(s) done already, not submitted")
    if not arrays:
        log("nothing to submit")
        return outcome
    by_key = {job.key: job for job in jobs}
    driver = _driver_folders()
    folder = slurm_folder(req)
    array_ids: list[str] = []
    for array in arrays:
        executor = factory(folder)
        params = dict(array.parameters)
        dependency = array.dependency(array_ids)
        if dependency:
            params["dependency"] = dependency
        executor.update_parameters(**params)
        with executor.batch():
            handles = [executor.submit(_job_entry, by_key[key], req, driver, {})
                       for key in array.keys]
        array_id = str(handles[0].job_id).split("_")[0]
        array_ids.append(array_id)
        for key, handle in zip(array.keys, handles):
            outcome.submitted[key] = str(handle.job_id)
        after = f", after {dependency}" if dependency else ""
        log(f"submitted {array.name}: job {array_id} ({len(array.keys)} task(s){after})")
        for key, handle in zip(array.keys, handles):
            log(f"    {handle.job_id}  {key}")
    logs = Path(req.results_root) / "slurm"
    log(f"{len(outcome.submitted)} job(s) in {len(arrays)} submission(s); "
        f"logs under {shown(logs)}/<jobid>/; follow with `squeue --me` or "
        "`run_all.sh --status` (same arguments)")
    return outcome
