"""Xeon seeds 1-2, DIA and CSI, quick, PneumoniaMNIST, on its DDPM of 2026-12-02 (run 2026-12-03).

Run in a fresh clone of the repository at 762daf8 with ../shared beside it and that DDPM's run
folder (results/runs/diffusion/pneumonia/ddpm/s0-e9604b16) copied in, from the clone's root:
    OMP_NUM_THREADS=2 PYTHONPATH=. /usr/bin/time -v .venv/bin/python seeds12.py
(the environment variables of run_all.sh too). Log: seeds12_2026-12-03.log.
"""
from dia.plan import PlanRequest, build_plan
from dia.suite import execute
req = PlanRequest(profile="quick", datasets=["pneumonia"], seeds=3, methods=("dia", "csi"),
                  results_root="results", data_root="../shared/data")
execute([j for j in build_plan(req) if j.seed in (1, 2)], req)
