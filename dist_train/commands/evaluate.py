"""`dist-train evaluate CHECKPOINT [key=value ...] [--split eval|train] [--weights auto|model|ema]`: the recipe's
loss and metrics of a checkpoint, on one process or under torchrun on any number (the test loop users expect).

The model is rebuilt from the checkpoint's config (overrides apply on top, e.g. `data.root=...` or
`train.eval_batch_size=512`) and wrapped by the strategy that trained it, now on this world size: DCP reshards
the weights (DeepSpeed checkpoints are first reassembled into full weights, then evaluated as ddp). With
`--weights auto` the EMA weights are used when the checkpoint has them, as training's evaluation did, so the figures
equal the ones the run logged at that step. Prints one line (rank 0), or one JSON object with `--json`.
"""

from __future__ import annotations

import json

from dist_train.errors import UsageError


def main(args) -> int:
    from dist_train.checkpoint.offline import open_verified
    from dist_train.checkpoint.rebuild import chosen_weights, config_from_checkpoint

    directory, manifest = open_verified(args.checkpoint, "evaluate")
    config = config_from_checkpoint(manifest, args.overrides, args.recipe, "evaluate")

    import torch

    from dist_train import cluster, distributed, recipe_checks
    from dist_train.checkpoint.resume import batch_layout
    from dist_train.evaluation import evaluate
    from dist_train.recipe import resolve_recipe
    from dist_train.runner import pick_device
    from dist_train.strategies import build_strategy, strategy_class

    consolidate = manifest.strategy == "deepspeed"  # ZeRO files: reassemble, then evaluate as ddp
    if consolidate:
        config.strategy = "auto"
    env = cluster.detect()
    device = pick_device(config.train.device, env)
    distributed.init(env, device)
    strategy = None
    try:
        recipe = resolve_recipe(config.recipe)(config)
        train_data, eval_data = recipe_checks.build_datasets(recipe)
        data = eval_data if args.split == "eval" else train_data
        if data is None:
            raise UsageError(f"evaluate --split eval: recipe {config.recipe} has no eval dataset; use --split train")
        model = recipe_checks.build_model(recipe)
        weights = chosen_weights(strategy_class(manifest.strategy), directory, args.weights, "evaluate")
        if consolidate:
            strategy_class("deepspeed").load_consolidated(directory, model, weights)
        strategy = build_strategy(config, env, device)
        strategy.check()
        layout = batch_layout(config, env, None)  # the data-parallel ranks split the set
        strategy.setup(model, recipe, layout)
        if not consolidate:
            strategy.load_model(directory, weights)
        values = evaluate(strategy.model, recipe, data, config.eval_batch_size, layout.rank, layout.world_size,
                          device, strategy.autocast)
    finally:
        distributed.shutdown(release=strategy.teardown if strategy else None)
    used = weights
    if args.json:
        distributed.print0(json.dumps({"checkpoint": str(directory), "step": manifest.step, "split": args.split,
                                       "weights": used, "world_size": env.world_size, **values}))
    else:
        shown = " | ".join(f"{k} {v:.6g}" for k, v in values.items())
        distributed.print0(f"evaluate {directory} (step {manifest.step}, {args.split} split, {len(data)} samples, "
                           f"{used} weights, world size {env.world_size}): {shown}")
    return 0
