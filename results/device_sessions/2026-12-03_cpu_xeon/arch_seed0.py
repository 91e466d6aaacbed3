"""DIA seed 0 of `quick` on PneumoniaMNIST with the reference code's U-Net layout, on the CPU.

    cd <clone at 1b77113, ../shared beside it, the Xeon's DDPM s0-e9604b16 copied in>
    OMP_NUM_THREADS=2 PYTHONPATH=. /usr/bin/time -v .venv/bin/python \
        results/device_sessions/2026-12-03_cpu_xeon/arch_seed0.py

The second cell of the `ddpm_arch` ablation (`diffusion.architecture: reference`, the profile's
width 32 and 600 x 128 images; DECISIONS.md DIA 20): trains that DDPM, then DIA seed 0 on it,
and scores it (`dia.ablations.train_and_score`). Written before the run: one seed is compared
with this machine's diffusers-layout DIA seed 0 (2026-12-02, the same config but the layout:
test 0.779, val 0.883); no change to `quick` follows from one seed; the GPU's `ddpm_arch` over
four seeds is the measurement.
"""

import json
import time

from dia.ablations import train_and_score
from dia.config import load_config

tic = time.perf_counter()
cfg = load_config("quick", dataset="pneumonia", seed=0,
                  overrides={"diffusion.architecture": "reference"})
result = train_and_score(cfg, "dia", results_root="results", data_root="../shared/data")
print(json.dumps({**result, "seconds": round(time.perf_counter() - tic)}), flush=True)
