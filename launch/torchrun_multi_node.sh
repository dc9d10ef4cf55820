#!/usr/bin/env bash
# NNODES nodes x NPROC processes, c10d rendezvous on the head node. Run the same line on every node:
#   launch/torchrun_multi_node.sh NNODES NPROC HEAD_HOST:PORT CONFIG [key=value ...]
#   e.g. launch/torchrun_multi_node.sh 2 8 node001:29500 recipes/fashion_mnist_mlp.yaml
# RDZV_ID (default dist-train) must be the same on every node of one run. DRY_RUN=1 prints the command only.
# Same as: dist-train launch CONFIG [key=value ...] --nodes NNODES --nproc-per-node NPROC --rdzv-endpoint HOST:PORT,
# which also fails with a clear message when the head node cannot be reached.
set -euo pipefail
# A fresh rendezvous store per restart round: nodes restarting with different restart counts still meet
# (docs/scaling-out.md, "Restarts on several nodes").
export TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1
[ $# -ge 4 ] || { echo "usage: $0 NNODES NPROC HEAD_HOST:PORT CONFIG [key=value ...]" >&2; exit 2; }
nnodes=$1 nproc=$2 endpoint=$3; shift 3
cmd=(torchrun --nnodes="$nnodes" --nproc-per-node="$nproc" --rdzv-backend=c10d --rdzv-endpoint="$endpoint"
     --rdzv-id="${RDZV_ID:-dist-train}" -m dist_train train "$@")
if [ -n "${DRY_RUN:-}" ]; then echo "${cmd[*]}"; else exec "${cmd[@]}"; fi
