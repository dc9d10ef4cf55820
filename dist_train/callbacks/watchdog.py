"""The hang watchdog as a callback (`watchdog.timeout_s`, on by default; the mechanism: dist_train.watchdog).

Beats: each micro-batch, each optimizer step, and a checkpoint's shards written and commit. An evaluation pauses the
watchdog (its length depends on the eval set, not on the step) and a hang inside one ends by
`distributed.timeout_s`. The watchdog arms after the first optimizer step and stops at the end of training.
"""

from __future__ import annotations

from dist_train import distributed
from dist_train.callbacks import Callback
from dist_train.watchdog import Watchdog


class HangWatchdog(Callback):
    def __init__(self, config):  # dist_train.config.schema.WatchdogConfig
        super().__init__(config)
        self.watchdog: Watchdog | None = None

    def setup(self, trainer) -> None:
        env = trainer.env
        self.watchdog = Watchdog(self.config.timeout_s, trainer.run_dir, env.rank, env.world_size, distributed.store())

    def on_fit_start(self, trainer) -> None:
        self.watchdog.start()

    def on_step_start(self, trainer, step: int) -> None:
        self.watchdog.beat("waiting for its batch", step)

    def on_micro_batch_start(self, trainer, step: int, index: int) -> None:
        self.watchdog.beat(f"micro-batch {index} (forward, backward)", step)

    def on_step_end(self, trainer, step: int, metrics) -> None:
        self.watchdog.step_done(step)

    def on_eval_start(self, trainer, step: int) -> None:
        self.watchdog.pause()

    def on_eval_end(self, trainer, step: int, values) -> None:
        self.watchdog.resume("evaluation done")

    def before_checkpoint_commit(self, trainer, step: int, directory) -> None:
        self.watchdog.beat("checkpoint files written, committing", step)

    def on_checkpoint_saved(self, trainer, step: int, path) -> None:
        self.watchdog.beat("checkpoint saved", step)

    def on_fit_end(self, trainer, result) -> None:
        self.watchdog.stop()  # what follows (the recipe's on_train_end, e.g. sampling text) is not step-timed
