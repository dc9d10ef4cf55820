"""TensorBoard sink: scalars under run_dir/tensorboard through torch.utils.tensorboard (needs the `tensorboard`
package, the optional extra `dist-train[tensorboard]`; imported only when `tracking.tensorboard: true`).

A resumed job adds a new event file to the same folder; TensorBoard shows the files of a folder as one run.
View with `tensorboard --logdir RUN_DIR/tensorboard` (or the parent of several run dirs to compare them).
"""

from __future__ import annotations

from pathlib import Path

from dist_train.errors import UsageError
from dist_train.tracking import Tracker


class TensorBoardTracker(Tracker):
    def __init__(self, log_dir: Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise UsageError(
                "tracking.tensorboard: the tensorboard package is not installed; install it with "
                "pip install 'dist-train[tensorboard]' (or pip install tensorboard), or set tracking.tensorboard=false"
            ) from None
        self.writer = SummaryWriter(log_dir=str(log_dir))

    def log(self, metrics, step):
        for key, value in metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(key, value, global_step=step)

    def close(self):
        if self.writer is not None:
            self.writer.close()
            self.writer = None
