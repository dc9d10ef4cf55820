#!/usr/bin/env bash
# Create .venv with everything dist_train and its tests need on a CPU-only machine (idempotent).
# torch and torchvision are pinned through launch/constraints-cpu.txt so pip never swaps in a multi-GB CUDA build;
# GPU users install the package into their own environment instead (pip install -e ".[deepspeed,wandb]").
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=(.venv/bin/python -m pip install -q --disable-pip-version-check -c launch/constraints-cpu.txt)
quiet() { grep -v "is ignored: it is neither" >&2 || true; }  # this machine's pip config lists empty local indexes
"${PIP[@]}" torch==2.13.0 torchvision==0.28.0 setuptools wheel 2> >(quiet)
# DeepSpeed builds its ops just in time on first use; DS_BUILD_OPS=0 skips compiling them at install time, and
# --no-build-isolation lets its setup see the torch installed above instead of fetching another one.
DS_BUILD_OPS=0 "${PIP[@]}" --no-build-isolation -e ".[dev,deepspeed]" 2> >(quiet)
echo "dist_train environment ready: $(.venv/bin/python -c 'import torch; print("torch", torch.__version__)')"
