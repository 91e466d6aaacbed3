"""DIA and CSI as `quick` specifies them, PneumoniaMNIST seeds 0-5, on the 2-core CPU: one table.

    .venv/bin/python results/device_sessions/2026-12-02_cpu_avx2/collect.py R 6 [OUT]   (repo root)

R is the results root of the runs (`./run_all.sh --profile quick --datasets pneumonia --methods
dia,csi --seeds 6 --data-root ../shared/data --results-root R`; seeds 0-1 were trained on
2026-12-01, seeds 2-5 on 2026-12-02, all with one DDPM, seed 0, trained there on 2026-12-01).
The second argument is the number of seeds read (default 4, the first version of this record).
Writes into OUT (default: beside this file) `auc.csv` (one row per method and seed: test AUC with its 95 %
bootstrap interval, validation AUC, training seconds from the encoder's DONE, the commits of the
run's env.json, the machine) and `runs.tar.gz` (the run folders read, without checkpoints and
lock files), and prints the rows and each method's mean ± std with DIA − CSI paired by seed.
README "Measured so far" reads it. The AVX-512 records of the same day were written by it too:
`collect.py R 4 results/device_sessions/2026-12-02_cpu_avx512` (AMD EPYC) and
`collect.py R 3 results/device_sessions/2026-12-02_cpu_xeon` (Intel Xeon: seed 0 on
2026-12-02, seeds 1-2 on 2026-12-03 on its DDPM; first written with `R 1`, seed 0 only).
"""
import json
import sys
import tarfile
from pathlib import Path

import pandas as pd

from dia.config import load_config
from dia.results import read_run_env, run_commits
from dia.stages import stage_run_dir

root = Path(sys.argv[1])
num_seeds = int(sys.argv[2]) if len(sys.argv) > 2 else 4
here = Path(sys.argv[3]) if len(sys.argv) > 3 else Path(__file__).parent
rows, folders = [], [stage_run_dir(load_config("quick", dataset="pneumonia"), "diffusion", "ddpm",
                                   root)]
for seed in range(num_seeds):
    cfg = load_config("quick", dataset="pneumonia", seed=seed)
    for method in ("dia", "csi"):
        train, score = (stage_run_dir(cfg, stage, method, root) for stage in ("amplify", "evaluate"))
        if not (score / "DONE").is_file():
            raise SystemExit(f"{score} is not DONE: train and score it first (the command above)")
        metrics = pd.read_csv(score / "metrics.csv").set_index("metric")
        commits = dict.fromkeys(c for f in (train, score) for c in run_commits(read_run_env(f)))
        rows.append({"method": method, "seed": seed, "auc": metrics.at["auc", "value"],
                     "ci_low": metrics.at["auc", "ci_low"], "ci_high": metrics.at["auc", "ci_high"],
                     "val_auc": metrics.at["val_auc", "value"],
                     "train_seconds": json.loads((train / "DONE").read_text()).get(
                         "seconds_this_session"),
                     "commits": "+".join(commits), "device": read_run_env(score).get("device"),
                     "run_id": str(score.relative_to(root / "runs"))})
        folders += [train, score]
pd.DataFrame(rows).to_csv(here / "auc.csv", index=False)
with tarfile.open(here / "runs.tar.gz", "w:gz") as tar:
    for folder in folders:
        tar.add(folder, arcname=str(folder.relative_to(root)),
                filter=lambda info: None if "/checkpoints" in info.name
                or info.name.endswith("/.lock") else info)
table = pd.DataFrame(rows)
print(table.drop(columns=["run_id"]).to_string(index=False))
for metric in ("auc", "val_auc"):
    wide = table.pivot(index="seed", columns="method", values=metric)
    print(f"{metric}: " + ", ".join(f"{m} {wide[m].mean():.3f} ± {wide[m].std():.3f}" for m in wide)
          + f"; DIA - CSI {(wide['dia'] - wide['csi']).round(3).tolist()}, "
          f"mean {(wide['dia'] - wide['csi']).mean():+.3f}")
print(f"wrote {here / 'auc.csv'} and {here / 'runs.tar.gz'}")
