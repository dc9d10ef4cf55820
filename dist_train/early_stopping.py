"""Early stopping on an eval metric (`train.early_stopping: {metric, mode, patience, min_delta}`).

The decision is taken from eval values that `dist_train.metrics.reduce_metrics` has already combined across ranks,
so every rank sees the same numbers, runs this same code and stops after the same optimizer step: no extra
collective is needed, and no rank is left waiting in an all-reduce for a peer that has stopped.
"""

from __future__ import annotations

from dist_train.config.schema import EarlyStoppingConfig
from dist_train.errors import UsageError, one_of


class EarlyStopping:
    def __init__(self, cfg: EarlyStoppingConfig, metric_names):
        if cfg.metric not in metric_names:
            raise UsageError(f"train.early_stopping.metric: unknown eval metric '{cfg.metric}'; "
                             f"this recipe reports: {one_of(metric_names)}")
        self.cfg = cfg
        self.best: float | None = None
        self.bad_evals = 0

    def should_stop(self, eval_values: dict[str, float]) -> bool:
        """Record one evaluation; True once `patience` evaluations in a row failed to improve on the best."""
        value = eval_values[self.cfg.metric]
        sign = 1.0 if self.cfg.mode == "min" else -1.0
        if self.best is None or sign * (self.best - value) > self.cfg.min_delta:
            self.best, self.bad_evals = value, 0
        else:
            self.bad_evals += 1  # NaN never improves, so a diverged run stops too
        return self.bad_evals >= self.cfg.patience
