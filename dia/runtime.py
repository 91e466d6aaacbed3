"""Seeds, devices and the environment record written into every run folder."""

from __future__ import annotations

import datetime as _dt
import functools
import importlib.metadata
import logging
import os
import platform
import random
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

PACKAGES = ("torch", "diffusers", "kornia", "numpy", "scikit-learn", "pandas", "papermill")


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA) global generators."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(preference: str = "auto") -> "torch.device":  # noqa: F821
    """`auto` picks CUDA when available, else CPU; `cpu` / `cuda` / `cuda:N` are taken as is."""
    import torch

    from dia.config import ConfigError

    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(preference)
    except (RuntimeError, TypeError) as err:
        raise ConfigError(f"device {preference!r} is not a device: use auto, cpu, cuda, cuda:N "
                          "or mps") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {preference!r} was asked for, but CUDA is not available "
                          "(torch.cuda.is_available() is False): use cpu or auto")
    return device


def host_reads_are_free(device: "torch.device | str") -> bool:  # noqa: F821
    """Whether reading a tensor's value back costs nothing (CPU) or stalls the device (GPU).

    Code that must choose a branch by a tensor's value asks this first; tests patch it to take
    the GPU's branch on a CPU (`dia.hostsync` counts such reads).
    """
    import torch

    return torch.device(device).type == "cpu"


def once_per_device(build: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """Decorate `build(*args) -> tensor`: the decorated `f(*args, device=d)` builds it once per
    (args, device), on the host, and keeps the copy on `d`.

    For masks and constants a step needs every iteration: building them each time on the host
    and copying them to a GPU would make the host wait for the copy. The copy is a normal tensor
    even if first asked for under inference mode (an inference tensor cannot be saved for a
    later backward). `args` must be hashable.
    """
    import torch

    @functools.lru_cache(maxsize=32)
    def on_device(*args, device):
        with torch.inference_mode(False):
            return build(*args).to(device)

    return functools.wraps(build)(on_device)


def git_commit(repo: str | Path | None = None) -> str | None:
    repo = Path(repo) if repo else Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=5, check=True,
        )
        dirty = subprocess.run(  # edits to tracked code; results/ (published runs) aside
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no", "--",
             ".", ":(exclude)results"],
            capture_output=True, text=True, timeout=5,
        ).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


@functools.lru_cache(maxsize=1)
def process_commit() -> str | None:
    """The commit checked out when this process first asked: the code it most likely imported.

    `dia` imports its heavy modules lazily, when a stage first needs them, so a process that
    lives through a commit (a long training script beside development) can run code of two
    commits. `dia.results.open_run` asks every time, so the first run folder a process opens
    (created or resumed) fixes it.
    """
    return git_commit()


def commit_record() -> dict[str, str | None]:
    """`git_commit` (HEAD now) and, when this process began at another commit, `process_git_commit`.

    Warns when the two differ: what the process runs may mix both commits.
    """
    started, now = process_commit(), git_commit()
    if started == now:
        return {"git_commit": now}
    log.warning("the checkout moved from %s to %s while this process ran: its runs may mix code "
                "of both commits (env.json records both); rerun from a fresh process for a clean "
                "record", started, now)
    return {"git_commit": now, "process_git_commit": started}


def stage_device(cfg, device: "torch.device | str | None" = None):  # noqa: F821
    """(cfg, torch.device) a stage runs with: an explicit `device` wins over `cfg.device`.

    The explicit device is written into the returned config (`device` is in no hash), so the
    run folder's `env.json`, captured from `cfg.device`, names the device the run used. Also
    keeps the process's freed memory for reuse (`dia.allocator`): every stage starts here.
    """
    from dia.allocator import keep_freed_memory

    keep_freed_memory()
    if device is None:
        return cfg, resolve_device(cfg.device)
    from dia.config import replace

    device = resolve_device(str(device))  # "cuda" without CUDA: a clear error here
    return replace(cfg, {"device": str(device)}), device


def cpu_has_bf16_units() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX512-BF16 or AMX tiles). Elsewhere bf16
    autocast is emulated: it runs, slower than fp32."""
    import torch

    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


_warned_emulated: set[str] = set()  # the switches `bf16_autocast` warned about in this process


def bf16_autocast(device: "torch.device | str", *, cuda: bool,  # noqa: F821
                  cpu: bool, switch: str) -> "torch.dtype | None":  # noqa: F821
    """``torch.bfloat16`` if a stage runs its network under bf16 autocast on `device` (`cuda` on
    a GPU, `cpu` on the CPU: the config's ``cuda_bf16`` / ``cpu_bf16``), else None (fp32).

    Asking for it on a CPU without bf16 units (`cpu_has_bf16_units`) gives a warning naming
    `switch` (the config key, e.g. ``amplify.cpu_bf16``), once per switch and process (scoring
    asks twice: to lay out the encoder and to run it): it still runs, emulated, slower than fp32
    and rounded as coarsely.
    """
    import torch

    device = torch.device(device)
    wanted = {"cuda": cuda, "cpu": cpu}.get(device.type, False)
    if (wanted and device.type == "cpu" and switch not in _warned_emulated
            and not cpu_has_bf16_units()):
        _warned_emulated.add(switch)
        log.warning("%s is set but this CPU has no bf16 units (AVX512-BF16 or AMX): bf16 is "
                    "emulated, slower than fp32; set %s to false on this machine", switch, switch)
    return torch.bfloat16 if wanted else None


def autocast_if(device_type: str, dtype: "torch.dtype | None"):  # noqa: F821
    """``torch.autocast(device_type, dtype)`` when a dtype is given (see `bf16_autocast`); with
    None, nothing: the precision is the caller's, an autocast it opened still applies."""
    import contextlib

    import torch

    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type, dtype=dtype)


def describe_device(preference: str = "auto") -> str:
    import torch

    device = resolve_device(preference)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    # The vector ISA torch dispatches to (AVX512 / AVX2 / ...): it changes rounding, and 2-core
    # machines of this project have differed in speed (the quick DDPM: 1687 s on one, 2423 s on
    # an AVX2 one; docs/MEASUREMENTS.md "What a run costs").
    isa = torch.backends.cpu.get_cpu_capability()
    return f"cpu ({os.cpu_count()} cores, {cpu_model()}, {isa})"


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), else the architecture. Two machines of one
    ISA can still round differently: the 2-core AVX-512 machines of this project have been AMD
    EPYC and Intel Xeon (with AMX), and the same DDPM's losses differ in the 7th digit."""
    try:
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def utc_now() -> str:
    """The time now, UTC, to the second (ISO 8601): the time stamps of env.json."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def capture_env(device: str = "auto") -> dict[str, Any]:
    """Git commit (see `commit_record`), package versions, device and time: a run's provenance."""
    from dia.allocator import state

    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return {
        **commit_record(),
        "python": platform.python_version(),
        "packages": versions,
        "device": describe_device(device),
        "malloc": state(),  # speed only: "kept" (dia.allocator), "system", ...
        "hostname_hash": hex(hash(platform.node()) & 0xFFFF),
        "created": utc_now(),
    }
