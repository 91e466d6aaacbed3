"""dia.interrupt: an interrupt of the main thread stops a papermill notebook and its kernel."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

import nbformat
import pytest

from dia import interrupt


def _notebook(path: Path, *cells: str) -> Path:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def _run_interrupted(tmp_path, signal_when, source: Path, ready, **kwargs) -> tuple[float, list]:
    kernels = signal_when(ready)
    tic = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        interrupt.execute_notebook(str(source), str(tmp_path / "out.ipynb"),
                                   kernel_name="python3", progress_bar=False, **kwargs)
    return time.monotonic() - tic, kernels


def test_a_cell_that_ignores_the_interrupt_has_its_kernel_killed(tmp_path, signal_when,
                                                                  still_running):
    started = tmp_path / "started"
    source = _notebook(tmp_path / "stubborn.ipynb",
                       "import pathlib, signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n"
                       f"pathlib.Path({str(started)!r}).write_text('')\ntime.sleep(120)")
    took, kernels = _run_interrupted(tmp_path, signal_when, source, started.exists, grace_s=1.0)
    assert took < 60  # not the cell's 120 s: SIGKILL after the 1 s of grace
    assert kernels and not still_running(kernels)


def test_no_cell_starts_after_an_interrupt(tmp_path, signal_when, still_running, monkeypatch):
    # ipykernel ignores SIGINT outside a cell (and this cell ignores it too): nbclient's
    # on_cell_execute hook is what keeps the next cell from starting. The first cell ends only
    # once the interrupt is being handled, so the second one always comes after it.
    started, handled, ran = tmp_path / "started", tmp_path / "handled", tmp_path / "ran"
    stop = interrupt._stop

    def stop_and_say_so(*args, **kwargs):
        handled.write_text("")
        return stop(*args, **kwargs)

    monkeypatch.setattr(interrupt, "_stop", stop_and_say_so)
    source = _notebook(tmp_path / "two.ipynb",
                       "import pathlib, signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n"
                       f"pathlib.Path({str(started)!r}).write_text('')\n"
                       f"while not pathlib.Path({str(handled)!r}).exists(): time.sleep(0.05)",
                       f"open({str(ran)!r}, 'w').close()")
    took, kernels = _run_interrupted(tmp_path, signal_when, source, started.exists, grace_s=30.0)
    assert not ran.exists()
    assert took < 30  # ended after the first cell, not killed after the grace
    time.sleep(1)  # papermill shuts the kernel down as after any failing cell
    assert kernels and not still_running(kernels)
    # the kept notebook says why the second cell did not run
    first, second = [c for c in nbformat.read(tmp_path / "out.ipynb", as_version=4).cells
                     if c.cell_type == "code"]  # papermill's banner cells are markdown
    assert first.metadata.papermill.status == "completed"
    assert [o["ename"] for o in second.outputs] == ["KeyboardInterrupt"]
    assert second.metadata.papermill.status == "failed"


def test_a_callers_cell_hook_still_runs(tmp_path):
    seen = []
    source = _notebook(tmp_path / "two.ipynb", "x = 1", "y = 2")
    interrupt.execute_notebook(str(source), str(tmp_path / "out.ipynb"), kernel_name="python3",
                               progress_bar=False,
                               on_cell_execute=lambda cell, cell_index: seen.append(cell_index))
    assert seen == [0, 1]


def test_without_an_interrupt_failures_come_through_as_papermill_raised_them(tmp_path):
    import papermill

    source = _notebook(tmp_path / "fails.ipynb", "raise ValueError('boom')")
    with pytest.raises(papermill.PapermillExecutionError, match="boom"):
        interrupt.execute_notebook(str(source), str(tmp_path / "out.ipynb"),
                                   kernel_name="python3", progress_bar=False)


@pytest.mark.parametrize("cell", ["x = 1", "raise ValueError('boom')"])
def test_the_event_loop_of_the_papermill_thread_is_closed(tmp_path, monkeypatch, cell):
    import asyncio

    loops = []
    new_event_loop = asyncio.new_event_loop

    def recorded_loop():
        loops.append(new_event_loop())
        return loops[-1]

    monkeypatch.setattr(asyncio, "new_event_loop", recorded_loop)
    source = _notebook(tmp_path / "one.ipynb", cell)
    with contextlib.suppress(Exception):  # the failing notebook: papermill's error
        interrupt.execute_notebook(str(source), str(tmp_path / "out.ipynb"),
                                   kernel_name="python3", progress_bar=False)
    assert loops and all(loop.is_closed() for loop in loops)


def test_sigterm_is_an_interrupt_only_within_the_block():
    previous = signal.getsignal(signal.SIGTERM)
    with pytest.raises(interrupt.Terminated):
        with interrupt.sigterm_as_interrupt():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler raises here
    assert signal.getsignal(signal.SIGTERM) is previous
