"""`./run_all.sh --profile smoke --datasets synthetic` end to end, in a temporary results root."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import nbformat
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parent.parent


def _run_all(results_root: Path, *extra: str) -> tuple[subprocess.CompletedProcess, float]:
    start = time.monotonic()
    out = subprocess.run(
        ["./run_all.sh", "--profile", "smoke", "--datasets", "synthetic",
         "--results-root", str(results_root), *extra],
        cwd=REPO, capture_output=True, text=True, timeout=1800,
    )
    return out, time.monotonic() - start


@pytest.mark.notebook
@pytest.mark.slow
def test_smoke_suite_renders_every_notebook_and_skips_on_the_second_call(tmp_path):
    root = tmp_path / "results"
    first, first_s = _run_all(root)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    from dia.notebook_jobs import kernel_config

    if kernel_config():  # pyzmq has CurveZMQ: the kernels' sockets are encrypted, no warning
        assert "without encryption" not in first.stdout + first.stderr
    rendered = sorted((root / "notebooks").glob("*.ipynb"))
    names = {p.name for p in rendered}
    for name in ("10_train_diffusion-synthetic-smoke.ipynb", "15_dissolving_gallery-synthetic-smoke.ipynb",
                 "20_train_amplifier-synthetic-dia-smoke-s0.ipynb",
                 "30_evaluate-synthetic-csi-smoke-s0.ipynb", "40_ddad-synthetic-ddad-aeu-smoke-s0.ipynb",
                 "45_peers-synthetic-patchcore-smoke-s0.ipynb",
                 "90_auc_table.ipynb"):
        assert name in names
    for path in rendered:  # rendered without error
        assert not nbformat.read(path, as_version=4).metadata["papermill"]["exception"], path
    table = pd.read_csv(root / "tables" / "auc.csv")
    ours = table[(table["source"] == "re-run") & (table["dataset"] == "synthetic")]
    assert {"DIA", "CSI", "DDAD-ASR", "GANomaly"} <= set(ours["method"])
    assert (root / "figures" / "dissolving_synthetic_smoke.png").is_file()

    second, second_s = _run_all(root)
    assert second.returncode == 0
    # everything is skipped but the table, which is rebuilt on every call
    assert f"finished: 1 ran, {len(rendered) - 1} skipped" in second.stdout
    assert second.stdout.count("done already, skipped") == len(rendered) - 1
    assert second_s < 0.5 * first_s

    # called from another folder, a failing job's line names its paths from there (the job runs
    # in dia.notebook_jobs, which reads that folder from dia.driver_paths, as the driver does)
    csi = root / "runs" / "amplify" / "synthetic" / "csi"
    from dia.train_encoder import CHECKPOINT  # the one evaluate loads

    next(csi.glob(f"s0-*/checkpoints/{CHECKPOINT}")).write_bytes(b"not a checkpoint")
    shutil.rmtree(next((root / "runs" / "evaluate" / "synthetic" / "csi").glob("s0-*")))
    third = subprocess.run(
        [str(REPO / "run_all.sh"), "--profile", "smoke", "--datasets", "synthetic", "--methods",
         "csi", "--results-root", "results"], cwd=tmp_path, capture_output=True, text=True,
        timeout=600)
    assert third.returncode == 1, third.stdout[-3000:] + third.stderr[-3000:]
    failed = next(line for line in third.stdout.splitlines() if "FAILED after" in line)
    assert "delete the run folder results/runs/amplify/synthetic/csi/s0-" in failed
    assert "(see results/notebooks/.failed/30_evaluate-synthetic-csi-smoke-s0.ipynb)" in failed
    assert str(tmp_path) not in third.stdout


def test_relative_roots_are_read_from_where_run_all_is_called(tmp_path, monkeypatch):
    (tmp_path / "data1").mkdir()
    monkeypatch.delenv("DIA_DATA_ROOT", raising=False)
    out = subprocess.run(
        [str(REPO / "run_all.sh"), "--plan-only", "--profile", "smoke", "--datasets", "synthetic",
         "--results-root", "res", "--data-root", "data1"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]  # data1 is a folder here
    assert "-> res/notebooks/" in out.stdout  # shown from where it was called
    assert not (REPO / "res").exists()  # not res/ in the repository
    shadow = tmp_path / "dia"  # a dia/ (or yaml.py) of the caller's folder shadows nothing
    shadow.mkdir()
    (shadow / "__init__.py").write_text("raise SystemExit('the caller folder shadowed dia')")
    again = subprocess.run(out.args, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
