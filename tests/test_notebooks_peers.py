"""notebooks/45_peers.ipynb runs under papermill on the smoke profile (synthetic data)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
NOTEBOOK = REPO / "notebooks" / "45_peers.ipynb"


def test_notebook_is_thin_and_parameterised():
    nb = json.loads(NOTEBOOK.read_text())
    cells = nb["cells"]
    assert cells[0]["cell_type"] == "markdown" and cells[-1]["cell_type"] == "markdown"
    params = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(params) == 1 and cells.index(params[0]) == 1
    lines = [line for line in "".join(params[0]["source"]).splitlines() if "=" in line]
    values = {line.split("=")[0].strip(): line.split("=", 1)[1].strip() for line in lines}
    assert values == {"dataset": '"synthetic"', "method": '"ganomaly"', "profile": '"smoke"',
                      "seed": "0", "results_root": '"results"', "data_root": '""'}
    assert all(not c.get("outputs") and not c.get("execution_count")
               for c in cells if c["cell_type"] == "code")


@pytest.mark.notebook
def test_notebook_runs_on_smoke(tmp_path, run_notebook):
    """The default method (GANomaly); PatchCore's run is covered by tests/test_peers.py."""
    method = "ganomaly"
    out = run_notebook(NOTEBOOK.stem, dataset="synthetic", method=method, profile="smoke", seed=0,
                       results_root=str(tmp_path), data_root="")
    runs = list((tmp_path / "runs" / "peers" / "synthetic" / method).glob("s0-*"))
    assert len(runs) == 1 and (runs[0] / "DONE").is_file()
    assert (runs[0] / "scores.csv").is_file() and (runs[0] / "metrics.csv").is_file()
    executed = json.loads(out.read_text())
    images = [o for c in executed["cells"] for o in c.get("outputs", [])
              if "image/png" in o.get("data", {})]
    assert len(images) == 1  # the score histogram
