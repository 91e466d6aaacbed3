"""Checkpoint files: written atomically, read back only by the run that wrote them."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from dia.results import Run, RunError, atomic_write_bytes


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """`torch.save` through a temporary file and a rename: a kill never leaves half a file."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_run_checkpoint(path: str | Path, run: Run, **expected: Any) -> dict[str, Any] | None:
    """The checkpoint at `path` (None when absent), refused unless it belongs to `run`.

    A checkpoint carries `run_hash` (and optionally other keys, e.g. the network's `name`);
    every key in `expected`, plus `run_hash == run.hash`, must match.
    """
    path = Path(path)
    if not path.is_file():
        return None
    state = torch.load(path, map_location="cpu", weights_only=False)
    expected = {"run_hash": run.hash, **expected}
    wrong = {key: state.get(key) for key, value in expected.items() if state.get(key) != value}
    if wrong:
        raise RunError(f"{path} belongs to another run ({wrong} != {expected}); delete it or "
                       "use another results root")
    return state
