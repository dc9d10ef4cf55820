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
from pathlib import Path

from dist_train.errors import UsageError


def main(args) -> int:
    from dist_train.checkpoint.manifest import InvalidCheckpoint, verify
    from dist_train.checkpoint.rebuild import config_from_checkpoint

    directory = Path(args.checkpoint)
    if not directory.is_dir():
        raise UsageError(f"evaluate: checkpoint '{directory}' is not a folder; give run_dir/checkpoints/step_<N>")
    try:
        manifest = verify(directory)
    except InvalidCheckpoint as e:
        raise UsageError(f"evaluate: '{directory}' is not a usable checkpoint: {e}") from None
    config = config_from_checkpoint(manifest, args.overrides, args.recipe, "evaluate")

    import torch

    from dist_train import cluster, distributed, recipe_checks
    from dist_train.checkpoint.manager import TRAINER_STATE
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
        weights = _ema_weights(directory / TRAINER_STATE, args.weights)
        if consolidate:
            strategy_class("deepspeed").load_consolidated(directory, model)
        strategy = build_strategy(config, env, device)
        strategy.check()
        strategy.setup(model, recipe, batch_layout(config.train.batch_size, config.train.grad_accum, env, None))
        if not consolidate:
            strategy.load_model(directory)
        if weights is not None:
            _copy_into(strategy.unwrapped_model, weights)
        values = evaluate(strategy.model, recipe, data, config.eval_batch_size, env.rank, env.world_size, device,
                          strategy.autocast)
    finally:
        distributed.shutdown(release=strategy.teardown if strategy else None)
    used = "ema" if weights is not None else "model"
    if args.json:
        distributed.print0(json.dumps({"checkpoint": str(directory), "step": manifest.step, "split": args.split,
                                       "weights": used, "world_size": env.world_size, **values}))
    else:
        shown = " | ".join(f"{k} {v:.6g}" for k, v in values.items())
        distributed.print0(f"evaluate {directory} (step {manifest.step}, {args.split} split, {len(data)} samples, "
                           f"{used} weights, world size {env.world_size}): {shown}")
    return 0


def _ema_weights(path: Path, choice: str):
    """The EMA shadow weights saved in the trainer state, per --weights."""
    if choice == "model":
        return None
    import torch

    state = torch.load(path, weights_only=True, map_location="cpu")
    shadow = (state.get("components", {}).get("ema") or {}).get("shadow")
    if shadow is None and choice == "ema":
        raise UsageError(f"evaluate --weights ema: the checkpoint {path.parent} has no EMA weights (train.ema was off)")
    return shadow


def _copy_into(model, weights: dict) -> None:
    import torch

    live = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    if weights.keys() != live.keys():
        raise UsageError("evaluate --weights: the checkpoint's EMA weights do not match the model's tensors")
    with torch.no_grad():
        for name, t in live.items():
            t.copy_(weights[name])
