"""Where the suite stands, read from the results folder alone: `run_all.sh --status`.

Each job of the plan is in one of four states, checked in this order:

1. ``done``: `dia.plan.is_job_done` (DONE markers of the same config and of the upstream
   checkpoints there now, the files the jobs after it read, rendered notebook, stamp).
2. ``running``: its marker ``<results_root>/notebooks/.running/<key>.json`` is fresh. The
   executors in `dia.executors` write it around every job (`running_marker`) and touch it every
   minute; on the host that wrote it, its process must also be alive.
   Or the notebook papermill is writing (``notebooks/.partial/``) changed in the last 10
   minutes (this covers the sequential driver, which writes no marker), unless nothing holds
   the results root's driver lock (a driver killed meanwhile).
3. ``failed``: a run folder of it is marked finished but lacks its metrics.csv or scores.csv,
   or holds one of them or its config.yaml damaged or another run's
   (`dia.plan.missing_result`; its detail says what to do), or the notebook of its last failed
   attempt (``notebooks/.failed/``, removed when the next attempt starts) holds papermill's
   error (``metadata.papermill.exception``), unless that error is the KeyboardInterrupt of a
   Ctrl-C or SIGTERM (then ``pending``: stopped, not failed). One that lacks only its
   config.yaml is ``pending`` (the next call writes it anew), unless its last attempt failed.
   One whose finished run folder is out of date or cannot be checked (`out_of_date`): a DIA
   encoder of a DDPM trained again and its evaluation, a damaged DONE or upstream checkpoint,
   is ``failed`` with what to do; the evaluation of an encoder trained again (or with its own
   DONE damaged) is ``pending``: the next call scores it again.
4. ``running``: one of its run folders has no DONE and a ``train_log.jsonl`` changed in the last
   10 minutes, unless nothing holds the run folder's lock (`Run.exclusive`: training was
   killed or stopped). Where locks cannot be asked (`dia.results.lock_held`), freshness alone.
5. ``done`` for the table job (always rebuilt, so never done by 1.) when its notebook ran to its
   end and has a stamp; ``pending`` for anything else (not started, or stopped without an error,
   e.g. killed; the next call resumes it).

Nothing here writes to the results folder except the running marker (`running_marker`), and
nothing imports torch or papermill.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from dia.plan import (
    Job, PlanRequest, failed_path, is_job_done, job_run_dirs, missing_result, partial_path,
    rendered_path, stamp_path,
)
from dia.lineage import Damage, record_change, recorded_upstream, upstream_change
from dia.results import DONE, LOCK, atomic_write_text, lock_held, retrain_advice, run_path

STATES = ("done", "running", "failed", "pending")
FRESH_S = 600.0  # a log or marker touched within this many seconds means "running"
HEARTBEAT_S = 60.0  # how often a running job touches its marker


def marker_path(results_root: str | Path, job: Job) -> Path:
    """Named as the job's rendering (so per profile, as its stamp): a smoke and a quick driver
    of one results folder (slurm lets both submit) never share or remove each other's marker."""
    return Path(results_root) / "notebooks" / ".running" / (Path(job.output_name).stem + ".json")


@contextlib.contextmanager
def running_marker(job: Job, req: PlanRequest, *,
                   heartbeat_s: float = HEARTBEAT_S) -> Iterator[Path]:
    """Mark `job` as running while the block runs: a JSON file (host, pid, start) touched every
    `heartbeat_s` by a daemon thread, removed at the end whatever happens."""
    path = marker_path(req.results_root, job)
    atomic_write_text(path, json.dumps({
        "key": job.key, "host": socket.gethostname(), "pid": os.getpid(), "started": time.time(),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        # submitit's local controller (its pid): which `dia.executors._stop_all` signals
        "controller": os.environ.get("SUBMITIT_LOCAL_JOB_ID"),
    }) + "\n")
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(heartbeat_s):
            with contextlib.suppress(OSError):
                os.utime(path)

    thread = threading.Thread(target=beat, name=f"dia-heartbeat-{job.key}", daemon=True)
    thread.start()
    try:
        yield path
    finally:
        stop.set()
        path.unlink(missing_ok=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _fresh(path: Path, now: float, fresh_s: float) -> bool:
    try:
        return now - path.stat().st_mtime < fresh_s
    except OSError:
        return False


def _marker_alive(path: Path, now: float, fresh_s: float) -> bool:
    if not _fresh(path, now, fresh_s):
        return False
    try:
        info = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return True  # being written: fresh is enough
    if info.get("host") == socket.gethostname() and isinstance(info.get("pid"), int):
        return _pid_alive(info["pid"])
    return True


def _papermill_meta(path: Path) -> dict | None:
    """The notebook-level papermill metadata of a rendered notebook (None: unreadable/missing)."""
    try:
        nb = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    meta = dict(nb.get("metadata", {}).get("papermill") or {})
    failed = [cell for cell in nb.get("cells", [])  # the cells papermill marked as failed
              if (cell.get("metadata", {}).get("papermill") or {}).get("exception") is True]
    meta["exception"] = bool(meta.get("exception") or failed)
    meta["ename"] = next((out.get("ename") for cell in failed[:1]
                          for out in cell.get("outputs", []) if out.get("output_type") == "error"),
                         None)
    return meta


def job_state(job: Job, req: PlanRequest, *, now: float | None = None,
              fresh_s: float = FRESH_S) -> tuple[str, str]:
    """(state, detail) of one job; state is one of `STATES`."""
    now = time.time() if now is None else now
    root = Path(req.results_root)
    if is_job_done(job, req):
        return "done", ""
    marker = marker_path(root, job)
    if marker.is_file() and _marker_alive(marker, now, fresh_s):
        return "running", f"marker {marker}"
    partial = partial_path(root, job)  # papermill writes here while the notebook runs
    if partial.is_file() and _fresh(partial, now, fresh_s) and lock_held(root / LOCK) is not False:
        return "running", f"{partial} being rendered"
    folders = job_run_dirs(job, req)
    unfinished = missing_result(job, req, folders)
    if unfinished and not unfinished.anew:  # a config.yaml to write anew: pending, said below
        return "failed", unfinished.detail
    stale = next(filter(None, (out_of_date(stage, run) for stage, run in folders)), None)
    if stale and stale[0] == "failed":
        return stale
    failed = failed_path(root, job)  # the last attempt's, removed when the next starts
    meta = (_papermill_meta(failed) or {}) if failed.is_file() else {}
    if meta.get("exception") and meta.get("ename") != "KeyboardInterrupt":
        return "failed", f"error in {failed}"
    if meta.get("exception"):  # Ctrl-C or SIGTERM (the kernel's cell ends in KeyboardInterrupt)
        return "pending", (f"stopped by a signal (Ctrl-C, kill, or a scheduler's time limit); "
                           f"the next call resumes it; so far: {failed}")
    for _, run in folders:
        log = run / "train_log.jsonl"
        if (not (run / DONE).is_file() and _fresh(log, now, fresh_s)
                and lock_held(run / LOCK) is not False):
            return "running", f"{log} changed {now - log.stat().st_mtime:.0f}s ago"
    # a rendered notebook and its stamp are written only when the notebook ran to its end
    if job.always and rendered_path(root, job).is_file() and stamp_path(root, job).is_file():
        return "done", ""
    if unfinished:  # a config.yaml missing: the next call writes it anew
        return "pending", unfinished.detail
    if stale:  # an evaluation of an encoder trained again: the next call scores the new one
        return stale
    if failed.is_file():  # its process killed (out of memory?) before papermill could say
        return "pending", f"its last attempt ended before its notebook did; so far: {failed}"
    return "pending", ""


def out_of_date(stage: str, run: Path) -> tuple[str, str] | None:
    """(state, detail) of a run folder marked finished but not current (`dia.lineage`), or None.

    An evaluation of an encoder trained again scores the new one (``pending``), as it does where
    its own DONE is damaged. Anything else stops the job until someone acts (``failed``): a DIA
    encoder of a DDPM trained again (`dia.train_encoder` refuses to reuse it or to train over
    it) and the evaluation of such an encoder (refused until the encoder is trained again), a
    damaged file upstream, or a damaged DONE of a DDPM or encoder.
    """
    if not (run / DONE).is_file():
        return None
    change = upstream_change(run)
    if change is None:
        return None
    record = recorded_upstream(run)
    if isinstance(change, Damage):
        if stage == "evaluate" and isinstance(record, Damage):  # its own DONE: scored again
            return "pending", f"{run} cannot be checked: {change}; the next call scores it again"
        return "failed", f"{run} cannot be checked: {change}"
    root = run.parents[4]  # upstream_change found a record: runs/<stage>/<dataset>/<method>/<run>
    if stage == "evaluate" and record_change(record, root) is not None:  # its encoder's file
        return "pending", f"{run} is DONE, but {change}: the next call scores it again"
    # a DIA encoder of a DDPM trained again, or the scores of one: train the encoder again
    encoder = run_path(root, record["run"]) if stage == "evaluate" else run
    return "failed", f"{run} is DONE, but {change}: {retrain_advice(encoder)}"


def plan_status(jobs: list[Job], req: PlanRequest) -> list[tuple[str, str, str]]:
    """[(job.key, state, detail)] in plan order; state is one of done, running, failed, pending
    (`job_state`)."""
    now = time.time()
    return [(job.key, *job_state(job, req, now=now)) for job in jobs]


def format_status(rows: list[tuple[str, str, str]], *, show_done: bool = True) -> str:
    """One line per job (state, key), the detail of a failed or pending job on the line below
    (where there is one), and a summary line with the counts."""
    width = max((len(s) for s in STATES), default=7)
    lines = []
    for key, state, detail in rows:
        if show_done or state != "done":
            lines.append(f"  {state:<{width}}  {key}")
            if state in ("failed", "pending") and detail:
                lines.append(f"  {'':<{width}}    {detail}")
    counts = Counter(state for _, state, _ in rows)
    summary = ", ".join(f"{counts.get(s, 0)} {s}" for s in STATES)
    lines.append(f"{len(rows)} jobs: {summary}")
    return "\n".join(lines)
