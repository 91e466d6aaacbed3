"""The published smoke run of 2026-12-05 (this folder's smoke_run_all.log) against the one before
it: the figures of README "The table" (the smoke paragraph) and docs/MEASUREMENTS.md (the smoke
row of "What a run costs").

    .venv/bin/python results/device_sessions/2026-12-05_cpu_xeon/compare_smoke.py   (repo root)

Reads the smoke rows of results/tables/auc.csv as git holds them: at 573c358 (the AMD EPYC with
AVX2's run of 07815ff, the last commit before this Xeon's rows) and at the three commits that
published this Xeon's renderings (e633a81, 723219d, 4c0a3e0: the runs at 573c358, 47132d3 and
2567cb5). Prints the cells equal to every digit, each other cell's difference, the largest
difference per method, and whether the three Xeon runs gave the same AUCs.
"""
import io
import subprocess

import pandas as pd

BEFORE = "573c358"  # auc.csv with the AMD AVX2 smoke rows
XEON = ("e633a81", "723219d", "4c0a3e0")  # each published one smoke run of this Xeon
KEY = ["dataset", "method", "seed"]


def smoke_aucs(commit: str) -> pd.Series:
    text = subprocess.run(["git", "show", f"{commit}:results/tables/auc.csv"], check=True,
                          capture_output=True, text=True).stdout
    rows = pd.read_csv(io.StringIO(text))
    return rows[rows["profile"] == "smoke"].set_index(KEY)["auc"].sort_index()


def main() -> None:
    old = smoke_aucs(BEFORE)
    runs = [smoke_aucs(commit) for commit in XEON]
    same = all(run.equals(runs[0]) for run in runs[1:])
    print(f"the Xeon runs of {', '.join(XEON)}: {len(runs[0])} smoke AUCs, "
          f"{'the same to every digit' if same else 'DIFFERENT'}")
    diff = (runs[-1] - old).rename("new - old")
    table = pd.concat([old.rename(f"AMD AVX2 ({BEFORE})"), runs[-1].rename(f"Xeon ({XEON[-1]})"),
                       diff], axis=1)
    print(table.to_string(float_format=lambda x: f"{x:.6f}"))
    equal = diff[diff == 0]
    print(f"\nequal to every digit: {len(equal)} of {len(diff)}: "
          + ", ".join(f"{d}/{m}" for d, m, _ in equal.index))
    print("largest |difference| per method:")
    print(diff.abs().groupby(level="method").max().to_string(float_format=lambda x: f"{x:.4f}"))


if __name__ == "__main__":
    main()
