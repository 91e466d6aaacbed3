"""Checkpoint files: written atomically, read back only by the run that wrote them."""

from __future__ import annotations

import io
import math
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from dia.config import comparable_sections
from dia.results import Run, RunError, atomic_write_bytes, first_line, zip_damage

_ABSENT = "(absent)"


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """`torch.save` through a temporary file and a rename: a kill never leaves half a file."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def ensure_finite(losses: dict[str, float], *, where: str, hint: str) -> None:
    """Raise FloatingPointError when a loss of an epoch is NaN or infinite: called before that
    epoch's checkpoint, so diverged weights are never saved (nor the run marked DONE)."""
    bad = {name: value for name, value in losses.items() if not math.isfinite(value)}
    if bad:
        raise FloatingPointError(f"{where}: loss {bad}: training diverged; {hint}")


def read_checkpoint(path: str | Path, *, weights_only: bool = True, mmap: bool = False,
                    remedy: str = "delete it to restart this run from its beginning") -> Any:
    """`torch.load` on the CPU, with a RunError naming the file instead of torch's traceback.

    A damaged file (torch.save writes a zip; one cut short or overwritten is none) says what to
    do (`remedy`); a whole file that does not load was written by other code, and says so. A zip
    whose bytes were changed inside (a bad copy or disk; torch.load does not check) fails its
    members' checksums and is damaged too.
    """
    _check_zip_checksums(Path(path), remedy)
    try:
        return torch.load(path, map_location="cpu", weights_only=weights_only, mmap=mmap)
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError) as err:
        if zipfile.is_zipfile(path):
            reason = first_line(err)
            raise RunError(f"checkpoint {path} cannot be loaded ({reason}); the file is whole, "
                           "so another version of this code or of torch wrote it") from err
        size = Path(path).stat().st_size
        raise RunError(f"checkpoint {path} cannot be read ({size} bytes that are not a whole "
                       f"checkpoint: cut short, or another file); {remedy}") from err


def _check_zip_checksums(path: Path, remedy: str) -> None:
    """A RunError when a member of the zip at `path` fails its CRC-32; files that are no zip are
    left to torch.load. This reads the whole file once more before torch.load (or its mmap) does,
    once per load (resume, scoring, the dissolver's set-up; never per step): 0.08-0.17 s for the
    90-170 MB `quick` checkpoints (`zipfile.ZipFile(path).testzip()` timed on the 2-core Intel
    Xeon, 2026-12-03)."""
    if not zipfile.is_zipfile(path):
        return
    damage = zip_damage(path)
    if damage:
        raise RunError(f"checkpoint {path} is damaged: {damage} (a bad copy or disk?); {remedy}")


def require_checkpoint_of(ckpt: Any, path: Path, *, kind: str, fmt: str, needs: tuple[str, ...],
                          identity: dict[str, Any], sections: dict[str, Any], remedy: str) -> None:
    """Refuse, with a RunError ending in `remedy`, a checkpoint that is no `kind` checkpoint (a
    dict of format `fmt` holding the keys `needs`) or that was written for another run.

    `identity` (dataset, seed, ...) and the config `sections` must equal what the checkpoint
    recorded; sections are compared as `comparable_sections` (a switch added since, at its
    default, is no difference). The message names every difference, the checkpoint's value
    beside this run's, e.g. ``config.amplify.lr: 0.5 in the checkpoint, 1.0 here``.
    """
    if not isinstance(ckpt, dict):
        raise RunError(f"{path} is not a {kind} checkpoint (it holds a {type(ckpt).__name__}, "
                       f"not a dict); {remedy}")
    if ckpt.get("format") != fmt:
        raise RunError(f"{path} is not a {kind} checkpoint (format {ckpt.get('format')!r}, "
                       f"expected {fmt!r}); {remedy}")
    require_keys(ckpt, path, needs, remedy, kind=kind)
    diffs = [_difference(key, ckpt.get(key, _ABSENT), value)
             for key, value in identity.items() if ckpt.get(key, _ABSENT) != value]
    recorded = ckpt.get("config", _ABSENT)
    if isinstance(recorded, dict):
        diffs += _section_differences(comparable_sections(recorded), comparable_sections(sections))
    else:
        diffs.append(_difference("config", recorded, sections))
    if diffs:
        shown = "; ".join(diffs[:5]) + (f"; and {len(diffs) - 5} more" if len(diffs) > 5 else "")
        raise RunError(f"{kind} checkpoint {path} was written for another run (differs in "
                       f"{shown}); {remedy}")


def _section_differences(have: dict[str, Any], want: dict[str, Any]) -> list[str]:
    """`_difference` of each config key (``config.amplify.lr``) the checkpoint's sections `have`
    and this run's `want` do not share; of a whole section where one side lacks it."""
    diffs = []
    for name in [*want, *(n for n in have if n not in want)]:
        mine, theirs = want.get(name, _ABSENT), have.get(name, _ABSENT)
        if mine == theirs:
            continue
        if not (isinstance(mine, dict) and isinstance(theirs, dict)):
            diffs.append(_difference(f"config.{name}", theirs, mine))
            continue
        diffs += [_difference(f"config.{name}.{key}", theirs.get(key, _ABSENT),
                              mine.get(key, _ABSENT))
                  for key in [*mine, *(k for k in theirs if k not in mine)]
                  if theirs.get(key, _ABSENT) != mine.get(key, _ABSENT)]
    return diffs


def _difference(key: str, theirs: Any, mine: Any) -> str:
    def show(value: Any) -> str:
        return value if value is _ABSENT else repr(value)

    if isinstance(theirs, dict) or isinstance(mine, dict):  # whole sections: too long to show
        if theirs is _ABSENT or mine is _ABSENT:
            return f"{key}: {_ABSENT} {'in the checkpoint' if theirs is _ABSENT else 'here'}"
        if not isinstance(theirs, dict):
            return f"{key}: a {type(theirs).__name__} in the checkpoint, not a mapping"
        return key
    return f"{key}: {show(theirs)} in the checkpoint, {show(mine)} here"


def load_run_checkpoint(path: str | Path, run: Run, *, remedy: str | None = None,
                        needs: tuple[str, ...] = (), **expected: Any) -> dict[str, Any] | None:
    """The checkpoint at `path` (None when absent), refused unless it belongs to `run`.

    A checkpoint carries `run_hash` (and optionally other keys, e.g. the network's `name`);
    every key in `expected`, plus `run_hash == run.hash`, must match, and the keys `needs` (what
    the caller reads) must be there. `remedy`: what to do when the file is damaged or not this
    run's (default: delete it, for a run that resumes).
    """
    path = Path(path)
    if not path.is_file():
        return None
    state = read_checkpoint(path, weights_only=False, **({"remedy": remedy} if remedy else {}))
    remedy = remedy or "delete it or use another results root"
    if not isinstance(state, dict):
        raise RunError(f"{path} is not a checkpoint of this code (it holds a "
                       f"{type(state).__name__}); {remedy}")
    expected = {"run_hash": run.hash, **expected}
    wrong = {key: state.get(key) for key, value in expected.items() if state.get(key) != value}
    if wrong:
        raise RunError(f"{path} belongs to another run ({wrong} != {expected}); {remedy}")
    require_keys(state, path, needs, remedy)
    return state


def require_keys(state: dict[str, Any], path: str | Path, needs: tuple[str, ...], remedy: str,
                 *, kind: str = "") -> None:
    """A RunError naming the keys of `needs` that the checkpoint `state` (read from `path`)
    lacks: a key deleted by hand, or another version's file, instead of a KeyError later."""
    missing = [key for key in needs if key not in state]
    if missing:
        what = f"{kind} checkpoint" if kind else "checkpoint"
        raise RunError(f"{path} is not a whole {what} (no {', '.join(missing)}); {remedy}")
