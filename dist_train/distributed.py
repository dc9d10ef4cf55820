"""Process-group lifetime and the few collectives the runner needs.

Two measured gloo facts shape this file:
- After torchrun restarts a failed group, workers that reuse keys of the agent's store (which outlives restarts)
  reach the dead attempt's address. Where rank 0 hosts the store (srun without torchrun; torchrun with
  TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1, which our launchers set), it is a new, empty store for every attempt. Where
  the agent hosts it, the keys are namespaced by the agent's restart count, which is the same for every worker only
  with one agent (one node): several nodes restart with different counts (dist_train.cluster.torchrun), so a
  multi-node run in that mode gets a warning.
- ~11% of gloo runs abort at exit ("terminate called without an active exception") when the wrapped model and
  optimizer outlive the process group; `shutdown` is given a callback that drops them and collects garbage first.
"""

from __future__ import annotations

import datetime
import gc
import sys
from collections.abc import Callable

import torch
import torch.distributed as dist

from dist_train.cluster import DistEnv

_env: DistEnv = DistEnv.single()
_store = None  # the rendezvous store the process group was built on (a side channel, e.g. for the watchdog)


def init(env: DistEnv, device: torch.device, timeout_s: float = 600.0) -> None:
    global _env, _store
    _env = env
    if not env.is_distributed or dist.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    timeout = datetime.timedelta(seconds=timeout_s)
    store = dist.TCPStore(
        env.master_addr, env.master_port, env.world_size,
        is_master=env.rank == 0 and not env.agent_hosts_store, timeout=timeout,
    )
    if env.agent_hosts_store:
        from dist_train.cluster.torchrun import restart_hazard

        warning = restart_hazard(env)
        if warning and env.is_main:
            print(warning, file=sys.stderr, flush=True)
        store = dist.PrefixStore(f"/attempt_{env.restart_count}", store)
    _store = store
    kwargs = {"device_id": device} if device.type == "cuda" else {}
    dist.init_process_group(backend, store=store, rank=env.rank, world_size=env.world_size, timeout=timeout, **kwargs)


def shutdown(release: Callable[[], None] | None = None) -> None:
    if release is not None:
        release()
    gc.collect()
    if dist.is_initialized():
        dist.destroy_process_group()


def env() -> DistEnv:
    """This process's place in the job (rank, world size, restart count), for recipes and callbacks."""
    return _env


def store():
    """The store every rank of this job shares (None on one process); usable while the process group is stuck."""
    return _store


def is_main() -> bool:
    return _env.is_main


def print0(*args, **kwargs) -> None:
    if _env.is_main:
        print(*args, **kwargs, flush=True)


def all_reduce_(tensor: torch.Tensor, op=dist.ReduceOp.SUM) -> torch.Tensor:
    """In-place all-reduce; a no-op on one process."""
    if dist.is_initialized() and _env.world_size > 1:
        dist.all_reduce(tensor, op=op)
    return tensor


def all_gather_rows(rows: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's rows [n_r, ...] in rank order; ranks may hold different n_r (padded all_gather)."""
    if not (dist.is_initialized() and _env.world_size > 1):
        return rows
    count = torch.tensor([len(rows)], device=rows.device)
    counts = [torch.zeros_like(count) for _ in range(_env.world_size)]
    dist.all_gather(counts, count)
    longest = int(max(c.item() for c in counts))
    padded = torch.zeros((longest, *rows.shape[1:]), dtype=rows.dtype, device=rows.device)
    padded[: len(rows)] = rows
    gathered = [torch.empty_like(padded) for _ in range(_env.world_size)]
    dist.all_gather(gathered, padded)
    return torch.cat([g[: int(c.item())] for g, c in zip(gathered, counts, strict=False)])


def mean_across_ranks(tensor: torch.Tensor) -> torch.Tensor:
    out = all_reduce_(tensor.detach().clone().float())
    return out / _env.world_size


def gather_row(values: torch.Tensor) -> torch.Tensor:
    """Every rank's 1-D `values` (the same length on every rank) as rows [world_size, n], in ONE collective (a
    variable-length gather, all_gather_rows, needs two)."""
    if not (dist.is_initialized() and _env.world_size > 1):
        return values.view(1, -1)
    rows = torch.empty(_env.world_size * len(values), dtype=values.dtype, device=values.device)
    gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor  # old name warns in 2.13
    gather(rows, values)
    return rows.view(_env.world_size, len(values))


def reduce_columns(values: torch.Tensor, ops: tuple[str, ...]) -> list[float]:
    """Several reductions of different kinds in ONE collective: entry i of this rank's 1-D `values` combined across
    ranks by ops[i] ("sum", "max", "min", or "first": rank 0's value). One all-gather of a few numbers costs one
    round trip, where one all-reduce per kind would cost one each; the loop's log step needs four kinds."""
    columns = list(zip(*gather_row(values).tolist(), strict=True))
    reduce = {"sum": sum, "max": max, "min": min, "first": lambda column: column[0]}
    return [reduce[op](column) for op, column in zip(ops, columns, strict=True)]


def any_across_ranks(flag: bool, device: torch.device) -> bool:
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    return bool(all_reduce_(t, dist.ReduceOp.MAX).item())


def barrier() -> None:
    if dist.is_initialized() and _env.world_size > 1:
        dist.barrier()
