"""Preemption: turn SIGUSR1/SIGTERM into "checkpoint at the next step boundary, then leave (and requeue under SLURM)".

The signal handler only records the signal: saving inside a handler would interrupt a collective half-way on one
rank and deadlock the others. At each step boundary every rank contributes its flag to one all-reduce (MAX), so
all ranks stop after the same step even when the signal reached them at different times, or reached only one.

Cost: the flag travels on a CPU (gloo) group, so the check never waits for the GPU; a one-element gloo all-reduce
costs tens of microseconds against steps of milliseconds or more, which is why we check every step rather than
every k steps: SLURM's warning (`--signal=...@120`) then only has to cover one step plus the checkpoint.

Who sends what: SLURM sends USR1 ahead of the time limit (slurm/*.sbatch forward it to the workers as SIGTERM,
through torchrun, which relays SIGTERM to its workers), preemption sends SIGTERM. After saving, rank 0 runs
`scontrol requeue $SLURM_JOB_ID` when under SLURM; the requeued job resumes from the checkpoint
(`checkpoint.resume: auto`). Outside SLURM, SIGTERM means: save and exit. Either way the process exits with 0.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading

import torch
import torch.distributed as dist

from dist_train import distributed

SIGNALS = (signal.SIGUSR1, signal.SIGTERM)


class Preemption:
    def __init__(self):
        self.signum: int | None = None
        self._previous = {}
        if threading.current_thread() is threading.main_thread():  # Python allows handlers only there
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._record)
        self._group = None
        if dist.is_initialized() and dist.get_world_size() > 1:
            # NCCL cannot reduce a CPU tensor and a CUDA one would sync the stream: keep the flag on gloo.
            self._group = None if dist.get_backend() == "gloo" else dist.new_group(backend="gloo")

    def _record(self, signum, frame) -> None:
        self.signum = signum

    def requested(self) -> bool:
        """True on every rank when any rank got a preemption signal. Call at the same step on all ranks."""
        flag = torch.tensor([0 if self.signum is None else 1], dtype=torch.int32)
        if dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self._group)
        return bool(flag.item())

    def hand_over(self, step: int) -> str:
        """After the checkpoint at `step`: wait for every rank's part, then ask SLURM to requeue the job (rank 0)."""
        distributed.barrier()
        job_id = os.environ.get("SLURM_JOB_ID")
        if job_id is None:
            return f"preempted at step {step}: checkpoint saved; run the same command again to resume"
        if not distributed.is_main():
            return ""
        try:
            done = subprocess.run(["scontrol", "requeue", job_id], capture_output=True, text=True, timeout=60)
            answer = (done.stderr or done.stdout).strip() if done.returncode else ""
        except (OSError, subprocess.SubprocessError) as e:
            answer = str(e)
        if answer:
            return (f"preempted at step {step}: checkpoint saved, but `scontrol requeue {job_id}` failed ({answer}); "
                    "resubmit the job to resume")
        return f"preempted at step {step}: checkpoint saved, SLURM job {job_id} requeued"

    def close(self) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous = {}
