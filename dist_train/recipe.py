"""The recipe API: what a user writes to train their own model.

A recipe is a small class that builds the model, the train/eval datasets, the loss and the eval metrics. It knows
nothing about ranks, devices, precision or strategies; the runner does all of that. A recipe may declare extra
config sections (`sections = {"model": ModelConfig}`), which the config loader types and checks like the core ones.

`recipe:` in a config names either a bundled recipe, a module of `dist_train.recipes` (`fashion_mnist_mlp`, from the
repository's recipes/ folder), or a user's own file or module with the class to use (`path/to/my_recipe.py:MyRecipe`,
`my_pkg.recipes:MyRecipe`, or a package of the user's literally named `recipes`: `recipes.mine:MyRecipe`).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from dist_train.errors import UsageError, closest, key_text, one_line, one_of

if TYPE_CHECKING:
    import torch
    from torch import nn

    from dist_train.callbacks import Callback
    from dist_train.config.schema import Config
    from dist_train.metrics import Metric


class Recipe:
    """Subclass this; implement build_model, build_datasets and loss (metrics optional)."""

    #: extra config sections this recipe reads: {"model": ModelConfig} makes `model:` a typed, checked section
    sections: ClassVar[dict[str, type]] = {}

    def __init__(self, config: Config):
        self.config = config

    def build_model(self) -> nn.Module:
        raise NotImplementedError

    def build_datasets(self) -> tuple[Any, Any | None]:
        """(train_dataset, eval_dataset or None). Map-style datasets, or for training a streaming source
        (dist_train.data.ShardedStream); a batch is a tuple (or a dict) of tensors."""
        raise NotImplementedError

    # ---- the batch contract: how the loop, eval, metrics and export read a batch. Defaults: a tuple/list batch is
    # (inputs, ..., targets); a dict batch follows the Hugging Face convention, targets under "labels" and the
    # other entries the model's keyword inputs. Override these three for any other layout.

    def inputs(self, batch) -> Any:
        """What the model is called with: a tensor (`model(x)`) or a dict of keyword inputs (`model(**x)`)."""
        if isinstance(batch, dict):
            return {k: v for k, v in batch.items() if k != "labels"}
        return batch[0]

    def targets(self, batch) -> Any:
        """What the metrics compare the outputs with."""
        if isinstance(batch, dict):
            return batch["labels"]
        return batch[-1]

    def batch_size(self, batch) -> int:
        """Samples in the batch (eval weights the loss by it)."""
        first = self.inputs(batch)
        if isinstance(first, dict):
            first = next(iter(first.values()))
        return len(first)

    def forward(self, model: nn.Module, batch) -> Any:
        """Model outputs for a batch; by default the model applied to `inputs(batch)`."""
        x = self.inputs(batch)
        return model(**x) if isinstance(x, dict) else model(x)

    def loss(self, outputs, batch) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor | int]:
        """The batch's mean loss (a scalar tensor), or a token-weighted `(sum, count)` pair: the summed loss and how
        many items it sums (non-padding tokens); the step then divides by the count of the whole global batch
        (dist_train.token_weighted), so variable-length batches train the same on any split into ranks and
        accumulation steps."""
        raise NotImplementedError

    def metrics(self) -> dict[str, Metric]:
        """Fresh metric accumulators for one evaluation; the runner reduces them across ranks."""
        return {}

    def tokens_in(self, batch) -> int | None:
        """Tokens in one micro-batch (still on the host), for the tokens/s figure; None: this recipe has no tokens.
        Called once per micro-batch, so keep it O(1), e.g. `batch[0].numel()` or an attention-mask count."""
        return None

    def flops_per_sample(self) -> float | None:
        """Training FLOPs (forward + backward) per sample, for the MFU figure on GPUs; None: unknown.
        Dense layers: about 6 x parameters x tokens per sample (2 per multiply-add forward, twice that backward)."""
        return None

    def fsdp_units(self, model: nn.Module) -> list[nn.Module]:
        """The blocks FSDP shards (and checkpoints/compiles) one by one: one all-gather each, so a unit's full
        parameters exist only while it runs. Default: each top-level child that has parameters. A transformer
        recipe returns its blocks, e.g. `list(model.layers)`."""
        return [child for child in model.children() if any(True for _ in child.parameters())]

    def tp_plan(self, model: nn.Module) -> dict:
        """Tensor parallelism (`parallel.tensor`): {submodule name: torch.distributed.tensor.parallel style}, as
        `parallelize_module` takes it. A recipe without one cannot run with parallel.tensor > 1."""
        raise NotImplementedError

    def check_parallel(self, tensor: int) -> None:
        """Refuse (UsageError), from the config alone, a tensor-parallel degree the model cannot be split by
        (e.g. one not dividing the heads); called before any process group work."""

    def callbacks(self) -> list[Callback]:
        """Callbacks this recipe always wants (dist_train.callbacks.Callback instances), run before the config's."""
        return []

    def on_train_end(self, model: nn.Module, eval_values: dict[str, float]) -> None:
        """Called once after the last step on EVERY rank (a sharded model needs all ranks in a forward), with the
        unwrapped model (the EMA model when train.ema is on) in eval mode under no_grad, and the last eval values.
        Print with dist_train.distributed.print0 so that only rank 0 writes. E.g. sample text from a language model."""


def resolve_recipe(name: str, base_dir: Path | None = None) -> type[Recipe]:
    if ":" in name:
        target, _, class_name = name.rpartition(":")
        module = import_target(target, name, base_dir)
        cls = getattr(module, class_name, None)
        if not (inspect.isclass(cls) and issubclass(cls, Recipe)):
            found = _recipe_classes(module)
            raise UsageError(
                f"recipe: '{key_text(name, 200)}' has no Recipe subclass named '{key_text(class_name)}'"
                + (f"; it defines: {one_of(c.__name__ for c in found)}" if found else "")
            )
        return cls
    available = builtin_recipes()
    if name not in available:
        raise UsageError(
            f"recipe: unknown recipe '{key_text(name, 200)}'{closest(name, available)}; registered: "
            f"{one_of(available)}, "
            "or path/to/file.py:ClassName for your own"
        )
    module = _import_module(f"{BUNDLED}.{name}", name)
    found = _recipe_classes(module)
    if len(found) != 1:
        raise UsageError(f"recipe: module {BUNDLED}.{name} must define exactly one Recipe subclass, found {len(found)}")
    return found[0]


BUNDLED = "dist_train.recipes"


def builtin_recipes() -> list[str]:
    try:
        bundled = importlib.import_module(BUNDLED)
    except ImportError:
        return []
    folder = Path(bundled.__file__).parent
    return sorted(p.stem for p in folder.glob("*.py") if not p.stem.startswith("_"))


def _recipe_classes(module) -> list[type[Recipe]]:
    return [
        c for c in vars(module).values()
        if inspect.isclass(c) and issubclass(c, Recipe) and c is not Recipe and c.__module__ == module.__name__
    ]


def canonical_name(name: str, base_dir: Path | None = None) -> str:
    """The recipe reference with a user's file made absolute, so every rank and a later resume find the same file."""
    target, sep, class_name = name.rpartition(":")
    if sep and _is_file_target(target):
        return f"{_find_file(target, base_dir).resolve()}:{class_name}"
    return name


def _is_file_target(target: str) -> bool:
    return target.endswith(".py") or "/" in target


def _find_file(target: str, base_dir: Path | None, what: str = "recipe") -> Path:
    candidates = [Path(target)] + ([base_dir / target] if base_dir else [])
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        raise UsageError(f"{what}: file '{key_text(target, 200)}' not found (looked in the current directory"
                         + (f" and {base_dir}" if base_dir else "") + ")")
    return path


def import_target(target: str, name: str, base_dir: Path | None, what: str = "recipe"):
    """The module of a `path/to/file.py:Class` or `package.module:Class` reference (a user's recipe or callback)."""
    if _is_file_target(target):
        path = _find_file(target, base_dir, what)
        # One module per file (two files may share a stem); dataclasses and pickling look it up by this name.
        digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:8]
        module_name = f"dist_train_user_{path.stem}_{digest}"
        if module_name in sys.modules:
            return sys.modules[module_name]
        spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as e:
            del sys.modules[module_name]
            raise UsageError(f"{what}: '{path}' failed to import: {type(e).__name__}: {one_line(e)}") from None
        return module
    return _import_module(target, name, what)


def _import_module(module_name: str, name: str, what: str = "recipe"):
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and module_name.startswith(e.name):
            raise UsageError(f"{what}: module '{key_text(module_name, 200)}' not found") from None
        raise _import_failed(what, name, e) from None
    except Exception as e:
        raise _import_failed(what, name, e) from None


def _import_failed(what: str, name: str, e: Exception) -> UsageError:
    return UsageError(f"{what}: '{key_text(name, 200)}' failed to import: {type(e).__name__}: {one_line(e)}")
