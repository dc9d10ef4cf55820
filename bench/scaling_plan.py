"""The arithmetic behind docs/scaling.md: checkpoint bytes per rank, failure rate, Young/Daly checkpoint interval and
expected goodput for jobs of 1,024 to 16,384 GPUs. No measurement here: every input is a stated constant with its
source, so the tables in the doc can be recomputed (and re-derived for other inputs: edit the constants).

    python bench/scaling_plan.py
"""

from __future__ import annotations

import math

# Parameters of the models (Meta's Llama 3.1 model cards: 8.03 B and 70.6 B).
MODELS = {"8B": 8.03e9, "70B": 70.6e9}
# Bytes per parameter in a dist_train checkpoint under FSDP2/HSDP with AdamW: the sharded fp32 parameters (bf16 is
# only the compute dtype of MixedPrecisionPolicy) + AdamW's exp_avg and exp_avg_sq in fp32.
BYTES_PER_PARAM = 4 + 4 + 4
# Failure rate: Llama 3 pre-training (Dubey et al. 2024, "The Llama 3 Herd of Models", section 3.3.4): 419 unexpected
# interruptions in a 54-day snapshot on 16,384 H100 GPUs.
UNEXPECTED, DAYS, GPUS = 419, 54, 16384
RATE_PER_GPU_HOUR = UNEXPECTED / (DAYS * 24 * GPUS)
# Rank 0 hashing every file one after another before part 9 of issue 13: 0.7 GiB/s (measured in the issue).
HASH_GIB_S = 0.7


def gb(x: float) -> str:
    return f"{x / 1e9:,.1f} GB" if x >= 1e9 else f"{x / 1e6:,.0f} MB"


def interval(delta_s: float, mtbf_s: float) -> float:
    """Daly's first-order optimum (Young's sqrt(2 delta M), minus delta): seconds of training between checkpoints."""
    return math.sqrt(2 * delta_s * mtbf_s) - delta_s


def waste(delta_s: float, tau_s: float, restart_s: float, mtbf_s: float) -> float:
    """Expected fraction of time lost: writing checkpoints, recomputing half an interval per failure, restarting."""
    return delta_s / (tau_s + delta_s) + (tau_s / 2 + restart_s) / mtbf_s


def main() -> None:
    print("checkpoint bytes (total, and per rank over N GPUs; DCP writes each shard once, HSDP replicas deduplicated)")
    for name, params in MODELS.items():
        total = params * BYTES_PER_PARAM
        per = ", ".join(f"N={n}: {gb(total / n)}" for n in (128, 1024, 4096))
        serial = total / (HASH_GIB_S * 2**30)
        print(f"  {name}: {gb(total)} ({total / 2**30:,.0f} GiB) | {per} | rank-0 serial hash at {HASH_GIB_S} GiB/s: "
              f"{serial / 60:,.1f} min; per rank at N=1024: {total / 1024 / (HASH_GIB_S * 2**30):.2f} s")
    print(f"\nfailure rate: {RATE_PER_GPU_HOUR:.3e} unexpected interruptions per GPU-hour")
    for n in (1024, 4096, 16384):
        mtbf = 1 / (RATE_PER_GPU_HOUR * n)
        print(f"  N={n}: MTBF {mtbf:,.1f} h")
        for delta in (5, 60, 300):
            for restart in (120, 600):
                tau = interval(delta, mtbf * 3600)
                w = waste(delta, tau, restart, mtbf * 3600)
                print(f"    checkpoint blocks {delta:>3} s, restart {restart:>3} s: interval {tau / 60:6.1f} min, "
                      f"goodput {100 * (1 - w):5.1f}%")


if __name__ == "__main__":
    main()
