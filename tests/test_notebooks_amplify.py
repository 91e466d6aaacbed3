"""notebooks/20_train_amplifier and 30_evaluate run under papermill on the smoke profile."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
TRAIN = REPO / "notebooks" / "20_train_amplifier.ipynb"
EVALUATE = REPO / "notebooks" / "30_evaluate.ipynb"
PARAMETERS = {"dataset", "method", "profile", "seed", "results_root", "data_root"}


@pytest.mark.parametrize("notebook", [TRAIN, EVALUATE], ids=lambda p: p.stem)
def test_notebook_is_thin_and_parameterised(notebook):
    cells = json.loads(notebook.read_text())["cells"]
    assert cells[0]["cell_type"] == "markdown" and cells[-1]["cell_type"] == "markdown"
    params = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(params) == 1
    lines = "".join(params[0]["source"]).splitlines()
    assert {line.split("=")[0].strip() for line in lines if "=" in line} == PARAMETERS
    code = [c for c in cells if c["cell_type"] == "code"]
    assert all(not c.get("outputs") for c in code)
    assert not any(line.lstrip().startswith(("def ", "class ", "for ", "try:"))
                   for c in code for line in "".join(c["source"]).splitlines())


@pytest.mark.notebook
def test_notebooks_run_on_smoke(tmp_path, run_notebook):
    results = tmp_path / "results"
    # CSI keeps the test short; DIA's notebooks run under papermill in test_run_all's smoke suite,
    # its extra path (DDPM + dissolver) is checked in test_train_encoder
    parameters = {"dataset": "synthetic", "method": "csi", "profile": "smoke", "seed": 0,
                  "results_root": str(results), "data_root": ""}
    for notebook in (TRAIN, EVALUATE):
        run_notebook(notebook.stem, **parameters)
    for stage in ("amplify", "evaluate"):
        runs = list((results / "runs" / stage / "synthetic" / "csi").glob("s0-*"))
        assert len(runs) == 1 and (runs[0] / "DONE").is_file()
    figures = sorted(p.name for p in (results / "figures").glob("*.png"))
    assert figures == ["extremes_synthetic_csi_smoke_s0.png", "roc_synthetic_csi_smoke_s0.png",
                       "scores_synthetic_csi_smoke_s0.png"]
    executed = json.loads((tmp_path / EVALUATE.name).read_text())
    outputs = [o for c in executed["cells"] for o in c.get("outputs", [])]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 3
