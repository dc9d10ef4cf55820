"""`dist-train launch CONFIG [key=value ...] --nodes N --nproc-per-node P`: run training under torchrun."""

from __future__ import annotations

from dist_train.cluster.torchrun import LaunchPlan, launch


def main(args) -> int:
    plan = LaunchPlan(nodes=args.nodes, procs_per_node=args.nproc_per_node, rdzv_endpoint=args.rdzv_endpoint or "",
                      rdzv_id=args.rdzv_id, node_rank=args.node_rank, max_restarts=args.max_restarts)
    plan.check()  # before the config: these need no torch import
    from dist_train.config import load

    load(args.config, args.overrides)  # a bad config fails once here, not in every process torchrun would start
    return launch(plan, [args.config, *args.overrides], dry_run=args.dry_run, connect_timeout_s=args.rdzv_timeout)
