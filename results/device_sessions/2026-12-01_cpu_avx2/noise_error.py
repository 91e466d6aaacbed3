"""The noise error of every DDPM this record holds, on training and validation normals.

    .venv/bin/python results/device_sessions/2026-12-01_cpu_avx2/noise_error.py R   (repo root)

R is the results root the session trained into (its run folders, checkpoints included; the
record here keeps them without checkpoints, so this needs the machine that trained them). Writes
noise_error.csv beside this file: one row per (DDPM, split, t) of `dia.noise_check.check_ddpm`
with 135 images per split (all 135 normal images of PneumoniaMNIST's validation split), at the t
where dissolving works (30-99) and two the gallery shows (200, 400). docs/MEASUREMENTS.md "Ablations",
"Timestep focus of the DDPM", reads its mean over t = 30/50/70/99.
"""
import json
import sys
from pathlib import Path

import pandas as pd

from dia.config import load_config
from dia.noise_check import check_ddpm

DDPMS = [{}, {"diffusion.steps": 300}, {"diffusion.steps": 150},
         {"diffusion.steps": 150, "diffusion.focus_fraction": 0.5},
         {"diffusion.steps": 150, "diffusion.focus_fraction": 1.0},
         {"diffusion.steps": 150, "diffusion.seed": 1}, {"diffusion.seed": 1},
         {"diffusion.seed": 2}]
rows = []
for overrides in DDPMS:
    cfg = load_config("quick", dataset="pneumonia", overrides=overrides or None)
    for row in check_ddpm(cfg, results_root=sys.argv[1], data_root="../shared/data",
                          num_images=135, timesteps=(30, 50, 70, 99, 200, 400)):
        rows.append({"overrides": json.dumps(overrides), "steps": cfg.diffusion.steps,
                     "focus_fraction": cfg.diffusion.focus_fraction,
                     "ddpm_seed": cfg.diffusion.seed, **row})
out = Path(__file__).with_name("noise_error.csv")
pd.DataFrame(rows).round(4).to_csv(out, index=False)
print(f"wrote {out}")
