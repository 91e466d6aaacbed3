"""The process's C allocator: keep freed memory for reuse instead of handing it back to the OS.

glibc's malloc serves a request above its mmap threshold by a fresh ``mmap`` and unmaps it on
``free``, and trims the top of its heap back to the OS once more than its trim threshold lies
free there. A training step on the CPU allocates and frees the same large activation buffers
every step, so each step faults many of those pages in again and the kernel zeroes them: a DIA
epoch of `quick` on PneumoniaMNIST took 2.0-2.8 M minor page faults (55-70k per iteration).
Kept, the faults fall to a third and the epoch takes about 6 % less time (two runs each way of
four epochs, alternated: 354 and 358 s against 335 and 331 s, on the 2-core AVX2 CPU); a DDPM
step of `quick` gains a few per cent (`benchmarks/bench_malloc.py` measures both). Where a process
alternates between batch shapes (dissolving a varying number of cache misses) glibc's defaults
cost more: dissolving 128 images after smaller batches took 1.46 s instead of 1.27.

`keep_freed_memory` sets the mmap threshold to glibc's ceiling (32 MiB on 64-bit; larger
requests are still mapped afresh) and turns trimming off, for the rest of the process. Results
do not change (where a buffer lies does not change what is computed in it: the `quick` DDPM's
losses at steps 20 and 40 equal, to every logged digit, those of a run made before this module
existed); the process keeps its peak memory reserved until it exits. Every stage calls it (`dia.runtime.stage_device`).
Set ``DIA_SYSTEM_MALLOC=1`` to leave glibc's defaults, e.g. to measure the difference.
"""

from __future__ import annotations

import ctypes
import functools
import os

M_TRIM_THRESHOLD = -1  # glibc's <malloc.h> parameter numbers
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # the most glibc accepts on 64-bit (HEAP_MAX_SIZE / 2)
TRIM_THRESHOLD = 2**31 - 1  # an int: never trim in practice
OPT_OUT = "DIA_SYSTEM_MALLOC"


@functools.cache
def keep_freed_memory() -> str:
    """Tune glibc's malloc as the module docstring says, once per process; says what it did.

    Returns ``"kept"`` (tuned), ``"system"`` (``DIA_SYSTEM_MALLOC`` set) or ``"unsupported"``
    (no glibc ``mallopt``: macOS, Windows, musl), which runs do not otherwise need.
    """
    if os.environ.get(OPT_OUT, "") not in ("", "0"):
        return "system"
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library the process already runs on
    except (OSError, AttributeError, TypeError):
        return "unsupported"
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # musl's mallopt is a stub returning 0; glibc returns 1 on success
    if mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) != 1:
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
