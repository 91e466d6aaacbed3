"""Render a notebook through papermill so that Ctrl-C or SIGTERM stop it: `execute_notebook`.

The kernel runs in a session of its own, so a terminal's Ctrl-C reaches only the driver. With
papermill in the driver's main thread, the KeyboardInterrupt landed inside papermill's event
loop, which shut down a kernel still busy with its cell: the log got the dying kernel's ZMQ
traceback and the notebook so far was lost; SIGTERM ended the driver at once and left the
notebook in ``.partial/`` (measured on issue 5, note of 2026-12-03).

Here papermill runs in a worker thread and the main thread only waits for it, so an interrupt
(KeyboardInterrupt, or `Terminated` under `sigterm_as_interrupt`) lands in the wait and
papermill's loop goes on. The interrupt is passed on to the kernel as Jupyter's "interrupt"
(SIGINT to its process group): a running cell stops with a KeyboardInterrupt in the notebook,
and papermill ends as on any failing cell, having saved the notebook so far. No further cell is
started: ipykernel ignores SIGINT while idle or starting, so a stop between cells comes from
nbclient's ``on_cell_execute`` hook, which fails the next cell with a KeyboardInterrupt (no
other hook runs for it). An interrupt that lands after the hook let a cell go but before the
kernel started it is ignored by the kernel, so that cell runs on until the kill below.

A kernel still running `GRACE_S` after the interrupt is killed (SIGKILL), and papermill then
gets another `KILLED_WAIT_S` to notice before the interrupt is raised again in the caller; past
that the worker thread is left behind (a daemon) and may still be writing its notebook.

This is what the ``sequential`` executor gets. Under ``local-parallel`` each job runs this in a
submitit process. The driver stops it with a SIGTERM (`dia.executors._stop_all`), which it
takes as this interrupt; but a Ctrl-C in the terminal also reaches the job's submitit
controller, which SIGKILLs the job about a second after passing the SIGINT on, so there the
notebook so far may stay in ``.partial/`` and the kernel exits with its parent.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any, NoReturn

GRACE_S = 10.0  # from the kernel's SIGINT to its SIGKILL
KILLED_WAIT_S = 10.0  # then at most this long for papermill to notice and return


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread by `sigterm_as_interrupt`."""


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises `Terminated` in the main thread, as SIGINT raises
    KeyboardInterrupt, so a scheduler's ``kill`` ends a run as cleanly as Ctrl-C. Outside the
    main thread (where Python allows no signal handler) it changes nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def raise_terminated(signum, frame):  # noqa: ARG001 - the signal module's signature
        raise Terminated(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, raise_terminated)
    try:
        yield
    finally:  # None: a handler not set from Python, which Python cannot set back
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def _kernel_manager_class(base, kernels: list):
    """`base` (nbclient's kernel manager class), keeping each instance in `kernels`."""

    class TrackedKernelManager(base):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            kernels.append(self)

    return TrackedKernelManager


def _signal_kernel(km, signum: int) -> bool:
    """Send `signum` to the kernel's process group (the kernel and its children), or to the
    kernel alone when it shares ours. False when its process has not started yet (a kernel that
    has ended counts as signalled)."""
    provisioner = getattr(km, "provisioner", None)
    process = getattr(provisioner, "process", None)
    if process is None:
        return False
    if process.poll() is not None:
        return True
    pgid = getattr(provisioner, "pgid", None)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        # jupyter_client starts kernels in a session of their own; a custom provisioner might
        # not, and then the group would be ours
        if pgid and hasattr(os, "killpg") and pgid != os.getpgrp():
            os.killpg(pgid, signum)
        else:
            process.send_signal(signum)
    return True


def _stop(finished: threading.Event, kernels: list, grace_s: float) -> None:
    """Interrupt, then kill, the kernels of the worker until it has `finished` (or the time is
    up)."""
    kill_at = time.monotonic() + grace_s
    give_up_at = kill_at + KILLED_WAIT_S
    sent: set[tuple[Any, int]] = set()  # (kernel manager, signal): each signal once a kernel
    while True:
        try:  # the whole body: a second Ctrl-C may land anywhere in it
            if finished.is_set() or time.monotonic() >= give_up_at:
                return
            signum = signal.SIGINT if time.monotonic() < kill_at else signal.SIGKILL
            for km in list(kernels):
                if (km, signum) not in sent and _signal_kernel(km, signum):
                    sent.add((km, signum))
            finished.wait(0.2)
        except KeyboardInterrupt:  # a second Ctrl-C: no more grace
            kill_at = time.monotonic()
            give_up_at = min(give_up_at, kill_at + KILLED_WAIT_S)


def _close_thread_event_loop() -> None:
    """Close the asyncio loop nbclient made for this (worker) thread, if any: left open, each
    rendered notebook's loop and its file descriptors waited for the garbage collector, which
    then warned of an unclosed event loop."""
    import asyncio
    import warnings

    try:
        with warnings.catch_warnings():  # the policy API is deprecated from Python 3.14
            warnings.simplefilter("ignore", DeprecationWarning)
            loop = asyncio.get_event_loop_policy().get_event_loop()
    except RuntimeError:  # none was set in this thread: papermill did not start
        return
    if not loop.is_running() and not loop.is_closed():
        loop.close()
    asyncio.set_event_loop(None)


def _refuse(cell) -> NoReturn:
    """Fail `cell` before it runs, as if it had been interrupted at once: a KeyboardInterrupt
    in its outputs, and papermill's handling of a failing cell (its notebook saved, the kernel
    shut down, `PapermillExecutionError`; its execution count stays None, so papermill's
    banner says "In [None]"). A KeyboardInterrupt raised here would instead be taken by asyncio
    for the process's own."""
    import nbformat
    from nbclient.exceptions import CellExecutionError

    ename, evalue = "KeyboardInterrupt", "interrupted before this cell started"
    message = f"{ename}: {evalue}"
    cell.outputs = [nbformat.v4.new_output("error", ename=ename, evalue=evalue,
                                           traceback=[message])]
    raise CellExecutionError(message, ename, evalue)


def execute_notebook(source: str, output: str, *, grace_s: float | None = None,
                     **papermill_kwargs: Any) -> None:
    """`papermill.execute_notebook(source, output, **papermill_kwargs)`, stoppable by an
    interrupt of the calling (main) thread; see the module docstring. `grace_s`: from the
    kernel's SIGINT to its SIGKILL (default `GRACE_S`). Raises what papermill raised, or the
    interrupt."""
    import papermill
    from jupyter_client import AsyncKernelManager

    grace_s = GRACE_S if grace_s is None else grace_s
    kernels: list = []
    manager = _kernel_manager_class(
        papermill_kwargs.pop("kernel_manager_class", AsyncKernelManager), kernels)
    caller_hook = papermill_kwargs.pop("on_cell_execute", None)
    stopping = threading.Event()
    failure: list[BaseException] = []
    finished = threading.Event()  # not Thread.join: a join interrupted by a signal can leave
    # the thread marked as ended while it still runs (seen with CPython 3.11)

    def no_cell_once_stopping(cell, **hook_kwargs: Any) -> Any:  # nbclient's on_cell_execute
        if stopping.is_set():
            _refuse(cell)
        return caller_hook(cell=cell, **hook_kwargs) if caller_hook else None

    def render() -> None:
        try:
            if stopping.is_set():  # interrupted while this thread started
                return
            papermill.execute_notebook(source, output, kernel_manager_class=manager,
                                       on_cell_execute=no_cell_once_stopping,
                                       **papermill_kwargs)
        except BaseException as err:  # noqa: BLE001 - handed to the calling thread
            failure.append(err)
        finally:
            try:
                _close_thread_event_loop()
            finally:  # whatever happens, the calling thread must not wait forever
                finished.set()

    worker = threading.Thread(target=render, name=f"papermill {os.path.basename(source)}",
                              daemon=True)
    try:
        worker.start()
        while not finished.wait(0.5):  # a timed wait: signals are handled at least this often
            pass
    except KeyboardInterrupt:
        stopping.set()
        if worker.ident is not None:  # it started: stop its kernel
            _stop(finished, kernels, grace_s)
        raise
    if failure:
        raise failure[0]
