"""dia.allocator: a stage keeps freed memory for reuse, so buffers freed and allocated again every
step stop faulting fresh pages in; DIA_SYSTEM_MALLOC=1 leaves glibc's defaults."""

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

# Ten 8 MiB buffers allocated, written and freed, five times over, after one warm-up round, in a
# process that first enters a stage the way every notebook does (`stage_device`). glibc's
# defaults give such a pattern back to the OS after each round (its trim threshold follows the
# largest freed chunk: 16 MiB here), so each round faults its 80 MiB in again.
CHILD = """
import ctypes
from dia.allocator import keep_freed_memory, minor_page_faults
from dia.config import load_config
from dia.runtime import stage_device

stage_device(load_config("smoke"), "cpu")
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]

def one_round(size=8 << 20):
    buffers = [libc.malloc(size) for _ in range(10)]
    for b in buffers:
        ctypes.memset(b, 1, size)
    for b in reversed(buffers):
        libc.free(b)

one_round()
before = minor_page_faults()
for _ in range(5):
    one_round()
print(keep_freed_memory(), minor_page_faults() - before)
"""


def _child(system_malloc: bool) -> tuple[str, int]:
    env = {k: v for k, v in os.environ.items() if k != "DIA_SYSTEM_MALLOC"}
    if system_malloc:
        env["DIA_SYSTEM_MALLOC"] = "1"
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, cwd=REPO, check=True,
                         capture_output=True, text=True, timeout=120).stdout.split()
    return out[-2], int(out[-1])


@pytest.mark.skipif(not GLIBC, reason="tunes glibc's malloc only")
def test_a_stage_keeps_freed_memory_and_the_opt_out_does_not():
    state, faults = _child(system_malloc=False)
    system_state, system_faults = _child(system_malloc=True)
    assert (state, system_state) == ("kept", "system")
    pages = 5 * 10 * (8 << 20) // 4096  # what five rounds touch, in 4 KiB pages
    assert system_faults > pages // 2  # glibc's defaults: most pages faulted in again
    assert faults < pages // 20  # kept: the rounds reuse the first round's pages


def test_a_run_records_what_its_stage_did_to_the_allocator(monkeypatch):
    from dia.allocator import keep_freed_memory
    from dia.config import load_config
    from dia.runtime import capture_env, stage_device

    monkeypatch.delenv("DIA_SYSTEM_MALLOC", raising=False)
    stage_device(load_config("smoke"), "cpu")
    assert capture_env("cpu")["malloc"] == keep_freed_memory()
    if GLIBC and "DIA_SYSTEM_MALLOC" not in os.environ and "LD_PRELOAD" not in os.environ:
        assert keep_freed_memory() == "kept"


def test_what_is_left_alone(monkeypatch):
    import ctypes

    from dia import allocator

    monkeypatch.setenv("DIA_SYSTEM_MALLOC", "1")
    assert allocator._tune() == "system"
    monkeypatch.setenv("DIA_SYSTEM_MALLOC", "0")  # 0 is not an opt-out
    monkeypatch.setenv("LD_PRELOAD", "/usr/lib/libtcmalloc_minimal.so.4")
    assert allocator._tune() == "preloaded"
    monkeypatch.delenv("LD_PRELOAD")

    def no_c_library(name):
        raise OSError("no such library")

    monkeypatch.setattr(ctypes, "CDLL", no_c_library)
    assert allocator._tune() == "unsupported"
