"""benchmarks/bench_amplify.py: the comparison with the reference code's epoch on an H100."""

from __future__ import annotations

from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_an_epoch_is_compared_with_the_reference_as_training_runs_it(load_script, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # the script imports gpu_util beside it
    bench = load_script("benchmarks/bench_amplify.py")
    out = {"dia_table": {"s_per_it": 0.01}, "dia": {"s_per_it": 0.05},
           "csi": {"s_per_it": 0.004}, "dissolve_table_build_images_per_s": 10_000}
    got = bench.vs_reference_gpu(out)
    assert got["dia_table_epoch_s"] == 0.38  # 38 iterations an epoch
    assert got["dia_table_speedup"] == [13.8, 16.0]  # 5.26 / 0.38 and 6.07 / 0.38
    assert got["dia_epoch_s"] == 1.9 and got["dia_speedup"] == [2.8, 3.2]
    assert got["csi_epoch_s"] == 0.152 and got["csi_speedup"] == [11.1, 11.4]
    assert got["dissolve_table_build_s"] == 17.0  # 1214 images x 2 flips x 70 t / 10k per s
    assert got["dia_24_epochs_with_table_build_s"] == 26.1  # 24 x 0.38 + 17.0
    assert got["dia_24_epochs_speedup"] == [4.8, 5.6]  # 24 x 5.26 / 26.12, 24 x 6.07 / 26.12
    assert got["meets_10x"]
    out["dia_table"]["s_per_it"] = 0.02  # 0.76 s an epoch: 6.9x, short of the bar
    assert not bench.vs_reference_gpu(out)["meets_10x"]
