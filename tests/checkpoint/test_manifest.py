"""checkpoint.json is as untrusted as the rest of a checkpoint folder: every field is checked for type and range
before anything uses it, and a bad one is named in one line."""

from __future__ import annotations

import json

import pytest

from dist_train.checkpoint.manifest import InvalidCheckpoint, Manifest


@pytest.fixture(scope="module")
def good(saved_run) -> dict:
    return json.loads((saved_run / "checkpoints" / "step_10" / "checkpoint.json").read_text())


def test_a_manifest_dist_train_wrote_reads_back(good):
    manifest = Manifest.from_json(json.dumps(good).encode())
    assert manifest.step == 10 and manifest.global_batch == 64 and set(manifest.files) >= {".metadata", "rng_rank0.pt"}


@pytest.mark.parametrize("change, message", [
    ({"files": []}, "checkpoint.json: files is [], expected a mapping of file names to their size and sha256"),
    ({"files": {"__0_0.distcp": 7}}, "checkpoint.json: files['__0_0.distcp'] is 7, expected {\"size\": bytes, "
                                     "\"sha256\": 64 hex digits}"),
    ({"files": {"../../etc/passwd": {"size": 1, "sha256": "0" * 64}}},
     "checkpoint.json: files is '../../etc/passwd', expected paths inside the checkpoint folder"),
    ({"model": None}, "checkpoint.json: model is None, expected a mapping of tensor names to shapes"),
    ({"model": {"w": [2, "x"]}}, "checkpoint.json: model['w'] is [2, 'x'], expected a list of non-negative "
                                 "integers (a tensor shape)"),
    ({"global_batch": 0}, "checkpoint.json: global_batch is 0, expected an integer >= 1"),
    ({"global_batch": 32}, "checkpoint.json: global_batch 32 is not batch_size x grad_accum x world_size "
                           "(64 x 1 x 1)"),
    ({"world_size": True}, "checkpoint.json: world_size is True, expected an integer >= 1"),
    ({"step": "10\nresumed from elsewhere"}, "checkpoint.json: step is '10\\nresumed from elsewhere', expected an "
                                             "integer >= 0"),
    ({"strategy": "evil"}, "checkpoint.json: strategy is 'evil', expected one of single, ddp, fsdp, deepspeed"),
    ({"config": "x"}, "checkpoint.json: config is 'x', expected a mapping of config keys"),
    ({"format_version": 9}, "checkpoint.json has format 9, this version reads 2"),
    ({"surprise": 1}, "checkpoint.json has unknown keys ['surprise']"),
])
def test_each_bad_field_is_named(good, change, message):
    with pytest.raises(InvalidCheckpoint) as e:
        Manifest.from_json(json.dumps({**good, **change}).encode())
    assert str(e.value) == message


@pytest.mark.parametrize("data, start", [
    (b"[" * 100_000 + b"]" * 100_000, "checkpoint.json is unreadable (RecursionError"),
    (b"\xff\xfe", "checkpoint.json is unreadable (UnicodeDecodeError"),
    (b"{", "checkpoint.json is unreadable (JSONDecodeError"),
    (b"[1]", "checkpoint.json is not a JSON object (got list)"),
])
def test_unreadable_manifests(data, start):
    with pytest.raises(InvalidCheckpoint) as e:
        Manifest.from_json(data)
    assert str(e.value).startswith(start) and "\n" not in str(e.value)
