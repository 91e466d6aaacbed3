"""Rendering the plan's notebooks: one job (`run_job`: papermill into `.partial/`, then the
rendering in `results/notebooks/` and its stamp), a plan one job after another in this process
(`execute`, the sequential executor), and a failure's one line (`describe_failure`). The driver
(`dia.suite`) and the executors (`dia.executors`, which run `run_job` in job processes) both use
it; it imports neither."""

from __future__ import annotations

import functools
import json
import os
import time

from dia import interrupt, rendering
from dia.driver_paths import REPO, paths_as_shown, shown
from dia.plan import (
    Job, Outcome, PlanRequest, failed_path, is_job_done, missing_result, partial_path,
    rendered_path, stamp_path, stamp_record,
)
from dia.results import RunError, atomic_write_text

NOTEBOOK_DIR = REPO / "notebooks"
KERNEL = "python3"  # the kernelspec that renders every notebook


@functools.cache  # one kernelspec lookup per driver, not one per notebook
def kernel_config() -> "Config":  # noqa: F821 - traitlets, imported when called
    """The notebook kernel's traitlets config: CurveZMQ-encrypted sockets where supported.

    ipykernel 7 warns at every start that it runs over TCP without encryption (once per notebook
    in a run's log). The kernel manager can provision CurveZMQ keys when pyzmq has curve support
    and the kernelspec declares it (jupyter_client's ``transport_encryption="auto"``), which
    encrypts the kernel's sockets and silences the warning. Elsewhere: an empty config, plain TCP
    as before.
    """
    import zmq
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
    from jupyter_client.manager import KernelManager
    from traitlets.config import Config

    if not (zmq.has("curve") and KernelManager.class_traits().get("transport_encryption")):
        return Config()
    try:
        declared = KernelSpecManager().get_kernel_spec(KERNEL).metadata.get("supported_encryption")
    except NoSuchKernel:
        return Config()
    if "curve" not in str(declared or "").lower():
        return Config()
    return Config({"KernelManager": {"transport_encryption": "auto"}})


def run_job(job: Job, req: PlanRequest) -> None:
    """Render one notebook; raises papermill's PapermillExecutionError on a failing cell, a
    RunError where the notebook ran to its end but a finished run folder of the job still lacks
    a file, or holds one damaged (`dia.plan.missing_result`), and stops the notebook's kernel on
    an interrupt of the main thread (`dia.interrupt`)."""
    source = NOTEBOOK_DIR / f"{job.notebook}.ipynb"
    if not source.is_file():
        raise FileNotFoundError(f"notebook {source} does not exist")
    final, partial = rendered_path(req.results_root, job), partial_path(req.results_root, job)
    failed, stamp = failed_path(req.results_root, job), stamp_path(req.results_root, job)
    # A new attempt: the last one's failure is history, and until this one ends the job is not
    # done (the kept notebook may show runs this attempt is replacing).
    failed.unlink(missing_ok=True)
    stamp.unlink(missing_ok=True)
    partial.parent.mkdir(parents=True, exist_ok=True)
    try:
        interrupt.execute_notebook(
            str(source), str(partial), parameters=job.parameters,
            kernel_name=KERNEL, cwd=str(REPO), progress_bar=False, log_output=False,
            config=kernel_config(),
        )
    except BaseException:  # keep the last good rendering; the failed one goes beside it
        keep_attempt(job, req)
        raise
    unfinished = missing_result(job, req)
    if unfinished:  # a file its notebook never reads (DDAD's scores.csv): it would run each call
        keep_attempt(job, req)
        raise RunError(unfinished.detail)
    rendering.publishable(partial, output_path=final, repo=REPO)
    os.replace(partial, final)  # a rendered notebook in notebooks/ ran to its end
    stamp.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(stamp, json.dumps(stamp_record(job, req)))


def keep_attempt(job: Job, req: PlanRequest) -> bool:
    """Move the notebook of an attempt that did not end (``.partial/``) to ``.failed/``, where
    the driver's failure line and `--status` point: the notebook so far is kept (until the next
    attempt starts), not left to look like one being written. False where papermill left none."""
    partial = partial_path(req.results_root, job)
    if not partial.is_file():
        return False
    failed = failed_path(req.results_root, job)
    failed.parent.mkdir(parents=True, exist_ok=True)
    os.replace(partial, failed)
    return True


def roots_as_shown(text: str, req: PlanRequest) -> str:
    """`text` (a notebook's error, the status), which names paths as the notebooks see them
    (relative to the repository), with those under the results or data root as the driver's
    own lines name them (`shown`)."""
    data_root = req.data_root or os.environ.get("DIA_DATA_ROOT", "")  # made repository-relative
    return paths_as_shown(text, [req.results_root, data_root])


def describe_failure(job: Job, err: BaseException, req: PlanRequest) -> str:
    failed = failed_path(req.results_root, job)
    cell = getattr(err, "cell_index", None)
    ename, evalue = getattr(err, "ename", type(err).__name__), getattr(err, "evalue", str(err))
    at = f" cell {cell}" if cell is not None else ""
    last_line = roots_as_shown(str(evalue).strip().splitlines()[-1] if evalue else "", req)
    see = f" (see {shown(failed)})" if failed.is_file() else ""
    hint = ""
    if ename == "DeadKernelError":  # nbclient's: the kernel process ended mid-notebook
        hint = ("; the kernel was killed (out of memory?) or crashed: run the same command again "
                "to resume from the last checkpoint")
    return f"{job.notebook}.ipynb{at}: {ename}: {last_line}{see}{hint}"


def execute(jobs: list[Job], req: PlanRequest, log=print) -> Outcome:
    """Run the plan in order; dependents of a failed job are not run."""
    outcome = Outcome()
    failed_keys: set[str] = set()
    start_all = time.monotonic()
    for number, job in enumerate(jobs, 1):
        prefix = f"[{number}/{len(jobs)}] {job.key}"
        blocked = [d for d in job.depends_on if d in failed_keys]
        if blocked:
            failed_keys.add(job.key)
            outcome.failed[job.key] = f"not run: {blocked[0]} failed"
            log(f"{prefix}: not run ({blocked[0]} failed)")
            continue
        if is_job_done(job, req):
            outcome.skipped.append(job.key)
            log(f"{prefix}: done already, skipped")
            continue
        log(f"{prefix}: running {job.notebook} ...")
        start = time.monotonic()
        try:
            run_job(job, req)
        except KeyboardInterrupt:
            failed = failed_path(req.results_root, job)
            kept = f"; its notebook so far: {shown(failed)}" if failed.is_file() else ""
            log(f"{prefix}: interrupted after {time.monotonic() - start:.0f}s{kept}")
            raise
        except Exception as err:  # noqa: BLE001 - any notebook failure is reported, not raised
            failed_keys.add(job.key)
            outcome.failed[job.key] = describe_failure(job, err, req)
            took = time.monotonic() - start
            log(f"{prefix}: FAILED after {took:.0f}s: {outcome.failed[job.key]}")
            continue
        outcome.done.append(job.key)
        now = time.monotonic()
        log(f"{prefix}: ok in {now - start:.0f}s (total {now - start_all:.0f}s)")
    return outcome
