"""Make a notebook papermill just rendered fit to publish: readable outputs, no machine paths.

A training cell's progress bar reaches the notebook as hundreds of stream outputs, each a
carriage-return redraw of the bar; a reader of the rendering (GitHub, nbviewer, Jupyter) wants
its last state. `tidy_outputs` merges consecutive stream outputs of one cell (stdout and stderr
apart) and keeps what a terminal would show after each carriage return, as nbconvert's
CoalesceStreamsPreprocessor does, and drops tqdm's "IProgress not found" warning (a kernel
without ipywidgets: the bar falls back to text, which is what we want). Nothing else changes:
results, figures and every other line a cell printed stay as they were.

    python -m dia.rendering results/notebooks/*.ipynb     # tidy renderings in place

`publishable` is what the suite runs on every notebook before it counts as rendered: the tidying
and the repository's absolute paths written relative to it.
"""

from __future__ import annotations

import re
import sys
import warnings
from pathlib import Path

CARRIAGE_RETURN = re.compile(r".*\r(?=[^\r\n])")  # a line's text before its last redraw
# What is left at a line's end after its last redraw: a bar's closing "\r" before its newline,
# or a bar that cleared itself (leave=False: spaces, then "\r") at the very end.
TRAILING_RETURN = re.compile(r"[ \t]*\r+(?=\n|$)")
# tqdm.auto in a kernel without ipywidgets: the warning line and the import line it quotes.
IPROGRESS_WARNING = re.compile(
    r"[^\n]*TqdmWarning: IProgress not found[^\n]*\n(  from \.[^\n]*\n)?")


def tidy_outputs(notebook: dict) -> dict:
    """`notebook` (nbformat JSON as a dict) with each cell's stream outputs coalesced; in place."""
    for cell in notebook.get("cells", []):
        outputs = cell.get("outputs")
        if not outputs:
            continue
        merged: list[dict] = []
        for output in outputs:
            last = merged[-1] if merged else None
            if (output.get("output_type") == "stream" and last is not None
                    and last.get("output_type") == "stream"
                    and last.get("name") == output.get("name")):
                last["text"] = _text(last) + _text(output)
            else:
                merged.append(output)
        kept = []
        for output in merged:
            if output.get("output_type") == "stream":
                text = CARRIAGE_RETURN.sub("", IPROGRESS_WARNING.sub("", _text(output)))
                text = TRAILING_RETURN.sub("", text)
                if not text.strip():
                    continue
                output["text"] = text
            kept.append(output)
        cell["outputs"] = kept
    return notebook


def _text(output: dict) -> str:
    text = output.get("text", "")
    return "".join(text) if isinstance(text, list) else text


def tidy_file(path: str | Path) -> bool:
    """Tidy a rendered notebook in place; True when it changed."""
    path = Path(path)
    text = path.read_text()
    return _write_if_changed(path, text, _tidied(text))


def publishable(notebook: Path, *, output_path: Path, repo: Path) -> None:
    """Make papermill's output `notebook` ready to be moved to `output_path`: paths inside `repo`
    written relative to it, the place it is moved to named instead of the one papermill recorded,
    and outputs tidied."""
    text = notebook.read_text()
    clean = text.replace(f'"{notebook}"', f'"{output_path}"')
    clean = clean.replace(f"{repo}/", "").replace(str(repo), ".")
    try:
        tidied = _tidied(clean)
    except ValueError as err:  # nbformat cannot read it: the run still counts, untidied
        warnings.warn(f"{notebook}: outputs left as they are ({err})", stacklevel=2)
        tidied = clean
    _write_if_changed(notebook, text, tidied)


def _tidied(text: str) -> str:
    import nbformat

    notebook = tidy_outputs(nbformat.reads(text, as_version=nbformat.NO_CONVERT))
    return nbformat.writes(notebook)  # as papermill writes it: no newline at the end


def _write_if_changed(path: Path, before: str, after: str) -> bool:
    if after != before:
        path.write_text(after)
    return after != before


def main(argv: list[str] | None = None) -> int:
    paths = sys.argv[1:] if argv is None else argv
    if not paths:
        print("usage: python -m dia.rendering NOTEBOOK.ipynb ...", file=sys.stderr)
        return 2
    for path in paths:
        if not Path(path).is_file():
            print(f"error: {path} is not a file", file=sys.stderr)
            return 1
        before = Path(path).stat().st_size
        changed = tidy_file(path)
        print(f"{path}: {'tidied, ' if changed else 'unchanged, '}"
              f"{before / 1024:.0f} -> {Path(path).stat().st_size / 1024:.0f} KiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
