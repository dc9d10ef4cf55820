"""Non-finite losses: train.on_nan=stop ends the run on every rank alike, found without a host sync per step;
train.on_nan=skip drops the step, up to train.max_consecutive_skipped_steps / train.max_skipped_steps.

Each step appends (step, detached loss tensor) to `NonFiniteLosses.unchecked`, a list append (the loop holds the
bound method): no device op, no sync. At log and save steps `first_bad_step()` turns the losses since the last
check into one device scalar (the first step whose loss was nan/inf, inf if none), which the caller reduces across
ranks (MIN) inside a collective it makes anyway; if it is finite, `error()` says what happened. The policy
train.on_nan=skip needs the answer before each optimizer step instead, so the loop checks that one per step itself
(one tiny all-reduce), and `skip_limit_error` says when too many steps were skipped.
"""

from __future__ import annotations

import math

import torch

from dist_train.errors import RunError


class NonFiniteLosses:
    def __init__(self, device: torch.device):
        self.device = device
        self.unchecked: list[tuple[int, torch.Tensor]] = []  # (step, loss) since the last check

    def first_bad_step(self) -> torch.Tensor:
        """The first step since the last check whose loss on this rank was not finite (inf: none), as a float64
        scalar on the device, without a host sync; those steps count as checked."""
        first_bad = torch.full((), math.inf, dtype=torch.float64, device=self.device)
        if self.unchecked:
            steps = torch.tensor([s for s, _ in self.unchecked], dtype=torch.float64, device=self.device)
            finite = torch.isfinite(torch.stack([loss for _, loss in self.unchecked]))
            first_bad = torch.where(finite, first_bad, steps).min()
            self.unchecked.clear()
        return first_bad

    @staticmethod
    def error(first_bad: float, last_checkpoint) -> RunError:
        """What to raise when `first_bad`, reduced across ranks, is finite."""
        return RunError(
            f"train.on_nan=stop: the loss was not finite (nan/inf) at step {int(first_bad)}; stopped without saving "
            f"that state (last checkpoint: {last_checkpoint or 'none'}). Lower optimizer.lr, enable "
            "train.clip_grad_norm, or set train.on_nan=skip"
        )


def skip_limit_error(train, step: int, skipped: int, in_a_row: int, last_checkpoint) -> RunError | None:
    """train.on_nan=skip: what to raise once more steps were skipped than train.max_*skipped_steps allow (None:
    within the limits). Every rank counts the same all-reduced flags, so all of them stop at the same step."""
    if train.max_consecutive_skipped_steps is not None and in_a_row > train.max_consecutive_skipped_steps:
        why = f"{in_a_row} steps in a row (steps {step - in_a_row + 1}-{step})"
        key = "max_consecutive_skipped_steps"
    elif train.max_skipped_steps is not None and skipped > train.max_skipped_steps:
        why, key = f"{skipped} steps in all", "max_skipped_steps"
    else:
        return None
    return RunError(
        f"train.on_nan=skip: the loss was not finite (nan/inf) for {why}, more than train.{key}="
        f"{getattr(train, key)}; stopped at step {step} with {skipped} of {step} steps skipped, without saving "
        f"(last checkpoint: {last_checkpoint or 'none'}). Lower optimizer.lr or enable train.clip_grad_norm"
    )
