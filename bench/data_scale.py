"""Token shards at scale: `data prepare` throughput and the resident memory of a process reading a multi-GB corpus.

    python bench/data_scale.py --dir /tmp/dt_scale --gb 4        # writes ~4 GB of text and ~8 GB of shards there

1. A synthetic corpus (`--gb` GB of random words from a Zipf-distributed vocabulary, 256 MB files) under DIR/text.
2. prepare MB/s: the byte tokenizer on the whole corpus with --workers 2, and on a 512 MB subset with 1 and 2
   workers; bpe:8192 (training + tokenizing) on a 16 MB subset with 1 and 2 workers.
3. Resident memory of a data-only reader (TokenWindows, 1024-token windows, random batches of 64 for `--seconds`),
   with the shards remapped every 256 MB of reads (the default) and never: peak VmRSS, RssAnon, RssFile.
4. Peak VmRSS of the char_lm transformer trained on the corpus (`--steps` steps, data.num_workers 0), against the
   same run on a 1.7 MB corpus; with `--mem-limit-gb` (root, cgroup v1 memory controller) the multi-GB run is
   also made inside a memory cgroup smaller than the corpus.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

FILE_BYTES = 256 << 20


def env() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def generate(folder: Path, gb: float) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    letters = np.frombuffer(b"etaoinshrdlcumwfgypbvkjxqz", dtype=np.uint8)
    vocab = [bytes(letters[rng.integers(0, 26, size=rng.integers(1, 11))]) for _ in range(20000)]
    blocks = []
    for _ in range(8):  # 8 distinct 16 MB blocks, shuffled into files: fast to write, no two files alike
        words = rng.zipf(1.3, size=3_000_000) % len(vocab)
        text = b" ".join(vocab[w] for w in words)
        lines = [text[i: i + 80] for i in range(0, min(len(text), 16 << 20), 80)]
        blocks.append(b"\n".join(lines) + b"\n")
    files = []
    for i in range(max(1, int(gb * 2**30 / FILE_BYTES))):
        path = folder / f"part_{i:04d}.txt"
        files.append(path)
        if path.is_file() and path.stat().st_size >= FILE_BYTES:
            continue
        with open(path, "wb") as f:
            while f.tell() < FILE_BYTES:
                f.write(blocks[int(rng.integers(len(blocks)))])
    return files


def prepare(inputs: list[Path], out: Path, tokenizer: str, workers: int) -> str:
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "dist_train", "data", "prepare", *map(str, inputs), "--out", str(out),
           "--tokenizer", tokenizer, "--workers", str(workers)]
    return subprocess.run(cmd, check=True, env=env(), capture_output=True, text=True).stdout.strip()


def status(pid: int) -> dict[str, int]:
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                fields[key] = int(value.split()[0]) * 1024
    return fields


def watch(cmd: list[str], cgroup: Path | None = None) -> tuple[dict[str, int], str]:
    """Run cmd, sampling its memory every 0.2 s; the peaks of each figure."""
    proc = subprocess.Popen(cmd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)
    if cgroup is not None:
        (cgroup / "cgroup.procs").write_text(str(proc.pid))
    peaks: dict[str, int] = {}
    while proc.poll() is None:
        try:
            for k, v in status(proc.pid).items():
                peaks[k] = max(peaks.get(k, 0), v)
        except (FileNotFoundError, ProcessLookupError):
            break
        time.sleep(0.2)
    out = proc.communicate()[0]
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{out[-3000:]}")
    return peaks, out


def reader(path: str, remap: int, seconds: float) -> None:
    """The data-only child: random batches of 64 windows of 1024 tokens for `seconds`."""
    from dist_train.data import TokenShards, TokenWindows

    windows = TokenWindows(TokenShards(path, remap_bytes=remap), 1024)
    rng, start, n = np.random.default_rng(0), time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        windows.__getitems__(rng.integers(0, len(windows), size=64))
        n += 64
    print(f"{n:,} windows read ({n * 2050 / 2**30:.1f} GiB of tokens) in {seconds:.0f} s")


def train_cmd(path: Path, steps: int, run_dir: str) -> list[str]:
    return [sys.executable, "-m", "dist_train", "train", str(REPO / "recipes" / "char_lm.yaml"), f"data.path={path}",
            f"train.max_steps={steps}", f"train.log_every={steps}", "train.eval_every=1000000", "sample.length=0",
            "checkpoint.resume=never", "train.early_stopping=null", f"run_dir={run_dir}",
            "dataset.val_fraction=0.000001"]  # a few windows: evaluating 5% of a multi-GB corpus is not the point


def memory_cgroup(limit_gb: float) -> Path | None:
    root = Path("/sys/fs/cgroup/memory")
    if os.geteuid() != 0 or not (root / "memory.limit_in_bytes").exists():
        print(f"(no cgroup v1 memory controller writable at {root}: --mem-limit-gb skipped)")
        return None
    group = root / f"dist_train_bench_{os.getpid()}"
    group.mkdir()
    (group / "memory.limit_in_bytes").write_text(str(int(limit_gb * 2**30)))
    return group


def gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def main() -> None:
    sys.stdout.reconfigure(line_buffering=True)  # progress while it runs (minutes)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default="/tmp/dt_scale")
    parser.add_argument("--gb", type=float, default=4.0)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--mem-limit-gb", type=float, default=0.0)
    parser.add_argument("--small", help="a small prepared folder for the RSS baseline (default: 1.7 MB generated)")
    parser.add_argument("--phases", default="prepare,reader,train",
                        help="which of prepare, reader, train to run (prepare writes the shards the others read)")
    parser.add_argument("--reader", nargs=3, metavar=("PATH", "REMAP", "SECONDS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.reader:
        return reader(args.reader[0], int(args.reader[1]), float(args.reader[2]))
    root = Path(args.dir)
    print(f"uptime: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")
    files = generate(root / "text", args.gb)
    total = sum(f.stat().st_size for f in files)
    print(f"corpus: {len(files)} files, {total / 1e9:.2f} GB of text in {root / 'text'}")

    shards, phases = root / "shards", args.phases.split(",")
    if "prepare" in phases:
        print("prepare, whole corpus:", prepare(files, shards, "byte", 2))
        subset = files[: max(1, (512 << 20) // FILE_BYTES)]
        for workers in (1, 2):
            print(f"prepare, 512 MB, byte, {workers} worker(s):", prepare(subset, root / "subset", "byte", workers))
        small = root / "small_text"
        small.mkdir(exist_ok=True)
        with open(files[0], "rb") as f:
            (small / "a.txt").write_bytes(f.read(16 << 20))
        for workers in (1, 2):
            print(f"prepare, 16 MB, bpe:8192, {workers} worker(s):",
                  prepare([small], root / "bpe", "bpe:8192", workers))
        shutil.rmtree(root / "subset", ignore_errors=True)
    if "reader" in phases:
        read_phase(shards, total, args.seconds)
    if "train" in phases:
        train_phase(root, files, shards, total, args)


def read_phase(shards: Path, total: int, seconds: float) -> None:
    print(f"data-only reader, {seconds:.0f} s of random 1024-token windows over {gib(2 * total)} of shards:")
    for remap, name in ((256 << 20, "maps dropped at +256 MiB of file RSS (default)"), (0, "never remapped")):
        peaks, out = watch([sys.executable, __file__, "--reader", str(shards), str(remap), str(seconds)])
        print(f"  {name}: {out.strip()}; peak VmRSS {gib(peaks['VmRSS'])}, RssAnon {gib(peaks['RssAnon'])}, "
              f"RssFile {gib(peaks['RssFile'])}")


def train_phase(root: Path, files: list[Path], shards: Path, total: int, args) -> None:
    small_shards = Path(args.small) if args.small else root / "small_shards"
    if not args.small:
        (root / "one").mkdir(exist_ok=True)
        with open(files[0], "rb") as f:
            (root / "one" / "a.txt").write_bytes(f.read(1_700_000))
        prepare([root / "one"], small_shards, "byte", 1)
    with tempfile.TemporaryDirectory() as run_dir:
        for path, label in ((small_shards, "1.7 MB corpus"), (shards, f"{gib(2 * total)} of shards")):
            peaks, _ = watch(train_cmd(path, args.steps, f"{run_dir}/{path.name}"))
            print(f"char_lm transformer, {args.steps} steps on {label}: peak VmRSS {gib(peaks['VmRSS'])} "
                  f"(RssAnon {gib(peaks['RssAnon'])}, RssFile {gib(peaks['RssFile'])})")
        if args.mem_limit_gb:
            group = memory_cgroup(args.mem_limit_gb)
            if group is not None:
                try:
                    peaks, _ = watch(train_cmd(shards, args.steps, f"{run_dir}/limited"), cgroup=group)
                    used = int((group / "memory.max_usage_in_bytes").read_text())
                    print(f"  inside a {args.mem_limit_gb:g} GiB memory cgroup: finished, peak VmRSS "
                          f"{gib(peaks['VmRSS'])}, cgroup peak usage (RSS + page cache) {gib(used)}")
                finally:
                    group.rmdir()


if __name__ == "__main__":
    main()
