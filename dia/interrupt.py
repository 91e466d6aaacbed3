"""Render a notebook through papermill so that Ctrl-C or SIGTERM stop it: `execute_notebook`.

The kernel runs in a session of its own, so a terminal's Ctrl-C reaches only the driver. While
papermill runs a notebook in the main thread, nbclient answers SIGINT there by shutting the
kernel down from under the running cell: the driver ended (exit 130, 3.7 s after the signal,
measured on the quick DDPM notebook) with the dying kernel's ZMQ traceback in its log and
without the notebook so far; SIGTERM ended the driver at once, the kernel following when it
saw its parent gone, and the notebook stayed in ``.partial/``.

Here papermill runs in a worker thread, where nbclient cannot install signal handlers (asyncio
allows them in the main thread only), and the main thread waits for it. An interrupt there
(KeyboardInterrupt, or `Terminated` under `sigterm_as_interrupt`) is passed on to the kernel as
Jupyter's "interrupt" (SIGINT to its process group): the running cell stops with a
KeyboardInterrupt in the notebook, and papermill ends as it does on any failing cell, having
saved the notebook so far. A kernel still running `grace_s` later is killed. Then the interrupt
is raised again in the caller.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

GRACE_S = 10.0  # from the kernel's SIGINT to its SIGKILL
KILLED_WAIT_S = 10.0  # then at most this long for papermill to notice and return


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread by `sigterm_as_interrupt`."""


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises `Terminated` in the main thread, as SIGINT raises
    KeyboardInterrupt, so a scheduler's ``kill`` ends a run as cleanly as Ctrl-C."""

    def raise_terminated(signum, frame):  # noqa: ARG001 - the signal module's signature
        raise Terminated(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _kernel_manager_class(kernels: list):
    """nbclient's default kernel manager, keeping each instance in `kernels`."""
    from jupyter_client import AsyncKernelManager

    class TrackedKernelManager(AsyncKernelManager):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            kernels.append(self)

    return TrackedKernelManager


def _signal_kernel(km, signum: int) -> None:
    """Send `signum` to the kernel's process group (the kernel and its children), if it runs."""
    provisioner = getattr(km, "provisioner", None)
    process = getattr(provisioner, "process", None)
    if process is None or process.poll() is not None:
        return
    pgid = getattr(provisioner, "pgid", None)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if pgid and hasattr(os, "killpg"):
            os.killpg(pgid, signum)
        else:
            process.send_signal(signum)


def _stop(finished: threading.Event, kernels: list, grace_s: float) -> None:
    """Interrupt, then kill, the kernels of the worker until it has `finished` (or the time is
    up)."""
    kill_at = time.monotonic() + grace_s
    give_up_at = kill_at + KILLED_WAIT_S
    sent: dict[int, set[int]] = {}
    while not finished.is_set() and time.monotonic() < give_up_at:
        signum = signal.SIGINT if time.monotonic() < kill_at else signal.SIGKILL
        for km in list(kernels):  # a kernel still starting is signalled once it runs
            if signum not in sent.setdefault(id(km), set()):
                _signal_kernel(km, signum)
                if getattr(getattr(km, "provisioner", None), "process", None) is not None:
                    sent[id(km)].add(signum)
        try:
            finished.wait(0.2)
        except KeyboardInterrupt:  # a second Ctrl-C: no more grace
            kill_at = time.monotonic()


def execute_notebook(source: str, output: str, *, grace_s: float = GRACE_S,
                     **papermill_kwargs: Any) -> None:
    """`papermill.execute_notebook(source, output, **papermill_kwargs)`, stoppable by an
    interrupt of the calling (main) thread; see the module docstring. Raises what papermill
    raised, or the interrupt."""
    import papermill

    kernels: list = []
    failure: list[BaseException] = []
    finished = threading.Event()  # not Thread.join: a join interrupted by a signal can leave
    # the thread marked as ended while it still runs (seen with CPython 3.11)

    def render() -> None:
        try:
            papermill.execute_notebook(source, output,
                                       kernel_manager_class=_kernel_manager_class(kernels),
                                       **papermill_kwargs)
        except BaseException as err:  # noqa: BLE001 - handed to the calling thread
            failure.append(err)
        finally:
            finished.set()

    worker = threading.Thread(target=render, name=f"papermill {os.path.basename(source)}",
                              daemon=True)
    worker.start()
    try:
        while not finished.wait(0.5):
            pass
    except KeyboardInterrupt:
        _stop(finished, kernels, grace_s)
        raise
    if failure:
        raise failure[0]
