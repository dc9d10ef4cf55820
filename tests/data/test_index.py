"""index.json is untrusted input: each bad type or range, and each mismatch between index and shards, is one
line naming the file and key or offset."""

from __future__ import annotations

import json
import shutil

import pytest

from dist_train.data.index import read_index, verify_shards
from dist_train.errors import UsageError
from support import run_cli


@pytest.fixture
def folder(shards, tmp_path):
    copy = tmp_path / "shards"
    shutil.copytree(shards, copy)
    return copy


def edit_index(folder, change):
    raw = json.loads((folder / "index.json").read_text())
    change(raw)
    (folder / "index.json").write_text(json.dumps(raw))


def one_line_error(folder, full=False) -> str:
    with pytest.raises(UsageError) as e:
        verify_shards(read_index(folder), full=full)
    assert "\n" not in str(e.value)
    return str(e.value)


def set_(path, value):
    def change(raw):
        *parents, last = path
        target = raw
        for p in parents:
            target = target[p]
        target[last] = value
    return change


@pytest.mark.parametrize("change, message", [
    (set_(["format"], "other"), "format: 'other' is not 'dist_train.token_shards'"),
    (set_(["version"], 2), "version: 2 is not supported; this dist_train reads version 1"),
    (set_(["version"], True), "version: True is not supported"),
    (set_(["dtype"], "int8"), "dtype: 'int8' is not one of uint16, uint32"),
    (set_(["vocab_size"], 70000), "vocab_size: 70000 is not an integer in [1, 65536]"),
    (set_(["vocab_size"], "257"), "vocab_size: '257' is not an integer"),
    (set_(["eos_id"], 257), "eos_id: 257 is not an integer in [0, 256]"),
    (set_(["tokenizer"], {"kind": "sentencepiece"}), "tokenizer: {'kind': 'sentencepiece'} needs a kind"),
    (set_(["tokenizer"], {"kind": "bpe", "file": "../x.json", "sha256": "0" * 64}), "tokenizer.file: '../x.json'"),
    (set_(["block_bytes"], 5000), "block_bytes: 5000 is not a power of two"),
    (set_(["shards"], []), "shards: expected a non-empty list"),
    (set_(["shards", 0], "shard_00000.bin"), "shards[0]: expected an object"),
    (set_(["shards", 1, "file"], "../../etc/passwd"), "shards[1].file: '../../etc/passwd' is not a plain file name"),
    (set_(["shards", 1, "file"], "shard_00000.bin"), "shards[1].file: 'shard_00000.bin' is listed twice"),
    (set_(["shards", 0, "tokens"], -4), "shards[0]: tokens: -4 is not an integer in [1, "),
    (set_(["shards", 0, "sha256"], "abc"), "shards[0].sha256: 'abc' is not 64 lowercase hex digits"),
    (set_(["shards", 0, "blocks"], ["xyz"]), "shards[0].blocks: expected 1 CRC-32 values"),
    (set_(["total_tokens"], 5), "total_tokens: 5 is not the sum of the shards' tokens"),
])
def test_bad_index_values_are_named(folder, change, message):
    edit_index(folder, change)
    line = one_line_error(folder)
    assert message in line and "index.json" in line


def test_unparsable_index(folder):
    (folder / "index.json").write_text('{"format": ')
    assert "index.json: not valid JSON" in one_line_error(folder)
    (folder / "index.json").unlink()
    assert "has no index.json; prepare one with: dist-train data prepare" in one_line_error(folder)


def test_index_that_does_not_match_its_shards(folder):
    shutil.copyfile(folder / "shard_00000.bin", folder / "shard_00099.bin")
    line = one_line_error(folder)
    assert "shard_00099.bin is not in index.json (it lists 4 shards): the index does not match" in line
    (folder / "shard_00099.bin").unlink()
    size = (folder / "shard_00003.bin").stat().st_size  # 3468 bytes: the last 1734 tokens
    edit_index(folder, lambda raw: (raw.pop("total_tokens"), raw["shards"][3].update(tokens=1000)))
    assert f"shard_00003.bin: {size} bytes, index.json says 2000 (1000 tokens x 2): the index does not match its " \
        "shards" in one_line_error(folder)
    (folder / "shard_00002.bin").unlink()
    assert "shard_00002.bin: missing, index.json lists it" in one_line_error(folder)


def test_truncated_shard_names_file_and_offset(folder):
    data = (folder / "shard_00001.bin").read_bytes()
    (folder / "shard_00001.bin").write_bytes(data[:1234])
    line = one_line_error(folder)
    assert "shard_00001.bin: truncated at byte offset 1234; index.json says 8000 bytes (4000 tokens x 2)" in line


def test_altered_shard_names_file_and_offset_with_full_verification(folder):
    verify_shards(read_index(folder), full=True)
    data = bytearray((folder / "shard_00002.bin").read_bytes())
    data[5000] ^= 1
    (folder / "shard_00002.bin").write_bytes(bytes(data))
    verify_shards(read_index(folder))  # sizes still match: only full verification reads the bytes
    assert "shard_00002.bin: altered at byte offset 0 (the block of bytes 0..8000" in one_line_error(folder, True)


def test_verify_command_exits_2_with_one_line(folder):
    data = bytearray((folder / "shard_00000.bin").read_bytes())
    data[10] ^= 0xFF
    (folder / "shard_00000.bin").write_bytes(bytes(data))
    r = run_cli("data", "verify", folder, check=False)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert "shard_00000.bin: altered at byte offset 0" in r.stderr
