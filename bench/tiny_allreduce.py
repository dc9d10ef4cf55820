"""Latency of the one-element gloo all-reduce that the stop-signal agreement runs at every step boundary
(dist_train.preemption), with torch's flight recorder off and on (the watchdog turns it on).

    torchrun --standalone --nproc-per-node 2 bench/tiny_allreduce.py                    # recorder off
    TORCH_FR_BUFFER_SIZE=2000 torchrun --standalone --nproc-per-node 2 bench/tiny_allreduce.py

Prints the median and 90th percentile of 2,000 blocking all-reduces (after 200 warm-up ones), from rank 0.
"""

from __future__ import annotations

import os
import statistics
import time

import torch
import torch.distributed as dist


def main() -> None:
    dist.init_process_group("gloo")
    flag = torch.zeros(1, dtype=torch.int32)
    times = []
    for i in range(2200):
        start = time.perf_counter()
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        if i >= 200:
            times.append(time.perf_counter() - start)
    if dist.get_rank() == 0:
        times.sort()
        print(f"world {dist.get_world_size()}, TORCH_FR_BUFFER_SIZE={os.environ.get('TORCH_FR_BUFFER_SIZE', '0')}: "
              f"median {1e6 * statistics.median(times):.0f} us, p90 {1e6 * times[int(0.9 * len(times))]:.0f} us")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
