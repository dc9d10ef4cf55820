"""Set-up time and memory of the epoch order, from N = 10^4 to 10^10 samples, against torch.randperm.

    python bench/data_order.py            # prints one table row per N

Per N: the time to build epoch e's order and evaluate the first global step's indices (what a rank does at an
epoch start or a resume), the Python heap peak while doing so (tracemalloc), and the time for one step's indices
later in the epoch. randperm(N), what the order used to be, is timed up to 10^8 (it needs 8 bytes x N: 8 GB at
10^9, 80 GB at 10^10).
"""

from __future__ import annotations

import argparse
import sys
import time
import tracemalloc
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dist_train.data import BatchLayout, epoch_order  # noqa: E402
from dist_train.data.loading import rank_steps  # noqa: E402


def measure(n: int, layout: BatchLayout, repeat: int = 20) -> tuple[float, float, float]:
    times = []
    for r in range(repeat):
        tracemalloc.start()
        start = time.perf_counter()
        next(rank_steps(n, 0, layout, epoch=r, start_step=0))
        times.append(time.perf_counter() - start)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    order = epoch_order(n, 0, 0)
    mid = n // layout.global_batch // 2 * layout.global_batch
    steps = []
    for _ in range(repeat):
        start = time.perf_counter()
        order[mid: mid + layout.global_batch]
        steps.append(time.perf_counter() - start)
    return min(times), peak, min(steps)


def randperm_time(n: int) -> float:
    start = time.perf_counter()
    torch.randperm(n, generator=torch.Generator().manual_seed(0))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--global-batch", type=int, default=512)
    parser.add_argument("--randperm-max", type=float, default=1e8)
    args = parser.parse_args()
    layout = BatchLayout(args.global_batch, 1, 1, 0)
    print(f"global batch {args.global_batch}, one rank; order times: the best of 20; randperm: one draw")
    print(f"{'N':>8} | {'order set-up + first step':>26} | {'heap peak':>10} | {'a step mid-epoch':>16} | "
          f"{'randperm(N)':>12}")
    for exponent in range(4, 11):
        n = 10**exponent
        setup, peak, step = measure(n, layout)
        perm = f"{randperm_time(n) * 1e3:10.1f} ms" if n <= args.randperm_max else "not run"
        print(f"{'1e' + str(exponent):>8} | {setup * 1e3:23.3f} ms | {peak / 1024:7.1f} KiB | {step * 1e3:13.3f} ms | "
              f"{perm:>12}")


if __name__ == "__main__":
    main()
