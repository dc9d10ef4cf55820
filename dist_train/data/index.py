"""The token-shard format on disk: DIR/index.json plus flat binary shards, and its validation.

A prepared folder holds shard files (token ids, little-endian `dtype`, no header) and `index.json`:

    {"format": "dist_train.token_shards", "version": 1,
     "dtype": "uint16", "vocab_size": 257, "eos_id": 256,
     "tokenizer": {"kind": "byte"}   |  {"kind": "bpe" | "file", "file": "tokenizer.json", "sha256": "..."},
     "block_bytes": 1048576, "total_tokens": 123456,
     "shards": [{"file": "shard_00000.bin", "tokens": 100000, "sha256": "<64 hex>", "blocks": ["<8 hex>", ...]}],
     "sources": {"files": 3, "bytes": 130000}}

The token stream is the shards' tokens in index order (each input file's tokens followed by `eos_id` when the
tokenizer has one). `blocks` holds the CRC-32 of each `block_bytes` block of the shard, so an altered shard is
reported with the offset of the first block that differs; `sha256` covers the whole file.

The index is untrusted input: every key is checked for type and range, and shard names must be plain file names
inside DIR. Errors are one line (UsageError) naming the file, the key or offset, and what would be valid.
"""

from __future__ import annotations

import hashlib
import json
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dist_train.errors import UsageError

FORMAT = "dist_train.token_shards"
VERSION = 1
INDEX_FILE = "index.json"
DTYPES = {"uint16": 2, "uint32": 4}
TOKENIZER_KINDS = ("byte", "bpe", "file")
BLOCK_BYTES = 1 << 20
_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,254}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_CRC32 = re.compile(r"^[0-9a-f]{8}$")
MAX_TOKENS = 1 << 50  # per shard: far beyond any real file, small enough that offsets stay exact in float64
READ_CHUNK = 1 << 24


@dataclass(frozen=True)
class Shard:
    file: str
    tokens: int
    sha256: str
    blocks: tuple[str, ...]


@dataclass(frozen=True)
class ShardIndex:
    folder: Path
    dtype: str
    vocab_size: int
    eos_id: int | None
    tokenizer: dict[str, Any]
    block_bytes: int
    shards: tuple[Shard, ...]

    @property
    def itemsize(self) -> int:
        return DTYPES[self.dtype]

    @property
    def total_tokens(self) -> int:
        return sum(s.tokens for s in self.shards)

    def path_of(self, shard: Shard) -> Path:
        return self.folder / shard.file

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": VERSION, "dtype": self.dtype, "vocab_size": self.vocab_size,
                "eos_id": self.eos_id, "tokenizer": self.tokenizer, "block_bytes": self.block_bytes,
                "total_tokens": self.total_tokens,
                "shards": [{"file": s.file, "tokens": s.tokens, "sha256": s.sha256, "blocks": list(s.blocks)}
                           for s in self.shards]}


def dtype_for(vocab_size: int) -> str:
    return "uint16" if vocab_size <= 1 << 16 else "uint32"


def block_count(nbytes: int, block_bytes: int) -> int:
    return max(1, -(-nbytes // block_bytes))


def is_prepared(path: str | Path) -> bool:
    return (Path(path) / INDEX_FILE).is_file()


def read_index(folder: str | Path, key: str = "data.path") -> ShardIndex:
    """Parse and validate DIR/index.json (not the shards: see verify_shards)."""
    folder = Path(folder)
    where = folder / INDEX_FILE
    if not where.is_file():
        hint = "prepare one with: dist-train data prepare TEXT... --out " + str(folder)
        raise UsageError(f"{key}: '{folder}' has no {INDEX_FILE}; {hint}")
    try:
        raw = json.loads(where.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UsageError(f"{key}: {where}: not valid JSON ({_short(e)}); re-run dist-train data prepare") from None
    return _parse(raw, folder, f"{key}: {where}")


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value) if not isinstance(value, BaseException) else str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _int(obj: dict, name: str, where: str, low: int, high: int) -> int:
    value = obj.get(name)
    if type(value) is not int or not low <= value <= high:  # bool is an int subclass: refused too
        raise UsageError(f"{where}: {name}: {_short(value)} is not an integer in [{low}, {high}]")
    return value


def _parse(raw: Any, folder: Path, where: str) -> ShardIndex:
    if not isinstance(raw, dict):
        raise UsageError(f"{where}: expected a JSON object, got {type(raw).__name__}")
    if raw.get("format") != FORMAT:
        raise UsageError(f"{where}: format: {_short(raw.get('format'))} is not '{FORMAT}' "
                         "(not a folder written by dist-train data prepare)")
    if raw.get("version") != VERSION or type(raw.get("version")) is not int:
        raise UsageError(f"{where}: version: {_short(raw.get('version'))} is not supported; this dist_train reads "
                         f"version {VERSION}")
    dtype = raw.get("dtype")
    if dtype not in DTYPES:
        raise UsageError(f"{where}: dtype: {_short(dtype)} is not one of {', '.join(DTYPES)}")
    vocab_size = _int(raw, "vocab_size", where, 1, 1 << (8 * DTYPES[dtype]))
    eos_id = raw.get("eos_id")
    if eos_id is not None:
        eos_id = _int(raw, "eos_id", where, 0, vocab_size - 1)
    tokenizer = _parse_tokenizer(raw.get("tokenizer"), where)
    block_bytes = _int(raw, "block_bytes", where, 4096, 1 << 30)
    if block_bytes & (block_bytes - 1):
        raise UsageError(f"{where}: block_bytes: {block_bytes} is not a power of two")
    shards_raw = raw.get("shards")
    if not isinstance(shards_raw, list) or not shards_raw:
        raise UsageError(f"{where}: shards: expected a non-empty list of shards, got {_short(shards_raw)}")
    shards, names = [], set()
    for i, entry in enumerate(shards_raw):
        at = f"{where}: shards[{i}]"
        if not isinstance(entry, dict):
            raise UsageError(f"{at}: expected an object with file, tokens, sha256, blocks; got {_short(entry)}")
        name = entry.get("file")
        if not isinstance(name, str) or not _NAME.match(name) or name == INDEX_FILE:
            raise UsageError(f"{at}.file: {_short(name)} is not a plain file name inside the folder "
                             "(letters, digits, . _ -; no path separators)")
        if name in names:
            raise UsageError(f"{at}.file: '{name}' is listed twice")
        names.add(name)
        tokens = _int(entry, "tokens", at, 1, MAX_TOKENS)
        digest = entry.get("sha256")
        if not isinstance(digest, str) or not _SHA256.match(digest):
            raise UsageError(f"{at}.sha256: {_short(digest)} is not 64 lowercase hex digits")
        blocks = entry.get("blocks")
        expected = block_count(tokens * DTYPES[dtype], block_bytes)
        if not isinstance(blocks, list) or len(blocks) != expected or \
                not all(isinstance(b, str) and _CRC32.match(b) for b in blocks):
            raise UsageError(f"{at}.blocks: expected {expected} CRC-32 values (8 hex digits) for {tokens} tokens "
                             f"in blocks of {block_bytes} bytes, got {_short(blocks)}")
        shards.append(Shard(name, tokens, digest, tuple(blocks)))
    index = ShardIndex(folder, dtype, vocab_size, eos_id, tokenizer, block_bytes, tuple(shards))
    total = raw.get("total_tokens")
    if total is not None and total != index.total_tokens:
        raise UsageError(f"{where}: total_tokens: {_short(total)} is not the sum of the shards' tokens "
                         f"({index.total_tokens})")
    return index


def _parse_tokenizer(raw: Any, where: str) -> dict[str, Any]:
    if not isinstance(raw, dict) or raw.get("kind") not in TOKENIZER_KINDS:
        raise UsageError(f"{where}: tokenizer: {_short(raw)} needs a kind, one of {', '.join(TOKENIZER_KINDS)}")
    if raw["kind"] == "byte":
        return {"kind": "byte"}
    name, digest = raw.get("file"), raw.get("sha256")
    if not isinstance(name, str) or not _NAME.match(name):
        raise UsageError(f"{where}: tokenizer.file: {_short(name)} is not a plain file name inside the folder")
    if not isinstance(digest, str) or not _SHA256.match(digest):
        raise UsageError(f"{where}: tokenizer.sha256: {_short(digest)} is not 64 lowercase hex digits")
    return {"kind": raw["kind"], "file": name, "sha256": digest}


def write_index(index: ShardIndex, sources: dict[str, int]) -> None:
    data = index.to_json()
    data["sources"] = sources
    part = index.folder / (INDEX_FILE + ".part")
    part.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    part.replace(index.folder / INDEX_FILE)


def verify_shards(index: ShardIndex, full: bool = False, key: str = "data.path") -> None:
    """Check that the folder holds exactly the shards the index lists, with the listed sizes; with `full`, also
    every block checksum, the SHA-256 of each shard and of the tokenizer file. Raises a one-line UsageError."""
    folder = index.folder
    listed = {s.file for s in index.shards}
    if not folder.is_dir():
        raise UsageError(f"{key}: '{folder}' is not a folder")
    strays = sorted(p.name for p in folder.glob("shard_*.bin") if p.name not in listed)
    if strays:
        raise UsageError(f"{key}: {folder}: {strays[0]} is not in {INDEX_FILE} (it lists {len(listed)} shards): "
                         "the index does not match its shards; re-run dist-train data prepare")
    for shard in index.shards:
        path = index.path_of(shard)
        expected = shard.tokens * index.itemsize
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise UsageError(f"{key}: {path}: missing, {INDEX_FILE} lists it with {shard.tokens} tokens: the index "
                             "does not match its shards; re-run dist-train data prepare") from None
        if size < expected:
            raise UsageError(f"{key}: {path}: truncated at byte offset {size}; {INDEX_FILE} says {expected} bytes "
                             f"({shard.tokens} tokens x {index.itemsize}); re-run dist-train data prepare")
        if size > expected:
            raise UsageError(f"{key}: {path}: {size} bytes, {INDEX_FILE} says {expected} ({shard.tokens} tokens x "
                             f"{index.itemsize}): the index does not match its shards; re-run dist-train data prepare")
    tokenizer = index.tokenizer.get("file")
    if tokenizer is not None and not (folder / tokenizer).is_file():
        raise UsageError(f"{key}: {folder / tokenizer}: missing; {INDEX_FILE} names it as the tokenizer")
    if not full:
        return
    for shard in index.shards:
        _verify_content(index, shard, key)
    if tokenizer is not None and sha256_of(folder / tokenizer) != index.tokenizer["sha256"]:
        raise UsageError(f"{key}: {folder / tokenizer}: altered (its SHA-256 differs from {INDEX_FILE}); "
                         "re-run dist-train data prepare")


def _verify_content(index: ShardIndex, shard: Shard, key: str) -> None:
    import numpy as np

    path, digest = index.path_of(shard), hashlib.sha256()
    with open(path, "rb") as f:
        for block, expected in enumerate(shard.blocks):
            data = f.read(index.block_bytes)
            digest.update(data)
            if f"{zlib.crc32(data):08x}" != expected:
                start = block * index.block_bytes
                raise UsageError(f"{key}: {path}: altered at byte offset {start} (the block of bytes {start}.."
                                 f"{start + len(data)} differs from {INDEX_FILE}'s checksum); re-run dist-train "
                                 "data prepare")
            tokens = np.frombuffer(data, dtype=np.dtype(index.dtype).newbyteorder("<"))
            if len(tokens) and int(tokens.max()) >= index.vocab_size:
                at = int(np.argmax(tokens >= index.vocab_size))
                raise UsageError(f"{key}: {path}: token {int(tokens[at])} at byte offset "
                                 f"{block * index.block_bytes + at * index.itemsize} is outside the vocabulary "
                                 f"(vocab_size {index.vocab_size}): the index does not match its shards")
    if digest.hexdigest() != shard.sha256:
        raise UsageError(f"{key}: {path}: altered (its SHA-256 differs from {INDEX_FILE}, though every block "
                         "checksum matches); re-run dist-train data prepare")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(READ_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
