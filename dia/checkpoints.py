"""Checkpoint files: written atomically, read back only by the run that wrote them."""

from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from dia.results import Run, RunError, atomic_write_bytes


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """`torch.save` through a temporary file and a rename: a kill never leaves half a file."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def read_checkpoint(path: str | Path, *, weights_only: bool = True, mmap: bool = False,
                    remedy: str = "delete it to restart this run from its beginning") -> Any:
    """`torch.load` on the CPU; a file that cannot be read (cut short, overwritten, not a
    checkpoint) is a RunError naming it and what to do (`remedy`), not torch's traceback."""
    try:
        return torch.load(path, map_location="cpu", weights_only=weights_only, mmap=mmap)
    except (RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as err:
        if not zipfile.is_zipfile(path):  # torch.save writes a zip; a cut one has no directory
            reason = (f"{Path(path).stat().st_size} bytes that are not a whole checkpoint: cut "
                      "short, or another file")
        else:
            reason = (str(err).strip() or type(err).__name__).splitlines()[0]
        raise RunError(f"checkpoint {path} cannot be read ({reason}); {remedy}") from err


def load_run_checkpoint(path: str | Path, run: Run, **expected: Any) -> dict[str, Any] | None:
    """The checkpoint at `path` (None when absent), refused unless it belongs to `run`.

    A checkpoint carries `run_hash` (and optionally other keys, e.g. the network's `name`);
    every key in `expected`, plus `run_hash == run.hash`, must match.
    """
    path = Path(path)
    if not path.is_file():
        return None
    state = read_checkpoint(path, weights_only=False)
    expected = {"run_hash": run.hash, **expected}
    wrong = {key: state.get(key) for key, value in expected.items() if state.get(key) != value}
    if wrong:
        raise RunError(f"{path} belongs to another run ({wrong} != {expected}); delete it or "
                       "use another results root")
    return state
