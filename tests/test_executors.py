"""Executors of the suite plan (local-parallel, slurm) and `dia.status`, on tiny fake notebooks.

The fake notebooks (written with nbformat into a tmp folder that replaces
`dia.notebook_jobs.NOTEBOOK_DIR`) take the suite's parameters, log their call, wait for each
other when a BARRIER file names them (to prove that they run at the same time), fail once when a
FAIL_<key> file exists (after writing a partial train log, as a job killed half way), and
otherwise write the DONE marker of the job's run folder (evaluate: also a metrics.csv), so the
plan logic runs end to end in a few seconds without training anything.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from pathlib import Path
from types import SimpleNamespace

import nbformat
import pytest

import dia.driver_paths as driver_paths
import dia.executors as ex
import dia.notebook_jobs as notebook_jobs
from dia.driver_paths import REPO
from dia.plan import (
    PlanRequest, build_plan, failed_path, is_job_done, partial_path, stamp_path,
)
from dia.status import format_status, job_state, marker_path, plan_status, running_marker

BODY = '''
import json, os, time
from pathlib import Path
from dia.config import load_config
from dia.stages import open_stage_run
root = Path(results_root)
key = f"{STAGE}/{dataset}/{method}/s{seed}"
start = time.time()
with open(root / "calls.log", "a") as fh:
    fh.write(key + "\\n")
barrier = root / "BARRIER"  # wait (up to 30 s) until every job named in it has started
if barrier.is_file() and key in barrier.read_text().split():
    (root / "started").mkdir(exist_ok=True)
    (root / "started" / key.replace("/", "_")).write_text("")
    others = [k.replace("/", "_") for k in barrier.read_text().split()]
    while time.time() - start < 30 and not all((root / "started" / k).exists() for k in others):
        time.sleep(0.05)
cfg = load_config(profile, dataset=dataset, seed=seed)
run = open_stage_run(cfg, STAGE, method, root).path
(root / "intervals").mkdir(exist_ok=True)
(root / "intervals" / f"{key.replace('/', '_')}-{os.getpid()}.json").write_text(
    json.dumps({"key": key, "start": start, "end": time.time(),
                "cuda": os.environ.get("CUDA_VISIBLE_DEVICES")}))
fail = root / ("FAIL_" + key.replace("/", "_"))
if fail.exists():
    fail.unlink()
    (run / "train_log.jsonl").write_text('{"step": 1}\\n')
    raise RuntimeError("killed half way: " + key)
if STAGE == "evaluate":
    auc = 0.6 + 0.1 * seed
    (run / "metrics.csv").write_text(
        "dataset,method,seed,profile,image_size,metric,value,ci_low,ci_high,run_id\\n"
        f"{dataset},{method},{seed},{profile},28,auc,{auc},{auc - 0.05},{auc + 0.05},"
        f"{STAGE}/{dataset}/{method}/{run.name}\\n")
    (run / "scores.csv").write_text("sample_id,label,anomaly_score\\na,0,0.2\\nb,1,0.7\\n")
(run / "DONE").write_text("{}")
'''


def _notebook(path: Path, stage: str) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    params = nbformat.v4.new_code_cell(
        'profile = "smoke"\ndataset = "synthetic"\nmethod = "csi"\nseed = 0\n'
        'results_root = "results"\ndata_root = ""')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("fake"), params,
                nbformat.v4.new_code_cell(f"STAGE = {stage!r}\n" + BODY)]
    nbformat.write(nb, path)


@pytest.fixture
def fake_notebooks(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "fake_notebooks"
    folder.mkdir()
    _notebook(folder / "20_train_amplifier.ipynb", "amplify")
    _notebook(folder / "30_evaluate.ipynb", "evaluate")
    monkeypatch.setattr(notebook_jobs, "NOTEBOOK_DIR", folder)
    return folder


def _req(root: Path, **kw) -> PlanRequest:
    base = dict(profile="smoke", datasets=["synthetic"], seeds=2, methods=("csi",),
                results_root=str(root))
    base.update(kw)
    return PlanRequest(**base)


def _calls(root: Path) -> list[str]:
    path = root / "calls.log"
    return path.read_text().split() if path.is_file() else []


def _intervals(root: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((root / "intervals").glob("*.json"))]


def _table(root: Path):
    from dia.report import build_table, tidy_auc

    return build_table(tidy_auc(root))


@pytest.mark.notebook
@pytest.mark.slow
def test_local_parallel_matches_sequential_overlaps_and_resumes(tmp_path, fake_notebooks,
                                                                monkeypatch):
    seq_root, par_root = tmp_path / "seq", tmp_path / "par"
    seq_req, par_req = _req(seq_root), _req(par_root)
    seq_jobs = [j for j in build_plan(seq_req) if not j.always]  # the real table notebook is slow
    par_jobs = [j for j in build_plan(par_req) if not j.always]
    keys = [j.key for j in seq_jobs]
    assert keys == ["amplify/synthetic/csi/s0", "evaluate/synthetic/csi/s0",
                    "amplify/synthetic/csi/s1", "evaluate/synthetic/csi/s1"]

    seq = ex.run_plan(seq_jobs, seq_req, executor="sequential", log=lambda m: None)
    assert sorted(seq.done) == sorted(keys) and not seq.failed

    # Parallel, 2 at once, two (pretend) GPUs; evaluate s1 is killed half way the first time.
    monkeypatch.setattr(ex, "visible_gpus", lambda: ["0", "1"])
    par_root.mkdir()
    (par_root / "FAIL_evaluate_synthetic_csi_s1").write_text("")
    (par_root / "BARRIER").write_text("amplify/synthetic/csi/s0 amplify/synthetic/csi/s1")
    lines: list[str] = []
    first = ex.run_plan(par_jobs, par_req, executor="local-parallel", jobs_at_once=2,
                        log=lines.append)
    assert sorted(first.done) == [k for k in sorted(keys) if k != "evaluate/synthetic/csi/s1"], \
        lines
    assert "killed half way" in first.failed["evaluate/synthetic/csi/s1"]
    assert "30_evaluate.ipynb" in first.failed["evaluate/synthetic/csi/s1"]

    # The two amplifiers ran at the same time (each waited for the other), each on its own GPU.
    amps = [i for i in _intervals(par_root) if i["key"].startswith("amplify/")]
    assert len(amps) == 2
    assert max(a["start"] for a in amps) < min(a["end"] for a in amps), amps
    assert sorted(a["cuda"] for a in amps) == ["0", "1"]
    (par_root / "BARRIER").unlink()

    # Status after the first call: done / failed (papermill's error cell).
    rows = plan_status(par_jobs, par_req)
    assert {k: state for k, state, _ in rows} == {
        k: "failed" if k == "evaluate/synthetic/csi/s1" else "done" for k in keys}
    assert "4 jobs: 3 done, 0 running, 1 failed, 0 pending" in format_status(rows)

    # Resubmission: only the killed job runs again; finished jobs are not resubmitted.
    second = ex.run_plan(par_jobs, par_req, executor="local-parallel", jobs_at_once=2,
                         log=lines.append)
    assert sorted(second.skipped) == [k for k in sorted(keys) if k != "evaluate/synthetic/csi/s1"]
    assert second.done == ["evaluate/synthetic/csi/s1"] and not second.failed
    calls = _calls(par_root)
    assert {k: calls.count(k) for k in keys} == {k: 2 if k.endswith("s1") and "evaluate" in k else 1
                                                 for k in keys}
    assert all(is_job_done(j, par_req) for j in par_jobs)
    assert {k for k, s, _ in plan_status(par_jobs, par_req) if s == "done"} == set(keys)
    assert not list((par_root / "notebooks" / ".running").glob("*.json"))  # markers removed

    # Same set of finished jobs, same AUC table as the sequential run.
    assert {j.key for j in seq_jobs if is_job_done(j, seq_req)} == set(keys)
    assert _table(seq_root).equals(_table(par_root))
    assert "0.650 ± 0.071 (n=2, smoke)" in _table(par_root).to_string()

    # A third call submits nothing.
    third = ex.run_plan(par_jobs, par_req, executor="local-parallel", jobs_at_once=2,
                        log=lines.append)
    assert sorted(third.skipped) == sorted(keys) and not third.done


# ---------------------------------------------------------------------------------------------
# Scheduling of local-parallel, with an in-process fake of submitit's executor (no processes)


class _FakeHandle:
    def __init__(self, folder: Path, number: int, result: dict, duration: float, log: list):
        self.job_id = str(number)
        self.paths = SimpleNamespace(stdout=folder / f"{number}.out",
                                     stderr=folder / f"{number}.err",
                                     result_pickle=folder / f"{number}.result")
        self._result, self._end, self._log = result, time.monotonic() + duration, log

    def done(self) -> bool:
        if time.monotonic() >= self._end and not self.paths.result_pickle.exists():
            self._log.append(("end", self.job_id))
            self.paths.result_pickle.write_text("")
        return self.paths.result_pickle.exists()

    def result(self) -> dict:
        return self._result

    def cancel(self, check: bool = True) -> None:
        pass


class _FakeExecutor:
    """Records what `run_local_parallel` submits; each job 'runs' for 50 ms."""

    def __init__(self, tmp: Path, fail: set[str]):
        self.tmp, self.fail, self.submitted, self.events = tmp, fail, [], []

    def __call__(self, folder: Path):
        assert folder.name == "%j" and folder.parent.name == "submitit"
        return self

    def submit(self, fn, job, req, driver, env):
        assert fn is ex._job_entry and driver == {"notebook_dir": str(notebook_jobs.NOTEBOOK_DIR),
                                                  "caller_dir": str(driver_paths.caller_dir())}
        gpu = env["CUDA_VISIBLE_DEVICES"] if env["CUDA_VISIBLE_DEVICES"] in ("3", "5") else None
        self.submitted.append((job.key, gpu))
        self.events.append(("start", str(len(self.submitted))))
        running = sum(1 if e == "start" else -1 for e, _ in self.events)
        self.max_running = max(getattr(self, "max_running", 0), running)
        ok = job.key not in self.fail
        return _FakeHandle(self.tmp, len(self.submitted), {"ok": ok, "error": "" if ok else "boom"},
                           0.05, self.events)


def _mark_done(job, req):
    """Make `is_job_done(job, req)` true without running anything, with each file a finished
    run must hold (`dia.plan.FINISHED_FILES`) as its readers take it."""
    from dia.metrics import auc_rows, write_metrics, write_scores
    from dia.plan import FINISHED_FILES, job_config
    from dia.stages import open_stage_run

    root = Path(req.results_root)
    for stage, method in job.runs:
        run = open_stage_run(job_config(job, req), stage, method, root)  # its config.yaml
        if "scores.csv" in FINISHED_FILES[stage]:
            write_scores(run, ["a", "b"], [0, 1], [0.2, 0.7])
            write_metrics(run, auc_rows(run, method=method, profile=req.profile, image_size=28,
                                        labels=[0, 1], anomaly_score=[0.2, 0.7]))
        (run.path / "DONE").write_text("{}")
    (root / "notebooks").mkdir(parents=True, exist_ok=True)
    (root / "notebooks" / job.output_name).write_text("{}")
    stamp = stamp_path(root, job)
    stamp.parent.mkdir(parents=True, exist_ok=True)
    stamp.write_text(json.dumps({"config_hash": job.config_hash}))


def test_local_parallel_scheduling_with_a_fake_executor(tmp_path):
    req = _req(tmp_path / "results", methods=("dia", "csi"))
    jobs = build_plan(req)
    already = next(j for j in jobs if j.key == "amplify/synthetic/csi/s1")
    _mark_done(already, req)
    fake = _FakeExecutor(tmp_path, fail={"diffusion/synthetic/ddpm/s0"})
    ddpm = next(j for j in jobs if j.key == "diffusion/synthetic/ddpm/s0")
    _rendered(partial_path(req.results_root, ddpm), exception=False, end=False)  # killed in it
    out = ex.run_local_parallel(jobs, req, jobs_at_once=3, log=lambda m: None, poll_s=0.01,
                                gpus=["3", "5"], executor_factory=fake)
    submitted = [key for key, _ in fake.submitted]
    assert already.key not in submitted and out.skipped == [already.key]  # never resubmitted
    kept = failed_path(req.results_root, ddpm)  # the notebook so far, where the line points
    assert out.failed[ddpm.key] == f"boom; its notebook so far: {driver_paths.shown(kept)}"
    assert kept.is_file() and not partial_path(req.results_root, ddpm).exists()
    blocked = {"gallery/synthetic", "amplify/synthetic/dia/s0", "amplify/synthetic/dia/s1",
               "evaluate/synthetic/dia/s0", "evaluate/synthetic/dia/s1"}
    assert blocked.isdisjoint(submitted)  # dependents of the failed DDPM are not run
    assert all(out.failed[k].startswith("not run: ") for k in blocked)
    assert sorted(out.done) == sorted(["amplify/synthetic/csi/s0", "evaluate/synthetic/csi/s0",
                                       "evaluate/synthetic/csi/s1", "table"])
    assert fake.max_running == 3
    order = submitted.index
    assert order("evaluate/synthetic/csi/s0") > order("amplify/synthetic/csi/s0")
    assert submitted[-1] == "table"  # the table starts after every other job has ended
    starts = [i for i, (e, _) in enumerate(fake.events) if e == "start"]
    assert fake.events[starts[-1] - 1][0] == "end" and sum(e == "end" for e, _ in
                                                        fake.events[:starts[-1]]) == len(starts) - 1
    gpus = [gpu for _, gpu in fake.submitted]
    assert set(gpus) == {"3", "5"} and gpus[:2] == ["3", "5"]  # spread over the GPUs

    one_gpu = _FakeExecutor(tmp_path, fail=set())
    ex.run_local_parallel(jobs[:1], _req(tmp_path / "other"), jobs_at_once=2, log=lambda m: None,
                          poll_s=0.01, gpus=["0"], executor_factory=one_gpu)
    assert one_gpu.submitted == [(jobs[0].key, None)]  # one GPU: the environment is left alone


def test_a_done_dependent_is_decided_after_what_it_depends_on_has_run(tmp_path):
    """local-parallel asks whether a job is done once its dependencies have run: a DDPM trained
    again may leave its DIA encoder out of date (`dia.lineage`), as the sequential driver does."""
    req = _req(tmp_path / "results", methods=("dia",))
    jobs = build_plan(req)
    amplify = next(j for j in jobs if j.key == "amplify/synthetic/dia/s0")
    evaluate = next(j for j in jobs if j.key == "evaluate/synthetic/dia/s0")
    _mark_done(amplify, req)
    _mark_done(evaluate, req)

    class Retraining(_FakeExecutor):
        def submit(self, fn, job, req_, driver, env):
            if job.key.startswith("diffusion/"):  # its new checkpoint makes the encoder stale
                stamp_path(req.results_root, amplify).unlink()
            return super().submit(fn, job, req_, driver, env)

    fake = Retraining(tmp_path, fail=set())
    out = ex.run_local_parallel(jobs, req, jobs_at_once=2, log=lambda m: None, poll_s=0.01,
                                executor_factory=fake)
    submitted = [key for key, _ in fake.submitted]
    assert amplify.key in submitted and amplify.key not in out.skipped
    assert out.skipped == [evaluate.key]  # decided after the encoder's job: still done
    assert submitted.index(amplify.key) > submitted.index("diffusion/synthetic/ddpm/s0")


def test_run_plan_rejects_bad_arguments(tmp_path):
    req = _req(tmp_path)
    with pytest.raises(ValueError, match="unknown executor"):
        ex.run_plan([], req, executor="threads")
    with pytest.raises(ValueError, match="at least 1"):
        ex.run_plan([], req, executor="local-parallel", jobs_at_once=0)


# ---------------------------------------------------------------------------------------------
# slurm, without a cluster


def _big_req(root: Path) -> PlanRequest:
    return PlanRequest(profile="smoke", datasets=["synthetic", "pneumonia"], seeds=2,
                       results_root=str(root), ddad_datasets=frozenset({"pneumonia"}))


def test_slurm_arrays_group_by_stage_and_level(tmp_path):
    req = _big_req(tmp_path)
    jobs = build_plan(req)
    opts = ex.SlurmOptions(partition="gpu", gpus_per_job=1, time_min=600, cpus_per_job=6, mem_gb=32)
    arrays = ex.slurm_arrays(jobs, req, opts)
    names = [a.name for a in arrays]
    assert names == ["dia-diffusion", "dia-amplify-L0", "dia-peers", "dia-ddad", "dia-gallery",
                     "dia-amplify-L1", "dia-evaluate-L1", "dia-evaluate-L2", "dia-table"]
    by = {a.name: a for a in arrays}
    assert sorted(k for a in arrays for k in a.keys) == sorted(j.key for j in jobs)
    assert by["dia-amplify-L0"].keys == [f"amplify/{d}/csi/s{s}" for d in ("synthetic", "pneumonia")
                                         for s in (0, 1)]
    assert by["dia-amplify-L1"].keys == [f"amplify/{d}/dia/s{s}" for d in ("synthetic", "pneumonia")
                                         for s in (0, 1)]
    idx = {a.name: i for i, a in enumerate(arrays)}
    assert by["dia-diffusion"].after == [] and by["dia-ddad"].after == []
    assert by["dia-gallery"].after == [idx["dia-diffusion"]]
    assert by["dia-amplify-L1"].after == [idx["dia-diffusion"]]
    assert by["dia-evaluate-L1"].after == [idx["dia-amplify-L0"]]  # csi: after the csi array only
    assert by["dia-evaluate-L2"].after == [idx["dia-amplify-L1"]]
    ids = [str(100 + i) for i in range(len(arrays))]
    assert by["dia-evaluate-L2"].dependency(ids) == f"afterok:{100 + idx['dia-amplify-L1']}"
    assert by["dia-diffusion"].dependency(ids) is None
    assert by["dia-table"].dependency(ids) == "afterany:" + ":".join(ids[:-1])
    params = by["dia-amplify-L1"].parameters
    assert params["partition"] == "gpu" and params["gpus_per_node"] == 1 and params["time"] == 600
    assert params["cpus_per_task"] == 6 and params["mem"] == "32GB"
    assert params["array_parallelism"] == 4
    assert params["additional_parameters"]["kill_on_invalid_dep"] == "yes"
    assert "gpus_per_node" not in by["dia-table"].parameters  # the table needs no GPU

    # Finished jobs are not submitted; dependencies on them disappear.
    for job in jobs:
        if job.stage == "diffusion":
            _mark_done(job, req)
    arrays = ex.slurm_arrays(jobs, req, opts)
    assert "dia-diffusion" not in [a.name for a in arrays]
    amp_dia = next(a for a in arrays if "amplify/synthetic/dia/s0" in a.keys)
    assert amp_dia.after == [] and amp_dia.name == "dia-amplify"  # now one amplify array


def test_submit_slurm_writes_the_right_sbatch_files(tmp_path, fake_notebooks):
    from submitit.core.utils import DelayedSubmission
    from submitit.slurm.test_slurm import mocked_slurm

    req = PlanRequest(profile="smoke", datasets=["synthetic"], seeds=2, methods=("dia",),
                      results_root=str(tmp_path / "results"))
    jobs = build_plan(req)
    _mark_done(next(j for j in jobs if j.key == "gallery/synthetic"), req)
    opts = ex.SlurmOptions(partition="a100", gpus_per_job=2, time_min=90, cpus_per_job=4)
    lines: list[str] = []
    with mocked_slurm():  # submitit's own fake sbatch: job ids 12, 13, ...
        out = ex.run_plan(jobs, req, executor="slurm", slurm=opts, log=lines.append)
    # diffusion (12), amplify array (13), evaluate array (14), table (15)
    assert out.skipped == ["gallery/synthetic"]
    assert out.submitted == {
        "diffusion/synthetic/ddpm/s0": "12",
        "amplify/synthetic/dia/s0": "13_0", "amplify/synthetic/dia/s1": "13_1",
        "evaluate/synthetic/dia/s0": "14_0", "evaluate/synthetic/dia/s1": "14_1",
        "table": "15"}
    text = "\n".join(lines)
    assert "job 13" in text and str(tmp_path / "results" / "slurm") in text

    slurm_dir = tmp_path / "results" / "slurm"
    sbatch = {p.parent.name: p.read_text() for p in slurm_dir.glob("*/*_submission.sh")}
    assert set(sbatch) == {"12", "13", "14", "15"}
    assert "--dependency" not in sbatch["12"] and "--array" not in sbatch["12"]
    for jid in ("12", "13", "14"):
        assert "#SBATCH --partition=a100" in sbatch[jid]
        assert "#SBATCH --gpus-per-node=2" in sbatch[jid]
        assert "#SBATCH --time=90" in sbatch[jid] and "#SBATCH --cpus-per-task=4" in sbatch[jid]
    assert "#SBATCH --array=0-1%2" in sbatch["13"]
    assert "#SBATCH --dependency=afterok:12" in sbatch["13"]
    assert "#SBATCH --dependency=afterok:13" in sbatch["14"]
    assert "#SBATCH --kill-on-invalid-dep=yes" in sbatch["14"]
    assert "#SBATCH --dependency=afterany:12:13:14" in sbatch["15"]
    assert "gpus-per-node" not in sbatch["15"]
    assert f"#SBATCH --output={slurm_dir}/%A_%a/%A_%a_0_log.out" in sbatch["13"]

    # Each array task calls `_job_entry` on its own job.
    for key, jid in out.submitted.items():
        delayed = DelayedSubmission.load(slurm_dir / jid / f"{jid}_submitted.pkl")
        assert delayed.function is ex._job_entry and delayed.args[0].key == key
        assert delayed.args[2]["notebook_dir"] == str(fake_notebooks)
        assert delayed.args[3] == {}  # Slurm sets the GPUs


# ---------------------------------------------------------------------------------------------
# status


def _rendered(path: Path, *, exception: bool, end: bool = True,
              ename: str = "ZeroDivisionError") -> None:
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("1/0" if exception else "1")
    cell.metadata["papermill"] = {"exception": exception}
    if exception:  # as papermill keeps the cell's error
        cell.outputs = [nbformat.v4.new_output("error", ename=ename, evalue="", traceback=[])]
    nb.cells = [cell]
    nb.metadata["papermill"] = {"exception": exception or None, "start_time": "2024-01-01T00:00:00",
                                "end_time": "2024-01-01T00:01:00" if end else None}
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)


@contextlib.contextmanager
def _held(lock: Path):
    """Hold `lock`'s flock as a driver or `Run.exclusive` does (another open file description,
    so this process's own probe sees it held)."""
    import fcntl

    with open(lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def test_status_states(tmp_path):
    from dia.config import replace
    from dia.plan import job_config
    from dia.stages import open_stage_run, stage_run_dir

    req = _req(tmp_path, methods=("dia", "csi"))
    jobs = build_plan(req)
    job = {j.key: j for j in jobs}
    root = tmp_path / "notebooks"
    assert {s for _, s, _ in plan_status(jobs, req)} == {"pending"}

    _mark_done(job["diffusion/synthetic/ddpm/s0"], req)
    _rendered(failed_path(tmp_path, job["amplify/synthetic/csi/s0"]), exception=True)
    csi1 = job["amplify/synthetic/csi/s1"]
    _rendered(partial_path(tmp_path, csi1), exception=False, end=False)
    assert job_state(csi1, req)[0] == "running"  # papermill is writing it
    driver_lock = tmp_path / ".lock"
    with _held(driver_lock):  # ... for the driver that holds the results root
        assert job_state(csi1, req)[0] == "running"
    assert job_state(csi1, req)[0] == "pending"  # the driver was killed a moment ago
    driver_lock.unlink()
    old = time.time() - 3600
    os.utime(partial_path(tmp_path, csi1), (old, old))  # abandoned an hour ago: killed
    dia0 = job["amplify/synthetic/dia/s0"]
    run = stage_run_dir(replace(job_config(dia0, req), {"seed": 0}), "amplify", "dia", tmp_path)
    run.mkdir(parents=True)
    (run / "train_log.jsonl").write_text('{"step": 10}\n')  # training right now
    _rendered(root / "90_auc_table.ipynb", exception=False)
    stamp_path(tmp_path, job["table"]).write_text("{}")

    rows = {key: state for key, state, _ in plan_status(jobs, req)}
    assert rows["diffusion/synthetic/ddpm/s0"] == "done"
    assert rows["amplify/synthetic/csi/s0"] == "failed"
    assert rows["amplify/synthetic/csi/s1"] == "pending"
    assert rows["amplify/synthetic/dia/s0"] == "running"
    assert rows["evaluate/synthetic/dia/s0"] == "pending" and rows["gallery/synthetic"] == "pending"
    assert rows["table"] == "done"
    with _held(run / ".lock"):  # Run.exclusive of the process training it
        assert job_state(dia0, req)[0] == "running"
    assert job_state(dia0, req)[0] == "pending"  # a fresh log, but its trainer was killed
    (run / ".lock").unlink()
    os.utime(run / "train_log.jsonl", (old, old))  # the log stopped an hour ago: not running
    assert job_state(dia0, req)[0] == "pending"

    # The marker written around a job by the executors: running while held, gone afterwards.
    with running_marker(csi1, req) as marker:
        assert marker == marker_path(tmp_path, csi1) and marker.is_file()
        assert job_state(csi1, req)[0] == "running"
    assert not marker.exists() and job_state(csi1, req)[0] == "pending"
    # A marker left by a dead process on this host does not count.
    marker.write_text(json.dumps({"host": socket.gethostname(), "pid": 2**22 + 12345}))
    assert job_state(csi1, req)[0] == "pending"

    text = format_status(plan_status(jobs, req))
    pending = len(jobs) - 3
    summary = f"{len(jobs)} jobs: 2 done, 0 running, 1 failed, {pending} pending"
    assert text.splitlines()[-1] == summary
    assert "failed   amplify/synthetic/csi/s0" in text
    assert "error in " in text  # the failed job's detail: where its notebook is

    # A finished run folder that lost a file the jobs after it read does not make its job done
    # (the driver runs it again), and the status says what to do.
    ddpm = job["diffusion/synthetic/ddpm/s0"]
    ddpm_run = stage_run_dir(job_config(ddpm, req), "diffusion", "ddpm", tmp_path)
    assert is_job_done(ddpm, req)
    (ddpm_run / "config.yaml").unlink()  # the next call writes it anew, training nothing
    assert not is_job_done(ddpm, req)
    state, detail = job_state(ddpm, req)
    assert state == "pending" and "has no config.yaml" in detail and "anew" in detail, detail
    assert detail in format_status(plan_status(jobs, req))
    scored = job["evaluate/synthetic/csi/s0"]  # metrics.csv can only be made anew by scoring
    _mark_done(scored, req)
    assert is_job_done(scored, req)
    scored_run = stage_run_dir(job_config(scored, req), "evaluate", "csi", tmp_path)
    (scored_run / "metrics.csv").unlink()
    assert not is_job_done(scored, req)
    state, detail = job_state(scored, req)
    assert state == "failed" and "has no metrics.csv" in detail, detail
    assert f"delete {scored_run / 'DONE'}" in detail
    (scored_run / "config.yaml").unlink()  # and its config: the rerun must still score again
    state, detail = job_state(scored, req)
    assert state == "failed" and "has no metrics.csv" in detail, detail
    _mark_done(scored, req)
    scores = scored_run / "scores.csv"  # cut short (a bad copy) in its last number: 0.7 -> 0.
    scores.write_text(scores.read_text()[:-2])
    assert not is_job_done(scored, req)
    state, detail = job_state(scored, req)
    assert state == "failed" and f"{scores} ends in the middle of a row" in detail, detail
    _mark_done(scored, req)
    (scored_run / "metrics.csv").write_text("dataset,method\nsynthetic,csi\n")  # edited by hand
    state, detail = job_state(scored, req)
    assert state == "failed" and "metrics.csv lacks the column(s) seed" in detail, detail
    _mark_done(scored, req)
    assert is_job_done(scored, req)
    config = scored_run / "config.yaml"
    seed1 = open_stage_run(replace(job_config(scored, req), {"seed": 1}), "evaluate", "csi",
                           tmp_path).path / "config.yaml"
    for damaged, says in (("run: [\n", "cannot be read"),
                          (seed1.read_text(), "holds a run of another")):
        config.write_text(damaged)  # damaged, or another run's copied in: not written anew
        assert not is_job_done(scored, req)
        state, detail = job_state(scored, req)
        assert state == "failed" and detail.startswith(f"{config if 'read' in says else scored_run}"
                                                       f" {says}"), detail
    _rendered(failed_path(tmp_path, ddpm), exception=True)  # the last try of the DDPM failed
    state, detail = job_state(ddpm, req)
    assert state == "failed" and "error in " in detail, detail  # not the config's "pending"
    # stopped by Ctrl-C or SIGTERM (the cell's KeyboardInterrupt, as tried by hand): pending
    _rendered(failed_path(tmp_path, ddpm), exception=True, ename="KeyboardInterrupt")
    state, detail = job_state(ddpm, req)
    assert state == "pending" and "stopped by a signal" in detail
    assert "the next call resumes it" in detail
    dia1 = job["amplify/synthetic/dia/s1"]  # its process killed mid-cell (kept by keep_attempt)
    _rendered(failed_path(tmp_path, dia1), exception=False, end=False)
    state, detail = job_state(dia1, req)
    assert state == "pending" and "ended before its notebook did; so far: " in detail, detail


def test_local_result_of_a_killed_or_crashed_process(tmp_path):
    from submitit.core.utils import FailedJobError

    paths = SimpleNamespace(result_pickle=tmp_path / "none.pkl", stderr=tmp_path / "e.err")
    killed = SimpleNamespace(paths=paths)
    ok, why = ex._local_result(killed, grace_s=0)
    assert not ok and "without a result" in why and "e.err" in why

    (tmp_path / "r.pkl").write_text("")

    def crash():
        raise FailedJobError("Job failed with trace:\n---\nTraceback...\n  File x\n"
                             "ModuleNotFoundError: No module named 'dia'\n---\nlogs at ...")

    crashed = SimpleNamespace(paths=SimpleNamespace(result_pickle=tmp_path / "r.pkl",
                                                    stderr=tmp_path / "e.err"), result=crash)
    ok, why = ex._local_result(crashed)
    assert not ok and why.startswith("ModuleNotFoundError: No module named 'dia'")


def test_a_job_process_names_its_paths_from_the_folder_the_driver_was_called_from(
        tmp_path, monkeypatch):
    from dia.results import RunError

    def failing(job, req):  # a notebook's error names paths as the notebook sees them
        raise RunError(f"checkpoint {req.results_root}/runs/x.pt cannot be read")

    monkeypatch.setattr(notebook_jobs, "run_job", failing)
    monkeypatch.setattr(driver_paths, "_caller_dir", REPO)  # _job_entry sets it, as jobs do
    monkeypatch.chdir(REPO)
    root = os.path.relpath(tmp_path / "results", REPO)  # as the driver passes it: ../..
    req = PlanRequest(profile="smoke", datasets=["synthetic"], methods=("csi",), results_root=root)
    notebooks = str(notebook_jobs.NOTEBOOK_DIR)
    out = ex._job_entry(build_plan(req)[0], req, {"notebook_dir": notebooks,
                                                   "caller_dir": str(tmp_path)}, {})
    assert not out["ok"] and "checkpoint results/runs/x.pt cannot be read" in out["error"]
    old = ex._job_entry(build_plan(req)[0], req, notebooks, {})  # queued before
    assert not old["ok"] and "cannot be read" in old["error"]  # the driver dict: still runs


_CHILD = """
import sys, time
import dia.executors as ex, dia.notebook_jobs as notebook_jobs
from dia.plan import PlanRequest, build_plan

def run_job(job, req):
    from dia.plan import partial_path
    partial_path(req.results_root, job).parent.mkdir(parents=True, exist_ok=True)
    partial_path(req.results_root, job).write_text("{}")  # as papermill, which keeps it on a kill
    print("running", flush=True)
    time.sleep(60)

notebook_jobs.run_job = run_job
req = PlanRequest(profile="smoke", datasets=["synthetic"], methods=("csi",),
                  results_root=sys.argv[1])
ex._job_entry(build_plan(req)[0], req, {"notebook_dir": "."}, {})
"""


def test_stopping_the_jobs_reaches_a_job_whose_driver_ignores_sigint(tmp_path):
    """A driver started with `&` from a script hands its jobs SIGINT ignored, so submitit's
    cancel (SIGINT) left them running. `_stop_all` sends SIGTERM once the job's marker shows
    that `_job_entry` turns it into an interrupt, and waits for the job to end."""
    import signal
    import subprocess
    import sys

    req = PlanRequest(profile="smoke", datasets=["synthetic"], methods=("csi",),
                      results_root=str(tmp_path))
    job = build_plan(req)[0]
    stale = marker_path(tmp_path, job)  # an earlier job's, still touched: not this one's
    stale.parent.mkdir(parents=True)
    stale.write_text(json.dumps({"controller": "1"}))
    child = subprocess.Popen(  # stands for submitit's controller and the job process in one
        [sys.executable, "-c", _CHILD, str(tmp_path)], stdout=subprocess.PIPE, text=True,
        env={**os.environ, "SUBMITIT_LOCAL_JOB_ID": "4242"},
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    sent = []
    handle = SimpleNamespace(job_id="4242", done=lambda: child.poll() is not None,
                             _process=SimpleNamespace(send_signal=lambda sig: (
                                 sent.append(stale.is_file() and json.loads(stale.read_text())),
                                 child.send_signal(sig))))
    lines: list[str] = []
    try:
        start = time.monotonic()
        ex._stop_all({job.key: (job, handle, None, start)}, req, lines.append, timeout_s=30)
        assert child.poll() is not None and child.returncode != 0  # ended by the interrupt
        assert time.monotonic() - start < 30  # well before the job's 60 s
    finally:
        child.kill()
    assert child.stdout.read().strip() == "running"  # it had started its notebook
    assert lines == ["stopping 1 running job(s) ..."]
    assert [m["controller"] for m in sent] == ["4242"]  # signalled once, when its marker was there
    assert not marker_path(tmp_path, job).exists()  # its marker went with it
    assert not partial_path(tmp_path, job).exists()  # its notebook so far kept as a failure
    assert failed_path(tmp_path, job).read_text() == "{}"
