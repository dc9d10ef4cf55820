"""Early stopping on an eval metric (`train.early_stopping: {metric, mode, patience, min_delta}`).

The decision is taken from eval values that `dist_train.metrics.reduce_metrics` has already combined across ranks,
so every rank sees the same numbers, runs this same code and stops after the same optimizer step: no extra
collective is needed, and no rank is left waiting in an all-reduce for a peer that has stopped. The best value and
the count of evaluations without improvement are checkpointed, so a relaunch of a run that stopped early does not
train on (the run is complete), and a run resumed before it stopped keeps counting where it was.
"""

from __future__ import annotations

from dist_train.callbacks import Callback
from dist_train.config.schema import EarlyStoppingConfig
from dist_train.errors import UsageError, one_of


class EarlyStopping(Callback):
    Config = EarlyStoppingConfig

    def __init__(self, config: EarlyStoppingConfig):
        super().__init__(config)
        self.best: float | None = None
        self.bad_evals = 0

    def setup(self, trainer) -> None:
        if trainer.eval_data is None:
            raise UsageError(f"train.early_stopping: recipe {trainer.config.recipe} has no eval dataset to stop on")
        names = ["loss", *trainer.recipe.metrics()]
        if self.config.metric not in names:
            raise UsageError(f"train.early_stopping.metric: unknown eval metric '{self.config.metric}'; "
                             f"this recipe reports: {one_of(names)}")
        trainer.state.register("early_stopping", self)

    def should_stop(self, eval_values: dict[str, float]) -> bool:
        """Record one evaluation; True once `patience` evaluations in a row failed to improve on the best."""
        value = eval_values[self.config.metric]
        sign = 1.0 if self.config.mode == "min" else -1.0
        if self.best is None or sign * (self.best - value) > self.config.min_delta:
            self.best, self.bad_evals = value, 0
        else:
            self.bad_evals += 1  # NaN never improves, so a diverged run stops too
        return self.bad_evals >= self.config.patience

    def on_eval_end(self, trainer, step, values) -> None:
        if self.should_stop(values):
            cfg = self.config
            trainer.request_stop(f"early stopping at step {step}: eval {cfg.metric} has not improved on "
                                 f"{self.best:.6g} for {cfg.patience} evaluations", final=True)

    def state_dict(self) -> dict:
        return {"best": self.best, "bad_evals": self.bad_evals}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.bad_evals = state["best"], int(state["bad_evals"])
