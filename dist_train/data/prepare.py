"""`dist-train data prepare`: UTF-8 text files into token shards plus index.json (format: dist_train.data.index).

Inputs (files, or folders read recursively in sorted order, hidden names skipped) are cut into chunks of about
`CHUNK_BYTES`, each ending after a newline (else a space, else a character boundary) found by looking at the
file's bytes only; the chunks are tokenized in parallel (`--workers` processes) and written in input order, each
file followed by the tokenizer's end-of-text token. The cut points do not depend on --workers, so neither do the
shards: any number of workers writes the same bytes. A BPE tokenizer is trained on (a sample of) the same chunks.
The folder is assembled next to --out and renamed into place at the end, so a failed run leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import time
import zlib
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dist_train.data import tokenizer as tokenizers_
from dist_train.data.index import BLOCK_BYTES, INDEX_FILE, Shard, ShardIndex, dtype_for, sha256_of, write_index
from dist_train.errors import UsageError

CHUNK_BYTES = 1 << 20
LOOKAHEAD = 1 << 20  # how far past a nominal cut to look for a newline or space


@dataclass(frozen=True)
class Chunk:
    path: str
    start: int
    end: int
    last: bool  # the file's last chunk: an end-of-text token follows it


def input_files(inputs: list[str]) -> list[Path]:
    files = []
    for spec in inputs:
        path = Path(spec)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file()
                           and not any(part.startswith(".") for part in p.relative_to(path).parts))
            if not found:
                raise UsageError(f"INPUT: folder '{spec}' holds no files")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise UsageError(f"INPUT: '{spec}' is neither a file nor a folder")
    return files


def plan_chunks(files: list[Path], chunk_bytes: int = CHUNK_BYTES) -> list[Chunk]:
    chunks = []
    for path in files:
        size = path.stat().st_size
        with open(path, "rb") as f:
            start = 0
            while True:
                end = _cut(f, start + chunk_bytes, size)
                chunks.append(Chunk(str(path), start, end, end >= size))
                if end >= size:
                    break
                start = end
    return chunks


def _cut(f, nominal: int, size: int) -> int:
    if nominal >= size:
        return size
    f.seek(nominal)
    window = f.read(LOOKAHEAD)
    for sep in (b"\n", b" "):
        at = window.find(sep)
        if at >= 0:
            return nominal + at + 1
    # No separator nearby: cut before the next byte that starts a UTF-8 character (not 0b10xxxxxx).
    at = next((i for i, b in enumerate(window[:4]) if b & 0xC0 != 0x80), 0)
    return nominal + at


# ---------------------------------------------------------------- worker side (spawned processes: no torch)

_worker_tokenizer = None  # set in each worker process by _init_worker


def _init_worker(kind: str, tokenizer_file: str | None) -> None:
    global _worker_tokenizer
    if kind == "byte":
        _worker_tokenizer = tokenizers_.ByteTokenizer()
    else:
        _worker_tokenizer = tokenizers_.HFTokenizer.from_file(tokenizer_file, kind)


def _read_text(chunk: Chunk) -> tuple[bytes, str]:
    with open(chunk.path, "rb") as f:
        f.seek(chunk.start)
        data = f.read(chunk.end - chunk.start)
    try:
        return data, data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UsageError(f"INPUT: {chunk.path}: not UTF-8 text at byte offset {chunk.start + e.start} "
                         f"({e.reason}); prepare reads UTF-8 text files only") from None


def _encode(chunk: Chunk) -> np.ndarray:
    data, text = _read_text(chunk)
    if isinstance(_worker_tokenizer, tokenizers_.ByteTokenizer):
        return _worker_tokenizer.encode_bytes(data)
    # One input, whole chunk: encode_batch_fast skips the offsets; one thread, the processes are the parallelism.
    encoded = _worker_tokenizer.tokenizer.encode_batch_fast([text], add_special_tokens=False)[0]
    return np.array(encoded.ids, dtype=np.int64)


def _encoded(chunks: list[Chunk], workers: int, kind: str, tokenizer_file: str | None):
    """Token arrays of the chunks, in order; at most 2 x workers chunks in flight (bounded memory)."""
    if workers == 1:
        _init_worker(kind, tokenizer_file)
        for chunk in chunks:
            yield chunk, _encode(chunk)
        return
    import multiprocessing

    # spawn: the parent may have run tokenizers' thread pool (BPE training), which a fork would inherit broken.
    with multiprocessing.get_context("spawn").Pool(workers, _init_worker, (kind, tokenizer_file)) as pool:
        pending = deque()
        for chunk in chunks:
            pending.append((chunk, pool.apply_async(_encode, (chunk,))))
            if len(pending) >= 2 * workers:
                done, result = pending.popleft()
                yield done, result.get()
        while pending:
            done, result = pending.popleft()
            yield done, result.get()


# ---------------------------------------------------------------- writing shards


class ShardWriter:
    """Appends token arrays to shard_NNNNN.bin files of `shard_tokens` tokens, hashing as it goes."""

    def __init__(self, folder: Path, dtype: str, shard_tokens: int, block_bytes: int = BLOCK_BYTES):
        self.folder, self.dtype, self.shard_tokens, self.block_bytes = folder, np.dtype(dtype).newbyteorder("<"), \
            shard_tokens, block_bytes
        self.shards: list[Shard] = []
        self.file = None

    def write(self, ids: np.ndarray) -> None:
        ids = ids.astype(self.dtype, copy=False)
        while len(ids):
            if self.file is None:
                self._open()
            part, ids = ids[: self.shard_tokens - self.tokens], ids[self.shard_tokens - self.tokens:]
            self._append(memoryview(part.tobytes()))
            self.tokens += len(part)
            if self.tokens == self.shard_tokens:
                self._close()

    def _open(self) -> None:
        self.name = f"shard_{len(self.shards):05d}.bin"
        self.file = open(self.folder / self.name, "wb")
        self.tokens, self.sha, self.blocks, self.crc, self.fill = 0, hashlib.sha256(), [], 0, 0

    def _append(self, data: memoryview) -> None:
        self.file.write(data)
        self.sha.update(data)
        while len(data):
            piece, data = data[: self.block_bytes - self.fill], data[self.block_bytes - self.fill:]
            self.crc, self.fill = zlib.crc32(piece, self.crc), self.fill + len(piece)
            if self.fill == self.block_bytes:
                self.blocks.append(f"{self.crc:08x}")
                self.crc, self.fill = 0, 0

    def _close(self) -> None:
        if self.fill:
            self.blocks.append(f"{self.crc:08x}")
        self.file.close()
        self.file = None
        self.shards.append(Shard(self.name, self.tokens, self.sha.hexdigest(), tuple(self.blocks)))

    def finish(self) -> list[Shard]:
        if self.file is not None:
            self._close()
        return self.shards


# ---------------------------------------------------------------- the command


@dataclass
class Prepared:
    index: ShardIndex
    files: int
    bytes: int
    seconds: float
    train_seconds: float


def prepare(inputs: list[str], out: str, tokenizer: str = "byte", workers: int = 1,
            shard_tokens: int = 100_000_000, bpe_train_mb: float = 1024.0, progress: bool | None = None,
            chunk_bytes: int = CHUNK_BYTES) -> Prepared:
    if workers < 1:
        raise UsageError(f"--workers: {workers} must be at least 1")
    if shard_tokens < 1:
        raise UsageError(f"--shard-tokens: {shard_tokens} must be at least 1")
    kind, arg = tokenizers_.parse_spec(tokenizer)
    target = Path(out)
    if (target / INDEX_FILE).exists():
        raise UsageError(f"--out: '{out}' already holds prepared shards ({INDEX_FILE}); choose another folder or "
                         "delete it")
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise UsageError(f"--out: '{out}' exists and is not an empty folder; choose a new folder")
    files = input_files(inputs)
    chunks = plan_chunks(files, chunk_bytes)
    total_bytes = sum(c.end - c.start for c in chunks)
    show = sys.stderr.isatty() if progress is None else progress
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        work = target.parent / f".{target.name}.partial-{os.getpid()}"
        work.mkdir()
    except OSError as e:
        raise UsageError(f"--out: cannot create '{out}': {e.strerror}") from None
    try:
        started = time.perf_counter()
        tok, tokenizer_meta, tokenizer_file = _setup_tokenizer(kind, arg, chunks, work, bpe_train_mb, show)
        train_seconds = time.perf_counter() - started
        dtype = dtype_for(tok.vocab_size)
        writer = ShardWriter(work, dtype, shard_tokens)
        eos = np.array([tok.eos_id] if tok.eos_id is not None else [], dtype=np.int64)
        from tqdm import tqdm

        start = time.perf_counter()
        with tqdm(total=total_bytes, unit="B", unit_scale=True, desc="tokenizing", disable=not show) as bar:
            for chunk, ids in _encoded(chunks, workers, kind, tokenizer_file):
                writer.write(ids)
                if chunk.last:
                    writer.write(eos)
                bar.update(chunk.end - chunk.start)
        seconds = time.perf_counter() - start
        shards = writer.finish()
        if not shards:
            raise UsageError(f"INPUT: {', '.join(inputs)[:80]}: no text to tokenize (empty files)")
        index = ShardIndex(work, dtype, tok.vocab_size, tok.eos_id, tokenizer_meta, BLOCK_BYTES, tuple(shards))
        write_index(index, {"files": len(files), "bytes": total_bytes})
        if target.exists():
            target.rmdir()  # checked empty above
        work.rename(target)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    index = ShardIndex(target, dtype, tok.vocab_size, tok.eos_id, tokenizer_meta, BLOCK_BYTES, tuple(shards))
    return Prepared(index, len(files), total_bytes, seconds, train_seconds)


def _setup_tokenizer(kind, arg, chunks: list[Chunk], work: Path, bpe_train_mb: float, show: bool):
    if kind == "byte":
        return tokenizers_.ByteTokenizer(), {"kind": "byte"}, None
    file = work / "tokenizer.json"
    if kind == "file":
        tok = tokenizers_.HFTokenizer.from_file(arg)
        shutil.copyfile(arg, file)
    else:
        tok = tokenizers_.train_bpe(_training_texts(chunks, bpe_train_mb), arg, show)
        tok.save(file)
    return tok, {"kind": kind, "file": file.name, "sha256": sha256_of(file)}, str(file)


def _training_texts(chunks: list[Chunk], budget_mb: float):
    """Every k-th chunk, so that a sample of `budget_mb` spans the whole corpus instead of its first files."""
    total = sum(c.end - c.start for c in chunks)
    every = max(1, int(total / (budget_mb * 2**20) + 0.999999)) if budget_mb > 0 else 1
    for chunk in chunks[::every]:
        yield _read_text(chunk)[1]
