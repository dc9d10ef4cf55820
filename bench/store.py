"""Rendezvous store load: how many small operations per second one torch TCPStore server answers (the store
torchrun's agents rendezvous on and every process group bootstraps from), with K client processes.

    python bench/store.py --clients 8 --ops 2000

Each client sets `--ops` keys of 32 bytes, waits for the others (one `add` barrier), then gets `--ops` keys the other
clients set: the set-then-read-everyone's pattern of a rendezvous. Prints the aggregate set and get rates; the
server is torch's default (libuv, one event loop thread). docs/scaling.md turns the rates into times at 1,024 ranks.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time
from datetime import timedelta


def client(port: int, index: int, clients: int, ops: int, out) -> None:
    from torch.distributed import TCPStore

    store = TCPStore("127.0.0.1", port, is_master=False, timeout=timedelta(seconds=120))
    value = b"x" * 32
    t0 = time.perf_counter()
    for j in range(ops):
        store.set(f"k{index}_{j}", value)
    t1 = time.perf_counter()
    store.add("ready", 1)
    while int(store.add("ready", 0)) < clients:
        time.sleep(0.001)
    t2 = time.perf_counter()
    for j in range(ops):
        store.get(f"k{(index + 1 + j) % clients}_{j}")
    t3 = time.perf_counter()
    out.put((t1 - t0, t3 - t2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--ops", type=int, default=2000)
    args = parser.parse_args()
    from torch.distributed import TCPStore

    server = TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False, timeout=timedelta(seconds=120))
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=client, args=(server.port, i, args.clients, args.ops, out))
             for i in range(args.clients)]
    for p in procs:
        p.start()
    times = [out.get(timeout=600) for _ in procs]
    for p in procs:
        p.join()
    total = args.clients * args.ops
    set_s, get_s = max(t[0] for t in times), max(t[1] for t in times)
    print(f"{args.clients} clients x {args.ops} ops: set {total / set_s:,.0f} ops/s, get {total / get_s:,.0f} ops/s "
          f"(aggregate; slowest client's time)")


if __name__ == "__main__":
    main()
