"""DIA seeds 1 and 2 of `quick` on PneumoniaMNIST with the reference code's U-Net layout, on the CPU.

    cd <the clone of arch_seed0.py, at 1b77113, its reference-layout DDPM s0-7a3080d5 kept>
    OMP_NUM_THREADS=2 PYTHONPATH=. /usr/bin/time -v .venv/bin/python \
        results/device_sessions/2026-12-03_cpu_xeon/arch_seeds12.py

The same `ddpm_arch` cell as arch_seed0.py (`diffusion.architecture: reference`, width 32,
600 x 128 images): the DDPM is reused (one DDPM per dataset, seeded 0, DECISIONS.md DIA 10), DIA
seeds 1 and 2 are trained on it and scored. Written before the run: the three seeds are compared
with this machine's diffusers-layout seeds 0-2 (2026-12-02_cpu_xeon/auc.csv: test 0.779, 0.822,
0.867; mean 0.823). Whatever the result, `quick` keeps its layout: SPEC §4 asks for
diffusers.UNet2DModel, and three CPU seeds on one machine do not settle a 0.02-0.05 difference;
the figures go to docs/MEASUREMENTS.md *Ablations* and the GPU's four seeds remain the test.
"""

import json
import time

from dia.ablations import train_and_score
from dia.config import load_config

for seed in (1, 2):
    tic = time.perf_counter()
    cfg = load_config("quick", dataset="pneumonia", seed=seed,
                      overrides={"diffusion.architecture": "reference"})
    result = train_and_score(cfg, "dia", results_root="results", data_root="../shared/data")
    print(json.dumps({"seed": seed, **result, "seconds": round(time.perf_counter() - tic)}),
          flush=True)
