"""`dist-train data prepare`: the bytes it writes, for each tokenizer kind, with 1 and 2 worker processes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dist_train.data.index import read_index, verify_shards
from dist_train.data.prepare import plan_chunks, prepare
from dist_train.data.tokenizer import HFTokenizer
from dist_train.errors import UsageError
from data_support import token_stream
from support import run_cli

FILES = ["a.txt", "b/c.txt", "b/d.txt"]  # sorted, recursive; .hidden skipped


def test_byte_shards_are_the_files_bytes_each_followed_by_end_of_text(corpus, shards):
    index = read_index(shards)
    assert (index.dtype, index.vocab_size, index.eos_id, index.tokenizer) == ("uint16", 257, 256, {"kind": "byte"})
    expected = np.concatenate([np.append(np.frombuffer((corpus / f).read_bytes(), np.uint8), 256) for f in FILES])
    assert np.array_equal(token_stream(shards), expected)
    assert len(index.shards) == -(-len(expected) // 4000) and all(s.tokens == 4000 for s in index.shards[:-1])
    raw = json.loads((shards / "index.json").read_text())
    assert raw["format"] == "dist_train.token_shards" and raw["version"] == 1
    assert raw["sources"] == {"files": 3, "bytes": sum((corpus / f).stat().st_size for f in FILES)}
    verify_shards(index, full=True)


def test_chunks_end_after_a_newline_and_cover_each_file(corpus):
    files = [corpus / f for f in FILES]
    chunks = plan_chunks(files, chunk_bytes=1000)
    for f in files:
        mine = [c for c in chunks if c.path == str(f)]
        assert mine[0].start == 0 and mine[-1].end == f.stat().st_size and mine[-1].last
        assert all(a.end == b.start for a, b in zip(mine, mine[1:], strict=False))
        data = f.read_bytes()
        assert all(data[c.end - 1: c.end] in (b"\n", b" ") for c in mine[:-1])


def test_bpe_round_trips_and_two_workers_write_the_same_bytes(corpus, tmp_path):
    one = prepare([str(corpus)], str(tmp_path / "one"), "bpe:300", shard_tokens=3000, chunk_bytes=1500).index
    two = prepare([str(corpus)], str(tmp_path / "two"), "bpe:300", workers=2, shard_tokens=3000,
                  chunk_bytes=1500).index
    assert one.to_json() == two.to_json() and one.tokenizer["kind"] == "bpe" and one.vocab_size <= 300
    assert all((one.folder / s.file).read_bytes() == (two.folder / s.file).read_bytes() for s in one.shards)
    tok = HFTokenizer.from_file(one.folder / "tokenizer.json")
    ids = token_stream(one.folder).astype(np.int64)
    docs = np.split(ids, np.flatnonzero(ids == one.eos_id) + 1)[:-1]
    assert [tok.decode(d[:-1].tolist()) for d in docs] == [(corpus / f).read_text(encoding="utf-8") for f in FILES]
    # an existing tokenizer.json gives the same tokens, and is copied into the folder with its checksum
    again = prepare([str(corpus)], str(tmp_path / "file"), str(one.folder / "tokenizer.json"), shard_tokens=3000,
                    chunk_bytes=1500).index
    assert again.tokenizer["kind"] == "file" and again.tokenizer["sha256"] == one.tokenizer["sha256"]
    assert np.array_equal(token_stream(again.folder), token_stream(one.folder))


def test_bad_inputs_are_one_line_and_leave_nothing_behind(corpus, tmp_path):
    latin = tmp_path / "in" / "latin1.txt"
    latin.parent.mkdir()
    latin.write_bytes(b"ok\n" * 10 + "café".encode("latin-1"))
    with pytest.raises(UsageError, match=r"latin1.txt: not UTF-8 text at byte offset 33"):
        prepare([str(latin)], str(tmp_path / "out"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]  # no partial folder, no out
    for spec, message in (("bpe:100", "VOCAB must be an integer in"), ("bpe:x", "VOCAB"),
                          (str(tmp_path / "none.json"), "neither byte, bpe:VOCAB nor")):
        with pytest.raises(UsageError, match=message):
            prepare([str(corpus)], str(tmp_path / "out"), spec)
    not_json = tmp_path / "in" / "tok.json"
    not_json.write_text("{")
    with pytest.raises(UsageError, match="is not a tokenizers JSON file"):
        prepare([str(corpus)], str(tmp_path / "out"), str(not_json))
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("")
    with pytest.raises(UsageError, match="not an empty folder"):
        prepare([str(corpus)], str(tmp_path / "busy"))
    with pytest.raises(UsageError, match="at least 1"):
        prepare([str(corpus)], str(tmp_path / "out"), workers=0)


def test_cli_prepares_verifies_and_refuses_an_existing_folder(corpus, tmp_path):
    out = tmp_path / "shards"
    r = run_cli("data", "prepare", corpus / "a.txt", corpus / "b", "--out", out, "--shard-tokens", "5000")
    assert f"{out}: " in r.stdout and " MB/s with 1 worker(s)" in r.stdout and "3 shard(s) from 3 file(s)" in r.stdout
    assert "every block matches" in run_cli("data", "verify", out).stdout
    again = run_cli("data", "prepare", corpus, "--out", out, check=False)
    assert again.returncode == 2 and again.stderr.count("\n") == 1 and "already holds prepared shards" in again.stderr
