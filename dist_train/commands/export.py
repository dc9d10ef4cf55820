"""`dist-train export CHECKPOINT --format torchscript|onnx|state_dict [--out FILE] [--weights auto|model|ema]`: one
consolidated model file (`auto`: the EMA of the weights when the run kept one, as its evaluation used).

Works in one process on a checkpoint written by any strategy and world size: the model is rebuilt from the config
saved in the checkpoint's manifest (a recipe outside the bundled ones must be named with --recipe: a checkpoint
never makes dist-train import code, see dist_train/checkpoint/rebuild.py), and the strategy that wrote it loads the
weights into that plain model (DCP assembles full tensors from the shards), through the same verified, code-free
readers as a resume (dist_train/checkpoint/offline.py, safe_load.py). TorchScript and ONNX need an example input:
the first two samples of the recipe's eval (else train) dataset, as the recipe's `inputs(batch)` gives them (a
tensor, or a dict of keyword inputs for dict batches); the batch dimension stays dynamic.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from dist_train.errors import UsageError

SUFFIX = {"torchscript": ".torchscript.pt", "onnx": ".onnx", "state_dict": ".state_dict.pt"}


def main(args) -> int:
    from dist_train.checkpoint.offline import open_verified

    directory, manifest = open_verified(args.checkpoint, "export")
    if args.out:
        out = Path(args.out)
    elif isinstance(directory, str):
        raise UsageError("export: give --out for a checkpoint on an object store (the default is beside the run)")
    else:
        out = directory.parent.parent / "export" / f"step_{manifest.step}{SUFFIX[args.format]}"

    import torch

    from dist_train import recipe_checks
    from dist_train.checkpoint.rebuild import chosen_weights, config_from_checkpoint
    from dist_train.recipe import resolve_recipe
    from dist_train.strategies import strategy_class

    config = config_from_checkpoint(manifest, [], args.recipe, "export")
    recipe = resolve_recipe(config.recipe)(config)
    model = recipe_checks.build_model(recipe)
    weights = chosen_weights(strategy_class(manifest.strategy), directory, args.weights, "export")
    strategy_class(manifest.strategy).load_consolidated(directory, model, weights)
    model.eval()
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        if args.format == "state_dict":
            torch.save(model.state_dict(), out)
        elif args.format == "torchscript":
            export_torchscript(model, example_input(recipe), out)
        else:
            export_onnx(model, example_input(recipe), out)
    except OSError as e:
        raise UsageError(f"export: cannot write '{out}': {e.strerror}") from None
    print(f"exported step {manifest.step} ({manifest.recipe}, {weights} weights) as {args.format}: {out}")
    return 0


def example_input(recipe):
    import torch

    from dist_train.data import fetch

    train_data, eval_data = recipe.build_datasets()
    data = eval_data if eval_data is not None else train_data
    return recipe.inputs(fetch(data, torch.arange(min(2, len(data)))))


def export_torchscript(model, example, out: Path) -> None:
    import torch

    try:
        scripted = torch.jit.script(model)  # keeps control flow; works for most plain modules
    except Exception:  # noqa: BLE001 - not scriptable: record the operations run on the example instead
        if isinstance(example, dict):
            scripted = torch.jit.trace(model, example_kwarg_inputs=example)
        else:
            scripted = torch.jit.trace(model, example)
    scripted.save(str(out))


def export_onnx(model, example, out: Path) -> None:
    import torch

    try:
        import onnxscript  # noqa: F401 - torch.onnx.export's exporter needs it (and onnx)
    except ImportError:
        raise UsageError("export --format onnx needs the onnx and onnxscript packages: pip install onnx onnxscript") from None
    batch = torch.export.Dim("batch")
    # One self-contained file unless the weights exceed protobuf's 2 GB limit (then ONNX keeps them beside it).
    large = sum(t.numel() * t.element_size() for t in model.state_dict().values()) > 1 << 30
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # deprecation notices from inside the exporter
        if isinstance(example, dict):  # keyword inputs (dict batches), each with a dynamic batch dimension
            torch.onnx.export(model, (), str(out), kwargs=example, dynamo=True, external_data=large, verbose=False,
                              dynamic_shapes={k: {0: batch} for k in example})
        else:
            torch.onnx.export(model, (example,), str(out), dynamo=True, dynamic_shapes=({0: batch},),
                              external_data=large, verbose=False)
