#!/usr/bin/env bash
# The test command: set up .venv if needed, then run pytest (GPU tests skip without CUDA).
# Extra arguments go to pytest, e.g. ./run_tests.sh tests/test_config.py -x
set -euo pipefail
cd "$(dirname "$0")"
source tools/bootstrap.sh
export HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 DIFFUSERS_VERBOSITY=error MPLBACKEND=Agg TQDM_DISABLE=1
# One OpenMP thread per process: tests start notebook kernels and parallel jobs beside pytest,
# and oversubscribed threads on 2 cores are over 10x slower than one thread each.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
set +e
.venv/bin/python -m pytest -q -m "not gpu" "$@"
code=$?
set -e
# pytest exits 5 when nothing was collected: that is a failure of the suite, say so.
if [ "$code" -eq 5 ]; then echo "error: pytest collected no tests" >&2; exit 1; fi
exit "$code"
