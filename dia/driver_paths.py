"""How the driver (`dia.suite`) names paths. The driver works in the repository, the notebooks'
working directory, and passes them paths relative to it (`repo_relative`), so rendered notebooks
name no machine's absolute paths. To the user it names paths from the folder it was called from
(`shown`, `paths_as_shown`), which `dia.suite.main` records with `set_caller_dir` before it moves
into the repository, and which each job process of `--jobs N` or Slurm records again
(`dia.executors._job_entry`). `REPO` is imported by name elsewhere: a test that patches it here
patches only what this module computes."""

from __future__ import annotations

import os
import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

_caller_dir = REPO  # where the driver was called from


def set_caller_dir(path: str | Path) -> None:
    """Record the folder the driver was called from (`shown` names paths from there)."""
    global _caller_dir
    _caller_dir = Path(path)


def caller_dir() -> Path:
    """The folder the driver was called from (the repository until `set_caller_dir`)."""
    return _caller_dir


def repo_relative(path: Path) -> Path:
    """`path` (relative to the working directory, or absolute) relative to the repository.

    A symlink is kept as named (``../shared/data`` where ``../shared`` links elsewhere), unless
    the path climbs out of one with ``..``: the operating system reads ``link/..`` as the parent
    of the link's target, so such a path is passed resolved.
    """
    absolute = path if path.is_absolute() else Path.cwd() / path
    as_named = Path(os.path.relpath(os.path.normpath(absolute), REPO))
    if (REPO / as_named).resolve() == absolute.resolve():
        return as_named
    return Path(os.path.relpath(absolute.resolve(), REPO))


def shown(path: str | Path) -> str:
    """`path` (repository-relative, or absolute) for the terminal: relative to the folder the
    driver was called from when inside it, else absolute; links kept as named, as
    `repo_relative` keeps them. A repository-relative path reads oddly (``../../tmp/x``) for a
    folder elsewhere."""
    absolute = Path(os.path.normpath(REPO / path))
    caller = Path(os.path.normpath(_caller_dir))
    return str(absolute.relative_to(caller)) if absolute.is_relative_to(caller) else str(absolute)


# the end of a path name in a message: a space, a quote or closing mark, or a full stop ending the
# sentence (not the third dot of "...")
_PATH_END = r"""(?=$|[\s'"`),;:\]>!?]|(?<!\.)\.(?:\s|$))"""


def paths_as_shown(text: str, roots) -> str:
    """`text` with each path name under one of `roots` (as the driver and the notebooks name
    them: repository-relative, ``../x``, or absolute) written as `shown` writes it. Only whole
    path names: a root ``..`` leaves the ``...`` of a message alone, and a root inside the
    repository is replaced only where a path goes on under it (``results/x``, not the word)."""
    names = sorted({str(r) for r in roots if str(r) not in ("", ".")}, key=len, reverse=True)
    if not names:
        return text
    below = r"""/[^\s'"`),;:\]>!?]*"""
    patterns = [re.escape(n) + (f"(?:{below})?" if n.startswith(("..", "/")) else below)
                for n in names]
    as_path = re.compile(rf"(?<![\w./-])(?:{'|'.join(patterns)}){_PATH_END}")
    return as_path.sub(lambda m: shown(m.group(0)) + "/" * m.group(0).endswith("/"), text)
