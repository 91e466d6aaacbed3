"""The `epoch_draws` comparison of docs/MEASUREMENTS.md, read from the two records alone.

    .venv/bin/python results/device_sessions/2026-12-04_cpu_avx2/epoch_draws_table.py

Fresh draws (`quick` as specified): the evaluation runs of the 2026-12-02 AVX2 record (`auc.csv`,
which `collect.py` wrote from the run folders in its `runs.tar.gz`). Replayed draws
(`amplify.replay_epoch_draws: true`): the `metrics.csv` of every evaluation run in this record's
`epoch_draws_runs.tar.gz`, trained by `epoch_draws.py`. Prints, per method, the test and
validation AUC of every seed that has both cells, the paired difference (replayed − fresh) and
the means, as a Markdown table.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
FRESH = HERE.parent / "2026-12-02_cpu_avx2" / "auc.csv"
REPLAYED = HERE / "epoch_draws_runs.tar.gz"


def replayed_aucs() -> pd.DataFrame:
    """method, seed, auc, val_auc of each replayed evaluation run (its config says replay)."""
    rows = []
    with tarfile.open(REPLAYED) as tar:
        for member in tar.getmembers():
            if not (member.name.startswith("runs/evaluate/") and member.name.endswith("/metrics.csv")):
                continue
            config = tar.extractfile(member.name.replace("metrics.csv", "config.yaml")).read()
            assert b"replay_epoch_draws: true" in config, f"{member.name}: not a replayed run"
            metrics = pd.read_csv(io.BytesIO(tar.extractfile(member).read()))
            value = metrics.set_index("metric")["value"]
            rows.append({"method": metrics["method"].iat[0], "seed": int(metrics["seed"].iat[0]),
                         "auc": value["auc"], "val_auc": value["val_auc"]})
    return pd.DataFrame(rows)


def line(method: str, label: str, r) -> str:
    return (f"| {method.upper()} | {label} | {r.auc_fresh:.3f} ({r.val_auc_fresh:.3f}) | "
            f"{r.auc_replayed:.3f} ({r.val_auc_replayed:.3f}) | "
            f"{r.auc_diff:+.3f} ({r.val_auc_diff:+.3f}) |")


def main() -> None:
    fresh = pd.read_csv(FRESH)[["method", "seed", "auc", "val_auc"]]
    both = fresh.merge(replayed_aucs(), on=["method", "seed"], suffixes=("_fresh", "_replayed"))
    for split in ("auc", "val_auc"):
        both[f"{split}_diff"] = both[f"{split}_replayed"] - both[f"{split}_fresh"]
    print("| method | seed | fresh: test (val) | replayed: test (val) | replayed − fresh: test (val) |")
    print("|---|---|---|---|---|")
    for method in ("dia", "csi"):
        rows = both[both["method"] == method].sort_values("seed")
        for r in rows.itertuples():
            print(line(method, str(r.seed), r))
        print(line(method, f"mean of {len(rows)}", rows.mean(numeric_only=True)))


if __name__ == "__main__":
    main()
