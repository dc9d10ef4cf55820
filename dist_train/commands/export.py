"""`dist-train export CHECKPOINT --format torchscript|onnx|state_dict [--out FILE]`: one consolidated model file.

Works in one process on a checkpoint written by any strategy and world size: the model is rebuilt from the config
saved in the checkpoint's manifest, and the strategy that wrote it loads the weights into that plain model (DCP
assembles full tensors from the shards); dist_train.checkpoint.offline does that, importing only a registered
recipe or the one given with `--recipe`, never a file the checkpoint names. TorchScript and ONNX need an example input: the first two samples of the
recipe's eval (else train) dataset, passed as `model(batch[0])`, the recipe default forward; the batch dimension
stays dynamic.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from dist_train.errors import UsageError

SUFFIX = {"torchscript": ".torchscript.pt", "onnx": ".onnx", "state_dict": ".state_dict.pt"}


def main(args) -> int:
    import torch

    from dist_train.checkpoint.offline import open_checkpoint
    from dist_train.checkpoint.storage import is_url

    opened = open_checkpoint(args.checkpoint, getattr(args, "recipe", None), "export")
    manifest, recipe, model = opened.manifest, opened.recipe, opened.model
    if args.out:
        out = Path(args.out)
    elif is_url(args.checkpoint):
        raise UsageError("export: --out is needed for a checkpoint on an object store (the default is next to the run)")
    else:
        out = Path(args.checkpoint).parent.parent / "export" / f"step_{manifest.step}{SUFFIX[args.format]}"
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
    print(f"exported step {manifest.step} ({manifest.recipe}) as {args.format}: {out}")
    return 0


def example_input(recipe):
    import torch

    from dist_train.data import fetch

    train_data, eval_data = recipe.build_datasets()
    data = eval_data if eval_data is not None else train_data
    return fetch(data, torch.arange(min(2, len(data))))[0]


def export_torchscript(model, example, out: Path) -> None:
    import torch

    try:
        scripted = torch.jit.script(model)  # keeps control flow; works for most plain modules
    except Exception:  # noqa: BLE001 - not scriptable: record the operations run on the example instead
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
        torch.onnx.export(model, (example,), str(out), dynamo=True, dynamic_shapes=({0: batch},),
                          external_data=large, verbose=False)
