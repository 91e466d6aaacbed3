"""`tools/device_session.sh`, the one call a GPU session makes, in its dry run on a CPU.

A session is lent a GPU for about 15 minutes, so the script must work the first time: every
benchmark it calls must still take the flags it passes, and a step that fails must be named
instead of lost among the others' output. With a budget under 90 s it skips the ablation grid
(tested in test_ablations.py) and runs the rest, as `PROFILE=smoke` allows without CUDA.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

FAILING_PYTHON = """#!/usr/bin/env bash
# the real interpreter, except that bench_amplify.py then exits 3, as a crashed benchmark would
for arg in "$@"; do
  case "$arg" in *bench_amplify.py) "{python}" "$@"; exit 3;; esac
done
exec "{python}" "$@"
"""


def json_after(log: str, heading: str) -> dict:
    """The first JSON object printed after `heading` in the session log."""
    start = log.index("{", log.index(heading))
    return json.JSONDecoder().raw_decode(log, start)[0]


def _dry_run_env(tmp_path: Path, fake_python: str) -> tuple[dict[str, str], Path]:
    """The environment of a CPU dry run (smoke, synthetic, one lane) whose interpreter is
    `fake_python` (a bash template of the real one), and the folder it writes into."""
    python = tmp_path / "python"
    python.write_text(fake_python.format(python=sys.executable))
    python.chmod(0o755)
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "RESULTS_ROOT": str(tmp_path / "results"),
           "PROFILE": "smoke", "DATASET": "synthetic", "LANES": "1", "PYTHON": str(python),
           "DIA_DATA_ROOT": str(tmp_path / "data"), "OMP_NUM_THREADS": "1"}
    return env, out


@pytest.mark.slow
def test_dry_run_writes_every_file_and_names_the_step_that_failed(tmp_path):
    env, out = _dry_run_env(tmp_path, FAILING_PYTHON)
    done = subprocess.run(["bash", "tools/device_session.sh", "60"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    log = (out / "session.log").read_text()
    assert done.returncode == 1, log[-3000:]  # the one failed step fails the call ...
    assert "steps that failed: bench_amplify (exit 3)" in log, log[-3000:]
    failures = [line for line in log.splitlines()
                 if line.startswith("[session] ") and " exited " in line]
    assert failures == ["[session] bench_amplify exited 3"]  # ... and it alone
    # every step ran with the flags the script passes (argparse would have refused others),
    # those after the failed one included
    assert "torch" in (out / "env.txt").read_text()
    assert "skipped" in (out / "gpu_tests.txt").read_text()  # no CUDA: the gpu tests skip
    bench = json.loads((out / "bench_diffusion.json").read_text())
    assert bench["benchmark"] == "diffusion" and bench["results"] == []  # nothing on CUDA here
    amplify = json.loads((out / "bench_amplify.json").read_text())
    assert amplify["results"] == []  # likewise
    flops = json_after(log, "[session] flop budget of the profile")
    assert flops["profile"] == "smoke" and flops["dataset"] == "synthetic"
    ddpm_step = json_after(log, "[session] operators of a DDPM training step")
    assert ddpm_step["profile"] == "smoke"
    assert not (out / "runs.tar.gz").exists()  # no grid, no run folders, no empty archive


def _processes_with(env_entry: bytes) -> list[int]:
    """Pids of this user's processes whose environment holds `env_entry` (NAME=value)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and env_entry in (proc / "environ").read_bytes().split(b"\0"):
                found.append(int(proc.name))
        except OSError:  # gone meanwhile, or not ours
            continue
    return found


HANGING_PYTHON = """#!/usr/bin/env bash
# the real interpreter, except that bench_diffusion.py hangs, as a benchmark stuck on a GPU would
for arg in "$@"; do
  case "$arg" in *bench_diffusion.py) exec sleep 300;; esac
done
exec "{python}" "$@"
"""


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs /proc")
def test_a_term_stops_the_session_and_the_step_it_runs_at_once(tmp_path):
    """A TERM (a hand run under `timeout`) ends the call within seconds, not when the step then
    running times out, and stops that step, which its timeout keeps in a process group of its
    own, out of reach of a TERM sent to the script's group."""
    env, out = _dry_run_env(tmp_path, HANGING_PYTHON)
    session = subprocess.Popen(["bash", "tools/device_session.sh", "60"], cwd=REPO, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = out / "session.log"
    deadline = time.monotonic() + 180
    while "[session] benchmarks" not in (log.read_text() if log.exists() else ""):
        assert session.poll() is None and time.monotonic() < deadline, "no benchmarks started"
        time.sleep(0.2)
    time.sleep(1)
    assert _processes_with(f"OUT={out}".encode()), "no step running to stop"
    sent = time.monotonic()
    session.send_signal(signal.SIGTERM)
    assert session.wait(timeout=150) == 143
    assert time.monotonic() - sent < 20  # not at the hanging step's 100-s timeout
    time.sleep(1)
    assert _processes_with(f"OUT={out}".encode()) == []  # the hanging step was stopped too
    assert log.read_text().splitlines()[-1].startswith("[session] stopped by TERM")
