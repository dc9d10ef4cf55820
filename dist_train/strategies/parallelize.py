"""How a strategy turns the recipe's model into the model it trains: tensor parallelism, activation checkpointing,
compile and FSDP2, as small functions taking explicit arguments (torchtitan's parallelize layout).

`parallelize` applies them in a fixed order (as torchtitan does):
1. tensor parallelism: `parallelize_module` finds submodules by their names and swaps their parameters for
   DTensors sharded over the tensor mesh; everything after must see those final parameters (FSDP2 then shards
   the TP shards along dim 0 over the data-parallel mesh, giving 2-D DTensors), and TP after FSDP would try to
   re-distribute parameters FSDP already sharded;
2. activation checkpointing, per unit, so that the recomputation runs the unit with its TP hooks in place;
3. compile, so that it traces the recomputation as part of the unit's graph;
4. FSDP2 last: its all-gather/reduce-scatter hooks stay outside the compiled graphs, around each unit.
Checkpointing and compile change modules in place (a new `forward`, a compiled call), so parameter names and
state-dict keys stay those of the recipe's model: checkpoints do not depend on these settings.
"""

from __future__ import annotations

import functools
from typing import Iterable

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from dist_train.errors import UsageError
from dist_train.strategies.base import DTYPES


def checkpointed_units(units: list[nn.Module], every: int) -> list[nn.Module]:
    """`train.activation_checkpointing`: 0 none, 1 all units, k every k-th (the k-th, 2k-th, ... as torchtitan)."""
    return units[every - 1::every] if every else []


def apply_tp(model: nn.Module, tp_mesh, plan: dict) -> None:
    """Tensor parallelism from the recipe's plan. Weights the model ties (one Parameter under two names, e.g. a
    head sharing the embedding) would come out as two separate DTensors; they are tied again afterwards, which is
    sound only when the plan shards both the same way."""
    from torch.distributed.tensor.parallel import parallelize_module

    shared = _tied_parameters(model)
    parallelize_module(model, tp_mesh, plan)
    for names in shared:
        owner = model.get_parameter(names[0])
        for name in names[1:]:
            other = model.get_parameter(name)
            if getattr(other, "placements", None) != getattr(owner, "placements", None):
                raise UsageError(f"parallel.tensor: tied weights {names[0]} and {name} are split differently by the "
                                 "recipe's tp_plan; shard both alike or untie them")
            module_name, _, attr = name.rpartition(".")
            setattr(model.get_submodule(module_name), attr, owner)


def _tied_parameters(model: nn.Module) -> list[list[str]]:
    by_id: dict[int, list[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        by_id.setdefault(id(p), []).append(name)
    return [names for names in by_id.values() if len(names) > 1]


def apply_ac(units: Iterable[nn.Module]) -> None:
    """Each unit keeps only its inputs in forward and recomputes the rest in backward (less memory, ~1/3 more
    compute). Non-reentrant checkpointing: works with FSDP's and DeepSpeed's hooks and with inputs that do not
    require grad."""
    for unit in units:
        unit.forward = functools.partial(checkpoint, unit.forward, use_reentrant=False)


def apply_compile(modules: Iterable[nn.Module]) -> None:
    """`nn.Module.compile`: compiled on first call, in place (no `_orig_mod.` wrapper in parameter names)."""
    for module in modules:
        module.compile()


def apply_fsdp(model: nn.Module, units: list[nn.Module], mesh, precision: str) -> None:
    """FSDP2 on each unit, then on the root (which takes the parameters no unit did). With a 2-D mesh
    (replicate, shard) this is HSDP: sharded within a replica group, gradients all-reduced across groups.

    Precision: with bf16/fp16 FSDP keeps fp32 sharded parameters (the optimizer's master copy), computes with
    parameters cast to the low dtype and reduces gradients in fp32. Modules with running statistics (BatchNorm)
    are their own FSDP group kept in fp32, with inputs cast up and outputs cast back down: their buffers are fp32,
    and a bf16 weight next to fp32 running statistics is what `batch_norm` refuses ("expected scalar type
    BFloat16 but found Float"), the same choice as autocast under ddp, which runs batch_norm in fp32."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    low = None if precision == "fp32" else DTYPES[precision]
    kept_fp32 = [m for m in model.modules() if low is not None and _has_running_stats(m) and m is not model]
    fp32 = MixedPrecisionPolicy(param_dtype=torch.float32, reduce_dtype=torch.float32, output_dtype=low)
    for module in kept_fp32:
        fully_shard(module, mesh=mesh, mp_policy=fp32)
    policy = MixedPrecisionPolicy(param_dtype=low, reduce_dtype=torch.float32)
    for unit in units:
        if not any(unit is m for m in kept_fp32):
            fully_shard(unit, mesh=mesh, mp_policy=policy)
    # The root returns fp32 outputs so the loss (and the logged value) is computed in fp32 as under ddp.
    root_policy = MixedPrecisionPolicy(param_dtype=low, reduce_dtype=torch.float32, output_dtype=torch.float32)
    fully_shard(model, mesh=mesh, mp_policy=root_policy)


def _has_running_stats(module: nn.Module) -> bool:
    return isinstance(module, nn.modules.batchnorm._NormBase) and module.track_running_stats


def parallelize(model: nn.Module, units: list[nn.Module], *, tp_mesh=None, tp_plan: dict | None = None,
                ac_every: int = 0, compile_modules: list[nn.Module] | None = None, fsdp_mesh=None,
                precision: str = "fp32") -> nn.Module:
    """Apply what is asked, in the order of the module docstring; returns the model (changed in place)."""
    if tp_mesh is not None:
        apply_tp(model, tp_mesh, tp_plan)
    apply_ac(checkpointed_units(units, ac_every))
    if compile_modules:
        apply_compile(compile_modules)
    if fsdp_mesh is not None:
        apply_fsdp(model, units, fsdp_mesh, precision)
    return model
