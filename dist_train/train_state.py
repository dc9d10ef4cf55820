"""The trainer's resumable state: one object, one owner, one save path.

Model, optimizer, schedule and scaler belong to the strategy, which saves them (DCP shards, or DeepSpeed's engine
files). Everything else a resumed run needs lives here: the step, where the data stands, the tracking run id, how
many steps were skipped, why a run ended early, and the state of every stateful component that registers itself
(the EMA and early-stopping callbacks, later a data loader). The checkpointer saves `state_dict()` as
trainer_state.pt (rank 0; it is identical on every rank) and `local_state_dict()` (what differs per rank) beside each
rank's random generators, and hands both back through the `load_*` methods. Nothing else writes resumable state,
and the loaded config is never changed to carry any of it.

Everything in a state dict is plain data and tensors, so it loads with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


class Stateful(Protocol):
    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@dataclass
class TrainState:
    step: int = 0  # optimizer steps completed
    epoch: int = 0  # where the data stands after `step`: the epoch ...
    samples_in_epoch: int = 0  # ... and how many of its samples (of the global order) are consumed
    tracking_run_id: str | None = None  # the W&B run this job logs into, kept across restarts
    skipped_steps: int = 0  # optimizer steps dropped by train.on_nan=skip
    # Set when the run ended for good before train.max_steps (early stopping): a relaunch has nothing to train.
    finished_early: str | None = None
    components: dict[str, Stateful] = field(default_factory=dict, repr=False)  # same on every rank
    local_components: dict[str, Stateful] = field(default_factory=dict, repr=False)  # one per rank

    def register(self, name: str, component: Stateful, local: bool = False) -> None:
        """Make `component`'s state part of every checkpoint; `local`: it differs between ranks."""
        target = self.local_components if local else self.components
        if name in self.components or name in self.local_components:
            raise ValueError(f"train state: a component named {name!r} is already registered")
        target[name] = component

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "epoch": self.epoch, "samples_in_epoch": self.samples_in_epoch,
                "tracking_run_id": self.tracking_run_id, "skipped_steps": self.skipped_steps,
                "finished_early": self.finished_early,
                "components": {name: c.state_dict() for name, c in self.components.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> list[str]:
        """Restore from a checkpoint; returns the registered components the checkpoint had no state for."""
        self.step, self.epoch = int(state["step"]), int(state["epoch"])
        self.samples_in_epoch = int(state["samples_in_epoch"])
        self.tracking_run_id = state.get("tracking_run_id")
        self.skipped_steps = int(state.get("skipped_steps", 0))
        self.finished_early = state.get("finished_early")
        return _load_components(self.components, state.get("components", {}))

    def local_state_dict(self) -> dict[str, Any]:
        return {name: c.state_dict() for name, c in self.local_components.items()}

    def load_local_state_dict(self, state: dict[str, Any]) -> list[str]:
        return _load_components(self.local_components, state)


def _load_components(components: dict[str, Stateful], saved: dict[str, Any]) -> list[str]:
    missing = []
    for name, component in components.items():
        if name in saved:
            component.load_state_dict(saved[name])
        else:
            missing.append(name)
    return missing
