"""bf16 against fp32, quick PneumoniaMNIST, seeds 0-4, on the 2-core Intel Xeon with AMX: the
figures of README "Measured so far" (bf16 row) and docs/MEASUREMENTS.md (bf16 on a CPU with AMX).

    .venv/bin/python results/device_sessions/2026-12-04_cpu_xeon/compare_bf16_fp32.py   (repo root)

Reads this folder's auc.csv (bf16 seeds 0-4, fp32 seeds 0 and 3-4) and the 2026-12-02 Xeon's
(fp32 seeds 1-2, on a Xeon of the same kind, which computes alike: the DDPM's logged losses are
equal). Prints each method's per-seed test AUCs, mean ± std (sample std, as the table), DIA - CSI
by seed, and bf16 - fp32 by seed with a paired t-test. Also prints the val - test AUC gap of every
DIA and CSI run in the run tarballs of results/device_sessions/ (README, "Do not read a val AUC
as a test AUC").
"""
import csv
import glob
import io
import tarfile
from pathlib import Path

import numpy as np
from scipy import stats

HERE = Path(__file__).resolve().parent
SESSIONS = HERE.parent


def aucs() -> dict[tuple[str, str, int], float]:
    """{(variant, method, seed): test AUC}, variant "bf16" or "fp32"."""
    out = {}
    for row in csv.DictReader(open(HERE / "auc.csv")):
        if row["metric"] == "auc":
            out[(row["variant"][:4], row["method"], int(row["seed"]))] = float(row["value"])
    for row in csv.DictReader(open(SESSIONS / "2026-12-02_cpu_xeon" / "auc.csv")):
        out.setdefault(("fp32", row["method"], int(row["seed"])), float(row["auc"]))
    return out


def val_test_gaps() -> list[tuple[float, str]]:
    """(val AUC - test AUC, where) of every DIA and CSI run's metrics.csv in the run tarballs."""
    gaps = []
    for tarball in sorted(glob.glob(str(SESSIONS / "*" / "*.tar.gz"))):
        with tarfile.open(tarball) as tar:
            for member in tar.getmembers():
                if not member.name.endswith("metrics.csv"):
                    continue
                rows = list(csv.DictReader(io.TextIOWrapper(tar.extractfile(member))))
                value = {r["metric"]: float(r["value"]) for r in rows
                         if r["method"] in ("dia", "csi")}
                if "auc" in value and "val_auc" in value:
                    where = f"{Path(tarball).parent.name}/{Path(tarball).name}:{member.name}"
                    gaps.append((value["val_auc"] - value["auc"], where))
    return gaps


def main() -> None:
    auc, seeds = aucs(), range(5)
    for method in ("dia", "csi"):
        for variant in ("fp32", "bf16"):
            values = np.array([auc[(variant, method, s)] for s in seeds])
            print(f"{method} {variant}: {np.round(values, 3)}  mean {values.mean():.3f} ± "
                  f"{values.std(ddof=1):.3f}")
        diff = np.array([auc[("bf16", method, s)] - auc[("fp32", method, s)] for s in seeds])
        test = stats.ttest_1samp(diff, 0.0)
        print(f"{method} bf16 - fp32 by seed: {np.round(diff, 3)}  mean {diff.mean():+.3f}, "
              f"paired t {test.statistic:.2f}, p {test.pvalue:.2f}")
    ahead = [auc[("bf16", "dia", s)] - auc[("bf16", "csi", s)] for s in seeds]
    print(f"bf16 DIA - CSI by seed: {np.round(ahead, 3)}")
    gaps = val_test_gaps()
    pneumonia = [g for g, where in gaps if "/pneumonia/" in where]
    synthetic = [g for g, where in gaps if "/synthetic/" in where]
    print(f"val - test AUC, {len(pneumonia)} PneumoniaMNIST runs: {min(pneumonia):.3f} to "
          f"{max(pneumonia):.3f}; {len(synthetic)} synthetic runs: {min(synthetic):.3f} to "
          f"{max(synthetic):.3f}")


if __name__ == "__main__":
    main()
