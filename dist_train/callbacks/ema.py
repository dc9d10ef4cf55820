"""EMA of the weights (`train.ema: DECAY`): a shadow copy that follows the trained weights, used for evaluation.

After every optimizer step `shadow = decay * shadow + (1 - decay) * weights` (`torch._foreach_lerp_`, the update
torch.optim.swa_utils uses), over parameters and floating buffers, so BatchNorm statistics follow too; integer
buffers (BatchNorm's batch counter) are copied. The first update copies the weights, with no warm-up: it needs a
few multiples of 1/(1-decay) steps. Evaluation swaps the shadow into the model and back (`on_eval_start` /
`on_eval_end`) instead of evaluating a separate copy, so whatever wraps the model (DDP, FSDP) runs the eval as it
runs training. At the end the EMA weights stay in the model (the recipe's `on_train_end` sees them) and rank 0 saves
them as run_dir/ema_model.pt, a state_dict for the recipe's model. The shadow is part of every checkpoint.

The shadow holds this rank's tensors as the strategy keeps them: the whole model under single/ddp, where every rank
holds the same values.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dist_train.callbacks import Callback


@dataclass
class EMAConfig:
    decay: float = field(default=0.999, metadata={"gt": 0, "lt": 1})


class EMA(Callback):
    Config = EMAConfig

    def __init__(self, config: EMAConfig):
        super().__init__(config)
        self.shadow = None  # name -> tensor, after the first step
        self._backup = None  # the trained weights while an evaluation runs on the shadow

    def setup(self, trainer) -> None:
        self.model = trainer.strategy.unwrapped_model
        self.run_dir, self.is_main = trainer.run_dir, trainer.env.is_main
        trainer.state.register("ema", self)

    def _live(self) -> dict:
        return {**dict(self.model.named_parameters()), **dict(self.model.named_buffers())}

    def on_step_end(self, trainer, step, metrics) -> None:
        import torch

        with torch.no_grad():
            live = self._live()
            if self.shadow is None:
                self.shadow = {name: t.detach().clone() for name, t in live.items()}
                return
            floating = [name for name, t in live.items() if t.is_floating_point()]
            torch._foreach_lerp_([self.shadow[n] for n in floating], [live[n].detach() for n in floating],
                                 1.0 - self.config.decay)
            for name, t in live.items():
                if not t.is_floating_point():
                    self.shadow[name].copy_(t)

    def _swap_in(self) -> None:
        import torch

        with torch.no_grad():
            live = self._live()
            self._backup = {name: t.detach().clone() for name, t in live.items()}
            for name, t in live.items():
                t.copy_(self.shadow[name])

    def on_eval_start(self, trainer, step) -> None:
        if self.shadow is not None:
            self._swap_in()

    def on_eval_end(self, trainer, step, values) -> None:
        if self._backup is None:
            return
        import torch

        with torch.no_grad():
            for name, t in self._live().items():
                t.copy_(self._backup[name])
        self._backup = None

    def on_fit_end(self, trainer, result) -> None:
        if self.shadow is None:
            return
        import torch

        self._swap_in()
        self._backup = None  # the EMA weights stay: they are the result of the run
        if self.is_main:
            torch.save(self.model.state_dict(), self.run_dir / "ema_model.pt")

    def state_dict(self) -> dict:
        return {"decay": self.config.decay, "shadow": self.shadow}

    def load_state_dict(self, state: dict) -> None:
        saved = state.get("shadow")
        if saved is None:
            self.shadow = None
            return
        live = self._live()
        if saved.keys() != live.keys():
            from dist_train.errors import UsageError

            raise UsageError("train.ema: the checkpoint's EMA holds other tensors than the model "
                             f"({len(saved)} vs {len(live)}); resume with the config it was trained with")
        self.shadow = {name: saved[name].to(live[name].device) for name in live}
