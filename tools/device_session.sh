#!/usr/bin/env bash
# The GPU checks of issues 5 and 10 as ONE call of the device tool (a session gets ~15 min of GPU
# time): both benchmarks with GPU utilisation, then quick PneumoniaMNIST cells of the ablations in
# WHICH (default: the DDPM's U-Net layout, seed, focus, length; only `dissolver` adds CSI), each
# seed's cells of the profile's own config first. The 2026-11-30 session (one H200) ran it twice
# on a warm machine: its record is results/device_sessions/2026-11-30_h200/, published by
# tools/device_report.py (docs/MEASUREMENTS.md, "Ablations" and "Benchmarks", gives the commands).
#
# Prepare on the CPU machine (repo root; both folders are git-ignored):
#   ../shared/tools/device-wheels.sh          # diffusers, kornia, medmnist wheels -> .device-wheels/
#   mkdir -p .device-data/medmnist && cp ../shared/data/medmnist/pneumoniamnist.npz .device-data/medmnist/
# Then one device run: carry [".device-wheels", ".device-data"], timeout_s 600, command
#   bash tools/device_session.sh 560
# (the argument is this script's budget in seconds; keep it ~40 s under timeout_s).
# After the benchmarks, which run alone, the grid runs in LANES (default 4) processes side by side
# on the one GPU, one seed each (tools/device_grid.py --seed-list). One process keeps an H200
# only 14-29 % busy (bench_amplify); four kept it busy 85 % of the time over the grid and 94 %
# while all four ran (gpu_util.csv, 2026-11-30). A lane about to train a DDPM takes its lock
# first (`Run.exclusive`); the other lanes run cells that need no DDPM meanwhile, or wait for
# it. Lanes 1+ start 15 s late, so lane 0 takes the first DDPM.
# FIRST_SEED=4 runs seeds 4-7 instead of 0-3 (a DDPM already trained is reused only on the same
# machine: a fresh one trains it again).
#
# Writes into $OUT (results/device/ when run by hand), at most 8 files as the tool allows:
#   env.txt              GPU, driver, torch / diffusers / kornia versions
#   gpu_tests.txt        the tests marked gpu of the amplify stage (pytest -m gpu), e.g. that a DIA
#                        epoch makes no synchronising CUDA call per iteration
#   bench_diffusion.json DDPM steps/s, dissolved images/s, each with GPU utilisation
#   bench_amplify.json   DIA / CSI iterations/s, images/s, scoring images/s, GPU utilisation
#   gpu_util.csv         nvidia-smi every 0.5 s over the whole call (utilisation, memory)
#   grid.csv             one row per finished ablation cell (tools/device_grid.py)
#   runs.tar.gz          the run folders without checkpoints (train logs, scores, env.json)
#   session.log          everything printed, with benchmarks/flop_budget.py's JSON (the FLOPs of
#                        the profile's run, the GFLOP/s each network sustains on the GPU and the
#                        GPU's matmul ceiling) and benchmarks/profile_ddpm_step.py's (what a DDPM
#                        training step spends its kernel time on)
# A dry run of the plumbing on a CPU machine (smoke profile, synthetic data, a few minutes):
#   OUT=/tmp/session RESULTS_ROOT=/tmp/session/results PROFILE=smoke DATASET=synthetic \
#     LANES=2 PYTHON=.venv/bin/python bash tools/device_session.sh 300
# (tests/test_device_session.py runs it so with a budget of 60 s, which skips the grid.)
# A step that fails (a test run, a benchmark, a lane, the archive) does not stop the others: the
# last line of session.log names every one that failed, and the call then exits 1. A TERM or INT
# ends the call at once, stopping the step or lanes then running and keeping the lanes' rows so
# far in grid.csv: exit 143 or 130 (124 from `timeout N bash tools/device_session.sh`).
# Publish the AUCs with tools/device_report.py (grid.csv of each call, gpu_util.csv for the figure).
# Unpack runs.tar.gz into a results root of its own (e.g. `mkdir -p /tmp/gpu && tar xzf runs.tar.gz
# -C /tmp/gpu`), not into results/: a GPU run of a config the CPU already ran has the same run id,
# and its folder would stand in for the CPU run there: a run folder wins over the ledger's rows.
set -uo pipefail
budget=${1:-540}
profile=${PROFILE:-quick}
dataset=${DATASET:-pneumonia}
results=${RESULTS_ROOT:-results}
py=${PYTHON:-python3}
lanes=${LANES:-4}  # one seed per lane, all lanes on the one GPU at once
[ "$lanes" -ge 1 ] 2>/dev/null || { echo "error: LANES=$lanes: need a whole number >= 1"; exit 1; }
first=${FIRST_SEED:-0}  # seeds first .. first+lanes-1 (2026-11-30 ran 0-3: FIRST_SEED=4 adds 4-7)
# the ablations of the grid, in order. 2026-11-30 ran ddpm_budget,ddpm_steps,dissolver (seeds
# 0-3, published); next: the reference code's U-Net layout (the one difference from the
# reference left in the DIA path, DECISIONS.md DIA 20), how far DIA moves with the DDPM's own
# draw, then the timestep focus
which=${WHICH:-ddpm_arch,ddpm_seed,ddpm_focus,ddpm_steps}
last=$((first + lanes - 1))
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out=${OUT:-results/device}
mkdir -p "$out"
# tee ignores TERM and INT: a `timeout` or Ctrl-C that reaches the whole process group must not
# cut the log short; it ends when the script and what it started have closed their output
exec > >(trap '' TERM INT; exec tee -a "$out/session.log") 2>&1
exec 3>&1  # the session log, for messages of steps whose own output goes to a file
left() { echo "$((budget - SECONDS)) s left, $(date -u +%T) UTC"; }
secs() { echo $((budget - SECONDS)); }
failed=()  # the steps that exited non-zero: named at the end, and the call's exit status is 1
failures() {  # their names, joined by "; " ("none")
  [ ${#failed[@]} -gt 0 ] || { echo none; return; }
  local names; printf -v names '%s; ' "${failed[@]}"; echo "${names%; }"
}
# What runs now (a step's timeout, or the lanes'), in the background so that a TERM is handled at
# once; timeout puts its command in a process group of its own, which a TERM sent to the
# script's group does not reach, so `cleanup` passes it on.
current=() sleeper= seds=()  # and the pause before lane 1, and the lanes' line prefixers
step() {  # step NAME CMD...: run CMD, note NAME when it fails (the session goes on)
  local name=$1 rc=0; shift
  "$@" & current=($!)
  wait "${current[0]}" || rc=$?
  current=()
  if [ "$rc" -ne 0 ]; then failed+=("$name (exit $rc)"); echo "[session] $name exited $rc" >&3; fi
}

export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 \
  TQDM_DISABLE=1 MPLBACKEND=Agg DIA_DATA_ROOT=${DIA_DATA_ROOT:-.device-data}
if ! "$py" -c "import diffusers, kornia" 2>/dev/null; then  # the GPU machine lacks them
  "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site \
    .device-wheels/*.whl || { echo "error: installing .device-wheels/*.whl failed (carried?)"; exit 1; }
  export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
if [ "$dataset" = pneumonia ] && [ ! -f "$DIA_DATA_ROOT/medmnist/pneumoniamnist.npz" ]; then
  echo "error: $DIA_DATA_ROOT/medmnist/pneumoniamnist.npz is missing: copy it there and carry" \
       "the folder (see the top of $0)"
  exit 1
fi

{ nvidia-smi; "$py" -c "import torch, diffusers, kornia, pandas
print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())
print('diffusers', diffusers.__version__, 'kornia', kornia.__version__, 'pandas', pandas.__version__)
assert torch.cuda.is_available() or '$profile' == 'smoke', 'no CUDA: only PROFILE=smoke runs on CPU'"
} > "$out/env.txt" 2>&1 || { cat "$out/env.txt"; echo "error: no usable torch (see above)"; exit 1; }
cat "$out/env.txt"
lane_dir=  # the lanes' grid rows, once the grid starts
cleanup() {  # on every exit, a TERM included: stop what still runs, merge the lanes' rows
  trap '' TERM INT  # a second signal must not cut the merge short
  kill "$smi" 2>/dev/null
  [ -n "$sleeper" ] && kill "$sleeper" 2>/dev/null
  if [ ${#current[@]} -gt 0 ]; then  # timeout passes the TERM on to its command
    kill -TERM "${current[@]}" 2>/dev/null
    # a second to end and write their last rows and lines; not `wait`, which in a trap that ran
    # during a `wait` sometimes blocks for good (bash 5.2, seen 1 in 2 in a 2-lane mock-up)
    sleep 1
  fi
  [ -n "$lane_dir" ] || return 0
  local files=("$lane_dir"/grid-s*.csv)
  [ -e "${files[0]}" ] && awk 'FNR == 1 && NR != 1 { next } { print }' "${files[@]}" > "$out/grid.csv"
  rm -rf "$lane_dir"
}
# 3>&-: a copy of the session log's descriptor would keep its tee open after the script ended
nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -lms 500 \
  > "$out/gpu_util.csv" 2>/dev/null 3>&- &
smi=$!
trap cleanup EXIT  # which `exit` in these runs too
stopped() {  # stopped SIGNAL STATUS: say so and what had failed, then exit (cleanup runs)
  echo "[session] stopped by $1 ($(left)); steps that failed before: $(failures)" >&3
  exit "$2"
}
trap 'stopped TERM 143' TERM
trap 'stopped INT 130' INT

echo "[session] GPU tests ($(left))"
step "GPU tests" timeout 120 "$py" -m pytest -q -m gpu -p no:cacheprovider \
  tests/test_train_encoder.py tests/test_amplify.py tests/test_dissolve.py tests/test_optim.py \
  > "$out/gpu_tests.txt" 2>&1
tail -n 3 "$out/gpu_tests.txt"

echo "[session] benchmarks ($(left))"
step bench_diffusion timeout 100 "$py" benchmarks/bench_diffusion.py --device cuda --widths 32 64 \
  --batch 128 --steps 30 > "$out/bench_diffusion.json"
step bench_amplify timeout 150 "$py" benchmarks/bench_amplify.py --device cuda --iters 50 \
  --score-images 1000 > "$out/bench_amplify.json"
echo "[session] flop budget of the profile (JSON into session.log; $(left))"
step flop_budget timeout 60 "$py" benchmarks/flop_budget.py --device auto --profile "$profile" \
  --dataset "$dataset" --repeats 5
echo "[session] operators of a DDPM training step (JSON into session.log; $(left))"
step profile_ddpm_step timeout 60 "$py" benchmarks/profile_ddpm_step.py --device auto \
  --profile "$profile" 2>/dev/null

threads=$(( $(nproc) / lanes > 0 ? $(nproc) / lanes : 1 ))
if [ "$(secs)" -gt 90 ]; then
  echo "[session] ablation grid ($which), seeds $first-$last in $lanes lanes ($(left))"
  lane_dir=$(mktemp -d) lane_budget=$(($(secs) - 40))
  for seed in $(seq "$first" "$last"); do
    if [ "$seed" = $((first + 1)) ]; then  # lane 0 takes the first DDPM's lock first
      sleep 15 >/dev/null 2>&1 3>&- & sleeper=$!; wait "$sleeper"; sleeper=
      lane_budget=$((lane_budget - 15))
    fi
    # the grid stops itself inside its budget; timeout is the backstop that still leaves the tar.
    # $! is the lane's timeout, whose status is the lane's; sed, a child of this script so that
    # it can be waited for, prefixes the lane's lines from a FIFO
    mkfifo "$lane_dir/lane$seed"
    sed -u "s/^/[lane $seed] /" < "$lane_dir/lane$seed" 3>&- &
    seds+=($!)
    OMP_NUM_THREADS=$threads timeout $((lane_budget + 20)) "$py" tools/device_grid.py \
      --dataset "$dataset" --profile "$profile" --seeds $((last + 1)) --seed-list "$seed" \
      --which "$which" --budget-s "$lane_budget" \
      --results-root "$results" --out "$lane_dir/grid-s$seed.csv" > "$lane_dir/lane$seed" 2>&1 &
    current+=($!)
  done
  for i in "${!current[@]}"; do  # a lane cut by its timeout backstop exits 124
    wait "${current[$i]}" || failed+=("lane $((first + i)) (exit $?)")
    unset 'current[i]'  # done: not to be signalled by cleanup (its pid may be reused)
  done
  wait "${seds[@]}"  # every lane's last line is in the log before the lines below
fi

if [ -d "$results/runs" ]; then  # without the grid (too little budget left), nothing to archive
  step "runs.tar.gz" tar czf "$out/runs.tar.gz" --exclude=checkpoints -C "$results" runs
fi
if [ ${#failed[@]} -gt 0 ]; then
  echo "[session] done ($(left)); steps that failed: $(failures)"
  exit 1
fi
echo "[session] done ($(left))"
