"""Model transforms a strategy applies before wrapping: activation checkpointing and torch.compile.

Both change the modules in place (a new `forward`, a compiled call), so parameter names and state-dict keys stay
those of the recipe's model: checkpoints do not depend on whether a run checkpointed activations or compiled.

Order, when several apply (as in torchtitan): activation checkpointing, then compile, then sharding/wrapping.
Checkpointing first so compile traces the recomputation as part of the unit's graph; compile before FSDP so the
graph is the unit's own math and FSDP's all-gather/reduce-scatter hooks stay outside it, around the compiled call.
"""

from __future__ import annotations

import functools
from typing import Iterable

from torch import nn
from torch.utils.checkpoint import checkpoint


def apply_activation_checkpointing(units: Iterable[nn.Module]) -> None:
    """Each unit keeps only its inputs in forward and recomputes the rest in backward (less memory, ~1/3 more
    compute). Non-reentrant checkpointing: works with FSDP's hooks and with inputs that do not require grad."""
    for unit in units:
        unit.forward = functools.partial(checkpoint, unit.forward, use_reentrant=False)


def apply_compile(modules: Iterable[nn.Module]) -> None:
    """`nn.Module.compile`: compiled on first call, in place (no `_orig_mod.` wrapper in parameter names)."""
    for module in modules:
        module.compile()
