"""benchmarks/gpu_util.py: the GPU utilisation sampler the GPU benchmarks report beside figures."""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import torch


def _gpu_util():
    path = Path(__file__).parents[1] / "benchmarks" / "gpu_util.py"
    spec = importlib.util.spec_from_file_location("gpu_util", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.GpuUtilisation


def test_cpu_device_reports_no_utilisation():
    with _gpu_util()("cpu") as util:
        time.sleep(0.05)
    assert util.summary() == {"gpu_util_pct": None, "gpu_util_samples": 0}


def test_samples_are_averaged_while_the_block_runs(monkeypatch):
    readings = iter([40, 80] + [60] * 1000)
    monkeypatch.setattr(torch.cuda, "utilization", lambda device=None: next(readings))
    with _gpu_util()("cuda", interval=0.01) as util:
        time.sleep(0.2)
    n = util.summary()["gpu_util_samples"]
    time.sleep(0.05)
    assert n >= 3 and len(util.samples) == n  # no sampling after the block
    assert util.samples[0] == 80  # the first reading only checks that NVML answers
    assert util.mean == round(sum(util.samples) / n, 1)


def test_unreadable_nvml_is_reported_not_raised(monkeypatch):
    def broken(device=None):
        raise ModuleNotFoundError("pynvml")

    monkeypatch.setattr(torch.cuda, "utilization", broken)
    with _gpu_util()("cuda") as util:
        pass
    assert util.mean is None and "pynvml" in util.summary()["gpu_util_error"]
