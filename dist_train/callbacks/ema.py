"""EMA of the weights (`train.ema: DECAY`): a shadow copy that follows the trained weights, used for evaluation.

After every optimizer step `shadow = decay * shadow + (1 - decay) * weights` (`torch._foreach_lerp_`, the update
torch.optim.swa_utils uses), over parameters and persistent buffers, so BatchNorm statistics follow too; integer
buffers (BatchNorm's batch counter) are copied. The shadow is kept in fp32 whatever the training dtype (an update of
1 - decay = 1e-3 is below bf16's resolution). The first update copies the weights, with no warm-up: it needs a
few multiples of 1/(1-decay) steps. Evaluation swaps the shadow into the model and back (`on_eval_start` /
`on_eval_end`) instead of evaluating a separate copy, so whatever wraps the model (DDP, FSDP, DeepSpeed) runs the
eval as it runs training. At the end the EMA weights stay in the model (the recipe's `on_train_end` sees them) and
rank 0 saves them, gathered in full, as run_dir/ema_model.pt, a state_dict for the recipe's model.

Under sharding the shadow holds this rank's own shards, as the strategy keeps them (`Strategy.ema_tensors`): the
local shards of FSDP2 / tensor-parallel DTensors, the ZeRO-3 partitions, the whole tensors under single, ddp and
ZeRO 0-2, so it costs what the strategy's parameters cost per rank and no collective. It is checkpointed where the
strategy's own state goes (`Strategy.register_state`): inside the DCP checkpoint for single/ddp/fsdp (resharded
with the model on another world size or mesh), beside each rank's files for ZeRO-3. `dist-train evaluate` and
`dist-train export` read it back (`--weights ema`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dist_train.callbacks import Callback
from dist_train.errors import UsageError


@dataclass
class EMAConfig:
    decay: float = field(default=0.999, metadata={"gt": 0, "lt": 1})


def _lerp_(shadow: list, live: list, weight: float) -> None:
    """shadow += weight * (live - shadow), one foreach call per kind of tensor (DTensors and plain tensors do not
    mix in one foreach op)."""
    import torch
    from torch.distributed.tensor import DTensor

    for is_dtensor in (True, False):
        pairs = [(s, t) for s, t in zip(shadow, live) if isinstance(s, DTensor) == is_dtensor]
        if pairs:
            torch._foreach_lerp_([s for s, _ in pairs], [t.to(s.dtype) for s, t in pairs], weight)


class EMA(Callback):
    Config = EMAConfig

    def __init__(self, config: EMAConfig):
        super().__init__(config)
        self.shadow = None  # name -> tensor (this rank's part), allocated at setup
        self.started = False  # False until the first step's update has copied the weights
        self._backup = None  # the trained weights while an evaluation runs on the shadow

    def setup(self, trainer) -> None:
        import torch

        self.strategy = trainer.strategy
        self.run_dir, self.is_main = trainer.run_dir, trainer.env.is_main
        with torch.no_grad():
            # Allocated now, shaped like the strategy's tensors, so that a checkpoint (DCP) can load into it.
            self.shadow = {name: t.detach().clone().float() if t.is_floating_point() else t.detach().clone()
                           for name, t in self.strategy.ema_tensors().items()}
        self.strategy.register_state("ema", self, trainer.state)
        # Buffers are whole on every rank but each rank's BatchNorm statistics follow its own batches: the shadow
        # of them is made rank 0's after each update (a few small broadcasts), so every rank evaluates, and every
        # checkpoint holds, the same EMA statistics whichever rank's copy the checkpoint writes.
        from dist_train.strategies.buffers import named_persistent_buffers

        self._buffers = [name for name, _ in named_persistent_buffers(self.strategy.unwrapped_model)
                         if name in self.shadow and self.shadow[name].is_floating_point()]

    def on_step_end(self, trainer, step, metrics) -> None:
        import torch

        with torch.no_grad():
            live = self.strategy.ema_tensors()
            floating = [name for name, t in live.items() if t.is_floating_point() and self.started]
            _lerp_([self.shadow[n] for n in floating], [live[n].detach() for n in floating], 1.0 - self.config.decay)
            averaged = set(floating)
            for name, t in live.items():
                if name not in averaged:  # integer buffers, and everything at the first update
                    self.shadow[name].copy_(t)
        self.started = True
        if self._buffers:
            from dist_train.strategies.buffers import broadcast_from_rank0

            broadcast_from_rank0([self.shadow[n] for n in self._buffers])

    def _swap_in(self) -> None:
        import torch

        with torch.no_grad():
            live = self.strategy.ema_tensors()
            self._backup = {name: t.detach().clone() for name, t in live.items()}
            for name, t in live.items():
                t.copy_(self.shadow[name])
        self.strategy.ema_tensors_written()

    def on_eval_start(self, trainer, step) -> None:
        if self.started:
            self._swap_in()

    def on_eval_end(self, trainer, step, values) -> None:
        if self._backup is None:
            return
        import torch

        with torch.no_grad():
            for name, t in self.strategy.ema_tensors().items():
                t.copy_(self._backup[name])
        self._backup = None
        self.strategy.ema_tensors_written()

    def on_fit_end(self, trainer, result) -> None:
        if not self.started:
            return
        import torch

        self._swap_in()
        self._backup = None  # the EMA weights stay: they are the result of the run
        full = self.strategy.full_state_dict()  # a collective: the shards gathered onto rank 0
        if self.is_main:
            torch.save(full, self.run_dir / "ema_model.pt")

    def state_dict(self) -> dict:
        return {"decay": self.config.decay, "started": self.started, "shadow": self.shadow}

    def load_state_dict(self, state: dict) -> None:
        import torch

        saved = state.get("shadow")
        if saved is None or not state.get("started", True):
            self.started = False
            return
        if saved.keys() != self.shadow.keys():
            raise UsageError("train.ema: the checkpoint's EMA holds other tensors than the model "
                             f"({len(saved)} vs {len(self.shadow)}); resume with the config it was trained with")
        with torch.no_grad():
            for name, t in self.shadow.items():
                if saved[name] is not t:  # DCP loads into the shadow itself; a TrainState copy is copied in
                    t.copy_(saved[name])
        self.started = True
