"""The reference U-Net layout against ours, DIA seeds 0-2, quick PneumoniaMNIST, on the Xeon.

    .venv/bin/python results/device_sessions/2026-12-03_cpu_xeon/compare_layouts.py

Reads the records as committed: the reference layout's evaluate runs in this folder's
runs.tar.gz (seed 0, arch_seed0.py) and runs_seeds12.tar.gz (seeds 1-2, arch_seeds12.py), ours
in ../2026-12-02_cpu_xeon/auc.csv. Prints each seed's test and val AUC, the paired differences
and the means (docs/MEASUREMENTS.md *Ablations*, DECISIONS.md DIA 20).
"""

import csv
import io
import statistics
import tarfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def reference_layout() -> dict[int, tuple[float, float]]:
    aucs = {}
    for archive in ("runs.tar.gz", "runs_seeds12.tar.gz"):
        with tarfile.open(HERE / archive) as tar:
            for member in tar.getmembers():
                if "runs/evaluate/" in member.name and member.name.endswith("/metrics.csv"):
                    text = tar.extractfile(member).read().decode()
                    rows = {r["metric"]: r for r in csv.DictReader(io.StringIO(text))}
                    aucs[int(rows["auc"]["seed"])] = (float(rows["auc"]["value"]),
                                                      float(rows["val_auc"]["value"]))
    return aucs


def ours() -> dict[int, tuple[float, float]]:
    with open(HERE.parent / "2026-12-02_cpu_xeon" / "auc.csv") as f:
        return {int(r["seed"]): (float(r["auc"]), float(r["val_auc"]))
                for r in csv.DictReader(f) if r["method"] == "dia"}


ref, own = reference_layout(), ours()
seeds = sorted(ref)
print("seed  reference test/val  ours test/val  paired test/val")
for s in seeds:
    print(f"{s:>4}  {ref[s][0]:.3f} / {ref[s][1]:.3f}     {own[s][0]:.3f} / {own[s][1]:.3f}  "
          f"{ref[s][0] - own[s][0]:+.3f} / {ref[s][1] - own[s][1]:+.3f}")
for name, aucs in (("reference", ref), ("ours", own)):
    test = [aucs[s][0] for s in seeds]
    print(f"{name}: test {statistics.mean(test):.3f} ± {statistics.stdev(test):.3f}")
for i, split in enumerate(("test", "val")):
    paired = statistics.mean(ref[s][i] - own[s][i] for s in seeds)
    print(f"paired mean, {split}: {paired:+.3f}")
