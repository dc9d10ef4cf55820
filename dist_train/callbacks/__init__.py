"""The callback seam: the one way to extend the training loop without editing it.

A `Callback` overrides any of the hooks below; the loop calls them at fixed points and never asks what a callback
does. The EMA of the weights, early stopping, the profiler and the tests' fault injection are callbacks; so are a
user's own. Sources, in this order: the `train.ema` / `train.early_stopping` keys, the recipe's `callbacks()`, the
`callbacks:` list of the config (`[{name: profiler, start: 10, steps: 3}, {name: path/to/file.py:MyCallback, ...}]`,
each entry's other keys typed and checked by the callback's `Config` dataclass, like a recipe section), and the
fault injection of the DIST_TRAIN_TEST_* variables.

Hooks run on every rank, in the same order, at the same steps; a hook that decides something (stop the run) must
decide it identically on every rank, e.g. from values already reduced across ranks. A stateful callback registers
itself with `trainer.state.register(...)` in `setup`, so checkpoints carry its state.

This module imports no torch: the config loader resolves callback classes before torch is imported.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar

from dist_train.errors import UsageError, closest, key_text, one_of, shown

# Registered names -> "module:Class" (imported only when named in a config).
BUILTIN = {
    "profiler": "dist_train.callbacks.profiler:Profiler",
    "fault_injection": "dist_train.callbacks.fault_injection:FaultInjection",
}
# EMA (dist_train.callbacks.ema) and early stopping (dist_train.callbacks.early_stopping) are callbacks too, switched
# on by their `train.ema` / `train.early_stopping` keys rather than listed here: one way to turn each on.


class Callback:
    """Subclass and override the hooks you need. `Config`: a dataclass of the YAML keys this callback takes (its
    instance is `self.config`); None: it takes none. `trainer` is the `dist_train.runner.Trainer`."""

    Config: ClassVar[type | None] = None

    def __init__(self, config: Any = None):
        self.config = config

    def setup(self, trainer) -> None:
        """The strategy has wrapped the model; nothing is restored yet (register state here)."""

    def on_fit_start(self, trainer) -> None:
        """Resumed (if at all), trackers open; the first step is `trainer.state.step + 1`."""

    def on_step_start(self, trainer, step: int) -> None:
        """Optimizer step `step` (from 1) is about to run."""

    def on_micro_batch_start(self, trainer, step: int, index: int) -> None:
        """Micro-batch `index` (from 0) of step `step` is about to run forward and backward."""

    def on_step_end(self, trainer, step: int, metrics: dict[str, float] | None) -> None:
        """Step `step` is done (optimizer stepped). `metrics`: what was logged at this step (reduced across ranks,
        the same on every rank), or None on steps that do not log."""

    def on_eval_start(self, trainer, step: int) -> None:
        """Evaluation after step `step` is about to run (the model is switched to eval mode next)."""

    def on_eval_end(self, trainer, step: int, values: dict[str, float]) -> None:
        """Evaluation after step `step` is done; `values` are combined across ranks (identical everywhere)."""

    def before_checkpoint_commit(self, trainer, step: int, directory: Path) -> None:
        """Every rank's files of the checkpoint of `step` are written in `directory`; it is not committed yet."""

    def on_checkpoint_saved(self, trainer, step: int, path: Path) -> None:
        """The checkpoint of `step` is committed at `path` (with checkpoint.async: when the write has finished)."""

    def on_fit_end(self, trainer, result) -> None:
        """Training is over (`result` is the RunResult); the process group is still up."""


HOOKS = [name for name, member in vars(Callback).items() if callable(member) and not name.startswith("_")]


class CallbackList:
    """Calls a hook on every callback that overrides it, in order. Each hook is resolved once, here: a hook nobody
    overrides costs the loop one call of a no-op, not a loop over callbacks."""

    def __init__(self, callbacks: list[Callback]):
        self.callbacks = list(callbacks)
        for hook in HOOKS:
            bound = [getattr(cb, hook) for cb in self.callbacks if getattr(type(cb), hook) is not getattr(Callback, hook)]
            setattr(self, hook, _fan_out(bound))

    def __iter__(self):
        return iter(self.callbacks)


def _fan_out(bound: list[Callable]) -> Callable:
    if not bound:
        return lambda *args, **kwargs: None
    if len(bound) == 1:
        return bound[0]

    def call_all(*args, **kwargs):
        for hook in bound:
            hook(*args, **kwargs)

    return call_all


# ---------------------------------------------------------------- from the config


def resolve_callback(name: str, key: str, base_dir: Path | None = None) -> type[Callback]:
    """A callback class from a registered name or `path/to/file.py:Class` / `package.module:Class`."""
    from dist_train.recipe import import_target

    if not isinstance(name, str) or not name:
        raise UsageError(f"{key}.name: expected a callback name ({one_of(BUILTIN)}) or path/to/file.py:ClassName, "
                         f"got {shown(name)}")
    if ":" not in name:
        if name not in BUILTIN:
            raise UsageError(f"{key}.name: unknown callback '{key_text(name, 200)}'{closest(name, BUILTIN)}; "
                             "registered: "
                             f"{one_of(BUILTIN)}, or path/to/file.py:ClassName for your own")
        name = BUILTIN[name]
    target, _, class_name = name.rpartition(":")
    module = import_target(target, name, base_dir, what=f"{key}.name")
    cls = getattr(module, class_name, None)
    if not (inspect.isclass(cls) and issubclass(cls, Callback)):
        raise UsageError(f"{key}.name: '{key_text(name, 200)}' has no Callback subclass named '{key_text(class_name)}'")
    return cls


@dataclass
class CallbackSpec:
    """One entry of the config's `callbacks:` list, checked: the name as given (a file made absolute) and the
    callback's typed config."""

    name: str
    cls: type[Callback]
    config: Any

    def build(self) -> Callback:
        return self.cls(self.config) if self.cls.Config is not None else self.cls()

    def to_dict(self) -> dict[str, Any]:
        from dist_train.config.typed import to_dict

        return {"name": self.name, **(to_dict(self.config) if self.config is not None else {})}


def callback_specs(raw: Any, base_dir: Path | None) -> list[CallbackSpec]:
    """Check the config's `callbacks:` list; every callback's keys are typed by its `Config` dataclass."""
    from dist_train.config.typed import build
    from dist_train.recipe import canonical_name

    if raw is None:
        return []
    if not isinstance(raw, list):
        raise UsageError(f"callbacks: expected a list of {{name: ..., ...}} entries, got {shown(raw)}")
    specs = []
    for i, entry in enumerate(raw):
        key = f"callbacks[{i}]"
        if not isinstance(entry, dict) or "name" not in entry:
            raise UsageError(f"{key}: expected a mapping with a name, e.g. {{name: profiler, start: 10}}, got "
                             f"{shown(entry)}")
        args = {k: v for k, v in entry.items() if k != "name"}
        cls = resolve_callback(entry["name"], key, base_dir)
        if cls.Config is None:
            if args:
                raise UsageError(f"{key}: callback {key_text(entry['name'], 200)} takes no keys, got "
                                 f"{shown(list(args))}")
            config = None
        else:
            config = build(cls.Config, args, key)
        specs.append(CallbackSpec(canonical_name(entry["name"], base_dir), cls, config))
    return specs
