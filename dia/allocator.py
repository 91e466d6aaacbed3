"""The process's C allocator: keep freed memory for reuse instead of handing it back to the OS.

glibc's malloc serves a request above its mmap threshold by a fresh ``mmap`` and unmaps it on
``free``, and trims the top of its heap back to the OS once more than its trim threshold lies
free there. A training step on the CPU allocates and frees the same large activation buffers
every step, so each step faults many of those pages in again and the kernel zeroes them.
Measured on the project's 2-core AVX2 CPU (2 threads; `benchmarks/bench_malloc.py --train-epochs 4
--pairs 2`, docs/MEASUREMENTS.md *What a run costs* for its figures): DIA on PneumoniaMNIST
(`quick`, its dissolver a 1-step DDPM), four epochs in a fresh process, took 355 and 361 s with
glibc's defaults (1.8-3.3 M minor page faults an epoch) and 338 and 331 s kept (0.4-1.7 M), the four
processes alternated: 6.7 % less. A DDPM step of `quick` gained nothing measurable.

`keep_freed_memory` sets the mmap threshold to glibc's ceiling (32 MiB on 64-bit; larger
requests are still mapped afresh) and turns trimming off, for the rest of the process. Results
do not change: where a buffer lies does not change what is computed in it (checked: the
`quick` DDPM's losses at steps 20 and 40 equal, to every logged digit, those of the run recorded
before this module existed). The process keeps its peak memory reserved until it exits. Every
stage calls it (`dia.runtime.stage_device`), on a GPU machine too (harmless there; nothing
measured). Set ``DIA_SYSTEM_MALLOC=1`` before Python starts to leave glibc's defaults, e.g. to
measure the difference; a process that preloads another allocator (``LD_PRELOAD`` tcmalloc,
jemalloc, mimalloc) is left alone.
"""

from __future__ import annotations

import ctypes
import os

M_TRIM_THRESHOLD = -1  # glibc's <malloc.h> parameter numbers
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # the most glibc accepts on 64-bit (HEAP_MAX_SIZE / 2)
TRIM_THRESHOLD = 2**31 - 1  # an int: never trim in practice
OPT_OUT = "DIA_SYSTEM_MALLOC"
PRELOADED_ALLOCATORS = ("tcmalloc", "jemalloc", "mimalloc")

_state: str | None = None  # what keep_freed_memory did in this process (None: not called)


def keep_freed_memory() -> str:
    """Tune glibc's malloc as the module docstring says, once per process; says what it did.

    Returns ``"kept"`` (tuned), ``"system"`` (``DIA_SYSTEM_MALLOC`` set), ``"preloaded"``
    (another allocator preloaded) or ``"unsupported"`` (not glibc: macOS, Windows, musl).
    """
    global _state
    if _state is None:
        _state = _tune()
    return _state


def state() -> str:
    """What `keep_freed_memory` did in this process, without doing it (``"untouched"`` before
    it is called): what a run's `env.json` records."""
    return _state or "untouched"


def _tune() -> str:
    if os.environ.get(OPT_OUT, "") not in ("", "0"):
        return "system"
    if any(name in os.environ.get("LD_PRELOAD", "") for name in PRELOADED_ALLOCATORS):
        return "preloaded"
    try:
        libc = ctypes.CDLL(None)  # the C library the process already runs on
        libc.gnu_get_libc_version  # glibc's own symbol: musl and others lack it
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return "unsupported"
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    if mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) != 1:  # glibc returns 1 on success
        return "unsupported"
    mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    return "kept"


def minor_page_faults() -> int:
    """The process's minor page faults so far (0 where `resource` is missing): benchmarks read
    it before and after a step."""
    try:
        import resource
    except ImportError:
        return 0
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
