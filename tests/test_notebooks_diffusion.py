"""notebooks/10_train_diffusion and 15_dissolving_gallery run under papermill (smoke profile)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
TRAIN = REPO / "notebooks" / "10_train_diffusion.ipynb"
GALLERY = REPO / "notebooks" / "15_dissolving_gallery.ipynb"
PARAMETERS = {"dataset", "profile", "seed", "results_root", "data_root"}


@pytest.mark.parametrize("notebook", [TRAIN, GALLERY], ids=lambda p: p.stem)
def test_notebook_is_thin_and_parameterised(notebook):
    cells = json.loads(notebook.read_text())["cells"]
    assert cells[0]["cell_type"] == "markdown" and cells[-1]["cell_type"] == "markdown"
    assert "x̂₀ = √(1/ᾱₜ)·x − √(1/ᾱₜ − 1)·ε_θ(x, t)" in "".join(cells[0]["source"])
    params = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(params) == 1 and cells[1] is params[0]
    lines = "".join(params[0]["source"]).splitlines()
    assert {line.split("=")[0].strip() for line in lines if "=" in line} == PARAMETERS
    code = [c for c in cells if c["cell_type"] == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code)
    assert not any(line.lstrip().startswith(("def ", "class ", "for ", "try:"))
                   for c in code for line in "".join(c["source"]).splitlines())


@pytest.mark.notebook
def test_notebooks_run_on_smoke(tmp_path, run_notebook):
    results = tmp_path / "results"
    parameters = {"dataset": "synthetic", "profile": "smoke", "seed": 0,
                  "results_root": str(results), "data_root": ""}
    for notebook in (TRAIN, GALLERY):
        run_notebook(notebook.stem, **parameters)
    runs = list((results / "runs" / "diffusion" / "synthetic" / "ddpm").glob("s0-*"))
    assert len(runs) == 1 and (runs[0] / "DONE").is_file()
    assert (runs[0] / "checkpoints" / "last.pt").is_file()
    figures = sorted(p.name for p in (results / "figures").glob("*.png"))
    assert figures == ["ddpm_loss_synthetic_smoke.png", "ddpm_noise_error_synthetic_smoke.png",
                       "dissolving_synthetic_smoke.png"]
    assert (results / "figures" / "dissolving_synthetic_smoke.png").stat().st_size < 2 * 2**20
    executed = {nb: json.loads((tmp_path / nb.name).read_text()) for nb in (TRAIN, GALLERY)}
    for notebook, figures in ((TRAIN, 2), (GALLERY, 1)):  # TRAIN: loss curve, noise error
        images = [o for c in executed[notebook]["cells"] for o in c.get("outputs", [])
                  if "image/png" in o.get("data", {})]
        assert len(images) == figures, notebook.name
    shown = "".join("".join(o.get("data", {}).get("text/plain", ""))
                    for c in executed[TRAIN]["cells"] for o in c.get("outputs", []))
    assert "'split': 'train'" in shown and "'split': 'val'" in shown  # synthetic has a val split
