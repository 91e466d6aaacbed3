"""benchmarks/gpu_util.py: the GPU utilisation sampler the GPU benchmarks report beside figures."""

from __future__ import annotations

import time

import pytest
import torch


@pytest.fixture
def gpu_util(load_script):
    return load_script("benchmarks/gpu_util.py").GpuUtilisation


def test_cpu_device_reports_no_utilisation(gpu_util):
    with gpu_util("cpu") as util:
        time.sleep(0.05)
    assert util.summary() == {"gpu_util_pct": None, "gpu_util_samples": 0}


def test_samples_are_averaged_while_the_block_runs(monkeypatch, gpu_util):
    readings = iter([40, 80] + [60] * 1000)
    monkeypatch.setattr(torch.cuda, "utilization", lambda device=None: next(readings))
    with gpu_util("cuda", interval=0.01) as util:
        time.sleep(0.2)
    n = util.summary()["gpu_util_samples"]
    time.sleep(0.05)
    assert n >= 3 and len(util.samples) == n  # no sampling after the block
    assert util.samples[0] == 80  # the first reading only checks that NVML answers
    assert util.mean == round(sum(util.samples) / n, 1)


def test_unreadable_nvml_is_reported_not_raised(monkeypatch, gpu_util):
    def broken(device=None):
        raise ModuleNotFoundError("pynvml")

    monkeypatch.setattr(torch.cuda, "utilization", broken)
    with gpu_util("cuda") as util:
        pass
    assert util.mean is None and "pynvml" in util.summary()["gpu_util_error"]
