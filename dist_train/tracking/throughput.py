"""Throughput and cost figures for each log step: samples/s, tokens/s, step time, data-loading wait share, peak
memory and (on GPU) MFU.

The loop only bumps plain Python counters per step (a perf_counter pair around `next(batches)`, the recipe's
optional token count); everything that needs the device or the other ranks happens on log steps only, inside
the log step's one collective (`local()` in, `figures()` out; dist_train.log_step). Cross-rank figures take the
worst rank (the slowest time, the largest data wait and memory peak), because the slowest or fullest rank is what
limits the job; tokens are summed over ranks.

MFU = recipe FLOPs per sample (forward + backward) x samples/s / (world size x peak dense bf16 FLOP/s of one GPU).
The peak comes from `tracking.peak_tflops`, else from the GPU's name in `PEAK_BF16_TFLOPS`; unknown GPU: no MFU.
"""

from __future__ import annotations

import resource
import sys
import time

import torch

from dist_train import distributed

# Dense (no sparsity) bf16 tensor-core peaks from the vendor data sheets; first matching name fragment wins.
PEAK_BF16_TFLOPS = [
    ("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.0), ("H200", 989.0), ("GH200", 989.0),
    ("B200", 2250.0), ("A100", 312.0), ("L40S", 362.0), ("L4", 121.0), ("A10", 125.0), ("V100", 125.0),
]


def peak_flops(device: torch.device, peak_tflops: float | None) -> float | None:
    """Peak FLOP/s of one device for MFU; None on CPU (no meaningful single peak) or for an unknown GPU."""
    if device.type != "cuda":
        return None
    if peak_tflops is not None:
        return peak_tflops * 1e12
    return peak_flops_of(torch.cuda.get_device_name(device))


def peak_flops_of(gpu_name: str) -> float | None:
    return next((tflops * 1e12 for fragment, tflops in PEAK_BF16_TFLOPS if fragment in gpu_name), None)


def peak_memory_bytes(device: torch.device) -> int:
    """CUDA: the caching allocator's peak allocation; CPU: the process's peak resident set size."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # Linux reports KiB, macOS bytes


class Throughput:
    """Per-rank counters of the current log window. `data_wait_s` and `tokens` count from the start of the run
    (goodput reads the data wait); a window's figures are the differences since `restart()`. Time the loop
    spends outside training steps (evaluations, checkpoint stalls) is `exclude`d from the window, so step_time_s
    and samples_per_s measure training steps alone; those costs are logged on their own (checkpoint_stall_s,
    goodput)."""

    # How each entry of `local()` combines across ranks (dist_train.distributed.reduce_columns).
    REDUCE = ("max", "max", "max", "sum")

    def __init__(self, global_batch: int, world_size: int, device: torch.device, recipe, peak: float | None,
                 readers_per_batch: int = 1):
        self.global_batch, self.world_size, self.device = global_batch, world_size, device
        # Ranks that read the same micro-batch (a tensor-parallel group): their tokens are counted once.
        self.readers_per_batch = readers_per_batch
        self.recipe = recipe
        self.count_tokens = True  # until the recipe says it has no tokens (tokens_in returns None)
        flops = recipe.flops_per_sample()
        self.flops_ratio = flops / (world_size * peak) if flops and peak else None
        self.data_wait_s = 0.0
        self.tokens = 0
        self.restart()

    def restart(self) -> None:
        """Start a new measuring window (after each log step)."""
        self.start = time.perf_counter()
        self.steps = 0
        self.excluded_s = 0.0
        self._wait_before = self.data_wait_s
        self._tokens_before = self.tokens

    def exclude(self, seconds: float) -> None:
        """Leave `seconds` of the window out of the step time (an evaluation, a checkpoint stall)."""
        self.excluded_s += seconds

    def add_tokens(self, batch) -> None:
        if self.count_tokens:
            n = self.recipe.tokens_in(batch)
            if n is None:
                self.count_tokens = False
            else:
                self.tokens += int(n)

    def local(self) -> list[float]:
        """This rank's window: [data wait s, training time s, peak memory bytes, tokens], reduced by REDUCE."""
        elapsed = time.perf_counter() - self.start - self.excluded_s
        return [self.data_wait_s - self._wait_before, elapsed, float(peak_memory_bytes(self.device)),
                float(self.tokens - self._tokens_before)]

    def figures(self, reduced: list[float]) -> dict[str, float]:
        """The window's figures from `local()` reduced across ranks: the slowest rank's time and data wait, the
        largest memory peak, the tokens of all ranks."""
        data_wait_s, elapsed, peak_mem, tokens = reduced
        elapsed = max(elapsed, 1e-9)
        steps = max(self.steps, 1)
        samples_per_s = self.global_batch * steps / elapsed
        figures = {
            "samples_per_s": samples_per_s,
            "step_time_s": elapsed / steps,
            "data_wait_share": min(1.0, data_wait_s / elapsed),
            "peak_mem_gib": peak_mem / 2**30,
        }
        if self.count_tokens:
            figures["tokens_per_s"] = tokens / self.readers_per_batch / elapsed
        if self.flops_ratio is not None:
            figures["mfu"] = self.flops_ratio * samples_per_s
        return figures

    def collect(self) -> dict[str, float]:
        """The window's figures; a collective call: every rank calls it on the same steps. (The loop folds
        `local()` into its one log-step collective instead.)"""
        local = torch.tensor(self.local(), dtype=torch.float64, device=self.device)
        return self.figures(distributed.reduce_columns(local, self.REDUCE))
