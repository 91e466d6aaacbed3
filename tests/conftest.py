"""Shared fixtures: the real data in ../shared/data, temporary roots, offline settings."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real datasets beside the repository (PneumoniaMNIST, BrainTumor, OCT/Kvasir samples)."""
    if not (SHARED_DATA / "medmnist" / "pneumoniamnist.npz").is_file():
        pytest.skip(f"real data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture
def results_root(tmp_path: Path) -> Path:
    root = tmp_path / "results"
    root.mkdir()
    return root


@pytest.fixture(autouse=True)
def _no_data_root_leak(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests name their data root explicitly; a developer's DIA_DATA_ROOT must not leak in."""
    monkeypatch.delenv("DIA_DATA_ROOT", raising=False)
