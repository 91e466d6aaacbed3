"""bf16 autocast on the CPU (`dissolve.cpu_bf16`, `diffusion.cpu_bf16`): time and AUC of quick DIA.

PneumoniaMNIST, `quick`, seeds 0 and 1, on the 2-core Intel Xeon with AMX (2026-12-03). Run in a clone
of the repository at 60d3f71 (the commit that added the two fields), from the clone's root, with
run_all.sh's environment variables and `R` a results root holding the published-config fp32 DDPM
(runs/diffusion/pneumonia/ddpm/s0-e9604b16, of the measured 77-min run of the same day, in
pneumonia_quick_runs.tar.gz without its checkpoint):
    OMP_NUM_THREADS=2 PYTHONPATH=. /usr/bin/time -v .venv/bin/python cpu_bf16.py R ../shared/data
A: DIA dissolving in bf16 on that fp32 DDPM; B: a DDPM trained under bf16 autocast, then DIA
dissolving in bf16 on it. Each stage's seconds and each AUC are printed as JSON lines. Optional
arguments after the data root: the seed (default 0) and the variants to run (default both); seed 1
of B ran as `... cpu_bf16.py R ../shared/data 1 B_ddpm_and_dissolve_bf16` on R after the above
(the DDPM's seed is `diffusion.seed`, not the run's, so B's DDPM is reused), log cpu_bf16_seed1.log:
DIA 1121 s (beside a minute of tests), evaluation 54 s, AUC 0.837 (val 0.899); 19.7 min in all.
Log: cpu_bf16.log (progress bars cut to their last state, paths shortened to R and .venv); run
folders without checkpoints: cpu_bf16_runs.tar.gz. Printed: A DIA 1118 s, evaluation 59 s, AUC
0.829 (val 0.912); B DDPM 1419 s, DIA 1075 s, evaluation 56 s, AUC 0.810 (val 0.907). 62 min
in all, largest process 3.4 GB; short test runs beside it for a few minutes.
"""
import json
import sys
import time

from dia.config import load_config
from dia.diffusion import train_diffusion
from dia.evaluate import evaluate_amplifier, read_metrics
from dia.train_encoder import train_amplifier

root, data = sys.argv[1], sys.argv[2]
seed = int(sys.argv[3]) if len(sys.argv) > 3 else 0
VARIANTS = {"A_dissolve_bf16": {"dissolve.cpu_bf16": True},
            "B_ddpm_and_dissolve_bf16": {"diffusion.cpu_bf16": True, "dissolve.cpu_bf16": True}}
only = sys.argv[4:] or list(VARIANTS)
for name, overrides in VARIANTS.items():
    if name not in only:
        continue
    cfg = load_config("quick", dataset="pneumonia", seed=seed, overrides=overrides)
    for stage, call in (("ddpm", lambda: train_diffusion(cfg, results_root=root, data_root=data)),
                        ("dia", lambda: train_amplifier(cfg, "dia", results_root=root,
                                                        data_root=data)),
                        ("evaluate", lambda: evaluate_amplifier(cfg, "dia", results_root=root,
                                                                data_root=data))):
        tic = time.perf_counter()
        run = call()
        record = {"variant": name, "stage": stage, "seconds": round(time.perf_counter() - tic),
                  "run": str(run.path)}
        if stage == "evaluate":
            record["metrics"] = read_metrics(run).to_dict("records")
        print(json.dumps(record), flush=True)
