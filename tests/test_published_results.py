"""The published run committed under results/: small files, no machine paths, no checkpoints, no errors."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
MAX_BYTES = 2 * 1024 * 1024
TEXT_SUFFIXES = {".ipynb", ".md", ".csv", ".tex", ".json", ".jsonl", ".txt", ".yaml", ".log", ".py"}
CHECKPOINT_SUFFIXES = {".pt", ".pth", ".ckpt", ".safetensors", ".npz", ".npy", ".bin"}


def _published_files() -> list[Path]:
    """The files under results/ that git tracks or would add (ignored run folders left out)."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "results"],
            cwd=REPO, capture_output=True, text=True, check=True,
        ).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: the published set is what git tracks")
    return [REPO / name for name in listed if (REPO / name).is_file()]


def test_published_files_are_small_and_hold_no_checkpoints():
    files = _published_files()
    too_big = [f"{p.relative_to(REPO)} ({p.stat().st_size / 2**20:.1f} MiB)"
               for p in files if p.stat().st_size >= MAX_BYTES]
    weights = [str(p.relative_to(REPO)) for p in files if p.suffix in CHECKPOINT_SUFFIXES]
    assert not too_big, f"published files must stay under 2 MiB: {too_big}"
    assert not weights, f"checkpoints or arrays must not be committed: {weights}"


def test_published_files_name_no_path_of_this_machine():
    machine_paths = {f"{REPO}/", "/tmp/"}
    if REPO.parent != Path(REPO.anchor):  # the folder beside the repo (../shared) too
        machine_paths.add(f"{REPO.parent}/")
    offenders = []
    for path in _published_files():
        if path.suffix not in TEXT_SUFFIXES:
            continue
        text = path.read_text(errors="replace")
        found = sorted(m for m in machine_paths if m in text)
        if found:
            offenders.append(f"{path.relative_to(REPO)}: {found}")
    assert not offenders, f"use repo-relative paths in published files: {offenders}"


def test_published_notebooks_ran_without_errors():
    notebooks = [p for p in _published_files() if p.suffix == ".ipynb"]
    failed = []
    for path in notebooks:
        cells = json.loads(path.read_text())["cells"]
        if any(out.get("output_type") == "error" for c in cells for out in c.get("outputs", [])):
            failed.append(str(path.relative_to(REPO)))
    assert not failed, f"published notebooks with an error output: {failed}"


def test_published_notebooks_are_named_with_their_profile_and_tidied():
    """A rendering's name says the profile it ran (a smoke and a quick run do not share a file),
    and its progress bars are at their last state (`dia.rendering`, which the suite applies)."""
    import copy
    import re

    import nbformat

    from dia.rendering import tidy_outputs

    wrong, untidy = [], []
    for path in (p for p in _published_files() if p.suffix == ".ipynb"):
        notebook = nbformat.reads(path.read_text(), as_version=nbformat.NO_CONVERT)  # text joined
        injected = [c for c in notebook["cells"]
                    if "injected-parameters" in c.get("metadata", {}).get("tags", [])]
        source = "".join(injected[0]["source"]) if injected else ""
        found = re.search(r'^profile = "(\w+)"', source, re.M)
        if found and not re.search(rf"-{found.group(1)}(-s\d+)?$", path.stem):
            wrong.append(f"{path.name} ran {found.group(1)}")
        if tidy_outputs(copy.deepcopy(notebook)) != notebook:
            untidy.append(path.name)
    assert not wrong, f"rendered notebooks named without the profile they ran: {wrong}"
    assert not untidy, f"run `python -m dia.rendering` on: {untidy}"


def test_published_runs_keep_their_folder_names_under_the_current_code():
    # Each run of the published table is named by the hash of its config. A field added to the
    # config since must not enter the hash at its default (dia.config.ADDED_FIELDS), or the
    # table, the rendered notebooks and every user's finished runs would lose their folders.
    import pandas as pd

    from dia.config import load_config
    from dia.results import parse_run_id, run_id_of
    from dia.stages import stage_run_dir

    table = pd.read_csv(REPO / "results" / "tables" / "auc.csv")
    rows = table[table["run_id"].notna()]
    assert len(rows) >= 40
    for row in rows.itertuples():
        stage, dataset, method, seed = parse_run_id(row.run_id)
        cfg = load_config(row.profile, dataset=dataset, seed=seed)
        assert run_id_of(stage_run_dir(cfg, stage, method, "results")) == row.run_id, row
