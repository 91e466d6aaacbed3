#!/usr/bin/env bash
# The whole suite: set up .venv if needed, then every notebook on every dataset present, then the
# AUC table. Arguments go to the driver (python -m dia.suite --help):
#   ./run_all.sh [--profile smoke|quick|paper] [--datasets a,b] [--seeds N] [--seed-list 3,4]
#                [--methods dia,csi,ddad] [--results-root DIR] [--data-root DIR] [--ablations]
#                [--plan-only]
set -euo pipefail
repo=$(cd "$(dirname "$0")" && pwd)
# no cd: a relative --results-root, --data-root or $DIA_DATA_ROOT is read from where this is called
source "$repo/tools/bootstrap.sh"
export HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 DIFFUSERS_VERBOSITY=error MPLBACKEND=Agg
export TQDM_MININTERVAL=${TQDM_MININTERVAL:-30} PYTHONUNBUFFERED=1
# -P: the caller's folder is not put on sys.path (a dia/ or yaml.py there would shadow ours)
exec "$repo/.venv/bin/python" -P -m dia.suite "$@"
