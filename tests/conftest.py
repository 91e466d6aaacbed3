"""Shared fixtures: the real data in ../shared/data, temporary roots, offline settings."""

from __future__ import annotations

import importlib.util
import multiprocessing as mp
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real datasets beside the repository (PneumoniaMNIST, BrainTumor, OCT/Kvasir samples)."""
    if not (SHARED_DATA / "medmnist" / "pneumoniamnist.npz").is_file():
        pytest.skip(f"real data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def load_script():
    """Import a script of the repository that is not a package module (benchmarks/, tools/)."""
    def load(relative_path: str):
        path = REPO / relative_path
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


@pytest.fixture
def results_root(tmp_path: Path) -> Path:
    root = tmp_path / "results"
    root.mkdir()
    return root


@pytest.fixture(autouse=True)
def _no_data_root_leak(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests name their data root explicitly; a developer's DIA_DATA_ROOT must not leak in."""
    monkeypatch.delenv("DIA_DATA_ROOT", raising=False)


@pytest.fixture
def normals_only_test_set(monkeypatch: pytest.MonkeyPatch):
    """Call it to make `dia.data.load_for_config` keep only the normal images of the test split:
    a one-class test set, which every method must refuse before training or scoring."""
    import dataclasses

    import dia.data

    load = dia.data.load_for_config

    def normals_only(*args, **kwargs):
        splits = load(*args, **kwargs)
        keep = splits.test_labels == 0
        return dataclasses.replace(
            splits, test=splits.test[keep], test_labels=splits.test_labels[keep],
            test_ids=[i for i, k in zip(splits.test_ids, keep.tolist()) if k])

    return lambda: monkeypatch.setattr(dia.data, "load_for_config", normals_only)


@pytest.fixture
def one_torch_thread():
    """One intra-op thread for tiny models: they gain nothing from more, and on a shared 2-core
    machine spinning threads make them many times slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def run_notebook(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Execute notebooks/<name>.ipynb with papermill in `tmp_path` (the way run_all.sh does);
    returns the rendered notebook's path."""
    papermill = pytest.importorskip("papermill")
    from dia.notebook_jobs import kernel_config

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")

    def run(name: str, **parameters) -> Path:
        out = tmp_path / f"{name}.ipynb"
        papermill.execute_notebook(
            str(REPO / "notebooks" / f"{name}.ipynb"), str(out), kernel_name="python3",
            cwd=str(tmp_path), progress_bar=False, parameters=parameters,
            config=kernel_config(),
        )
        return out

    return run


@pytest.fixture(scope="session")
def locked_elsewhere():
    """Whether a run folder's lock (`Run.exclusive`) is held, as a fresh process sees it."""
    probe = "import fcntl, sys; fcntl.flock(open(sys.argv[1]), fcntl.LOCK_EX | fcntl.LOCK_NB)"

    def locked(run_path: Path) -> bool:
        lock = Path(run_path) / ".lock"
        return lock.is_file() and subprocess.run([sys.executable, "-c", probe, str(lock)],
                                                 capture_output=True).returncode != 0

    return locked


def _hold(run, held, release) -> None:
    with run.exclusive():
        held.set()
        release.wait(30)


@pytest.fixture
def hold_lock():
    """Start a process that holds `run`'s lock until `release` is set: (process, release)."""
    started = []

    def start(run):
        ctx = mp.get_context("fork")
        held, release = ctx.Event(), ctx.Event()
        proc = ctx.Process(target=_hold, args=(run, held, release))
        proc.start()
        started.append((proc, release))
        assert held.wait(30), "the lock-holding process did not start"
        return proc, release

    yield start
    for proc, release in started:
        release.set()
        proc.join(10)


@pytest.fixture
def finish_elsewhere(hold_lock, monkeypatch):
    """`finish(run)`: another process holds `run`'s lock and leaves the run DONE once this
    process waits for the lock (`Run.exclusive` blocks in `dia.results._flock`).

    A stage called next must wait for it and then return the run without redoing it; `finish`
    returns a check that it did wait.
    """
    import threading

    from dia import results

    waiting = threading.Event()
    flock = results._flock

    def flock_noting_a_wait(handle, *, block):
        if block:
            waiting.set()
        flock(handle, block=block)

    monkeypatch.setattr(results, "_flock", flock_noting_a_wait)

    def finish(run):
        _, release = hold_lock(run)

        def done_once_waited_for():
            if waiting.wait(120):
                run.mark_done({})
            release.set()

        threading.Thread(target=done_once_waited_for, daemon=True).start()
        return waiting.is_set

    return finish


def notebook_kernels() -> list:
    """The Jupyter kernels this process has started and that still run (psutil processes)."""
    import psutil

    found = []
    for process in psutil.Process().children(recursive=True):
        try:
            if "ipykernel" in " ".join(process.cmdline()):
                found.append(process)
        except psutil.Error:  # ended meanwhile
            pass
    return found


def _still_running(processes: list) -> list:
    import psutil

    alive = []
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                alive.append(process)
        except psutil.Error:
            pass
    return alive


@pytest.fixture
def still_running():
    """``still_running(processes)``: those of the psutil `processes` that have not ended."""
    return _still_running


@pytest.fixture
def signal_when():
    """``signal_when(ready, signum)``: a thread sends `signum` to this process once ``ready()``
    holds (polled for up to 60 s, never after the test) and returns the list it fills with the
    notebook kernels running at that moment.

    A shell without job control starts a background command (``./run_tests.sh &`` in a script)
    with SIGINT ignored, and Python then installs no KeyboardInterrupt handler: the interrupt
    tests would hang. Python's own handler is put back for the test."""
    import signal
    import threading
    import time

    stop, threads = threading.Event(), []
    lock = threading.Lock()  # no signal once the test has ended
    ignored = signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    if ignored:
        signal.signal(signal.SIGINT, signal.default_int_handler)

    def start(ready, signum=signal.SIGINT) -> list:
        kernels: list = []

        def send() -> None:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                with lock:
                    if stop.is_set():
                        return
                    if ready():
                        kernels.extend(notebook_kernels())
                        os.kill(os.getpid(), signum)
                        return
                time.sleep(0.05)

        thread = threading.Thread(target=send, daemon=True)
        thread.start()
        threads.append(thread)
        return kernels

    yield start
    with lock:
        stop.set()
    for thread in threads:
        thread.join()
    if ignored:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
