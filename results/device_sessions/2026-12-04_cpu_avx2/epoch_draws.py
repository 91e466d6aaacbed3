"""The replayed cells of the `epoch_draws` ablation (DECISIONS.md DIA 21), one after the other.

    OMP_NUM_THREADS=1 PYTHONPATH=. .venv/bin/python \
        results/device_sessions/2026-12-04_cpu_avx2/epoch_draws.py R ../shared/data 0 1

R is a results root that holds (or will hold) the profile's DDPM; the fresh cells are the
profile's own runs (`./run_all.sh --profile quick --datasets pneumonia --methods dia,csi
--results-root R --seeds 2`), so only the cells with `amplify.replay_epoch_draws` are trained and
scored here, CSI before DIA within a seed (CSI needs no DDPM). Prints each cell's test and
validation AUC as it finishes; `dia.ablations.run_ablations(..., which=["epoch_draws"],
train=False)` reads the whole grid back.
"""

from __future__ import annotations

import json
import sys
import time

from dia.ablations import cells, train_and_score


def main(results_root: str, data_root: str, seeds: list[int]) -> None:
    grid = [(row, cfg) for row, cfg in cells("pneumonia", "quick", seeds=max(seeds) + 1,
                                              which=["epoch_draws"])
            if json.loads(row["overrides"]) and row["seed"] in seeds]
    grid.sort(key=lambda item: (item[0]["seed"], item[0]["method"] != "csi"))
    for row, cfg in grid:
        tic = time.perf_counter()
        aucs = train_and_score(cfg, row["method"], results_root=results_root, data_root=data_root)
        print(f"{row['variant']}, seed {row['seed']}: auc {aucs['auc']:.4f}, val_auc "
              f"{aucs['val_auc']:.4f} ({time.perf_counter() - tic:.0f} s)", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], [int(s) for s in sys.argv[3:]])
