"""notebooks/40_ddad.ipynb runs under papermill on the smoke profile (synthetic data)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
NOTEBOOK = REPO / "notebooks" / "40_ddad.ipynb"


def test_notebook_is_thin_and_parameterised():
    nb = json.loads(NOTEBOOK.read_text())
    cells = nb["cells"]
    assert cells[0]["cell_type"] == "markdown" and cells[-1]["cell_type"] == "markdown"
    params = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(params) == 1
    lines = "".join(params[0]["source"]).splitlines()
    names = {line.split("=")[0].strip() for line in lines if "=" in line}
    assert names == {"dataset", "backbone", "profile", "seed", "results_root", "data_root"}
    assert all(not c.get("outputs") for c in cells if c["cell_type"] == "code")


@pytest.mark.notebook
def test_notebook_runs_on_smoke(tmp_path, run_notebook):
    out = run_notebook(NOTEBOOK.stem, dataset="synthetic", backbone="ae", profile="smoke", seed=0,
                       results_root=str(tmp_path / "results"), data_root="")
    runs = list((tmp_path / "results" / "runs" / "ddad" / "synthetic" / "ddad-ae").glob("s0-*"))
    assert len(runs) == 1 and (runs[0] / "DONE").is_file()
    executed = json.loads(out.read_text())
    outputs = [o for c in executed["cells"] for o in c.get("outputs", [])]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 2  # histograms and the example maps
