#!/usr/bin/env bash
# One node, NPROC processes (usually one per GPU), torchrun's standalone rendezvous.
#   launch/torchrun_single_node.sh NPROC CONFIG [key=value ...]
#   e.g. launch/torchrun_single_node.sh 8 recipes/fashion_mnist_mlp.yaml train.max_steps=500
# Same as: dist-train launch CONFIG [key=value ...] --nproc-per-node NPROC.  DRY_RUN=1 prints the command only.
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 NPROC CONFIG [key=value ...]" >&2; exit 2; }
nproc=$1; shift
cmd=(torchrun --standalone --nproc-per-node="$nproc" -m dist_train train "$@")
if [ -n "${DRY_RUN:-}" ]; then echo "${cmd[*]}"; else exec "${cmd[@]}"; fi
