"""What the fast save path (hashing.py) must keep: digests of exactly the bytes on disk while large writes are
hashed in another thread, tensor records without CRC-32 and small entries in torch.save's non-zip format that
every reader still loads (DCP's own converter and dist_train's weights-only loader), and torch's global CRC
setting left as it was. One process, real DCP, real files."""

from __future__ import annotations

import hashlib
import io
import random

import torch
import torch.utils.serialization.config as serialization_config

from dist_train.checkpoint import safe_load
from dist_train.checkpoint.hashing import OVERLAP, HashingStream, SaveTarget
from dist_train.checkpoint.storage import open_storage


class _Sink(io.RawIOBase):
    def __init__(self):
        self.data = bytearray()

    def writable(self):
        return True

    def write(self, b):
        self.data += bytes(b)
        return memoryview(b).nbytes


def test_large_and_small_writes_hash_to_the_digest_of_the_bytes_in_order():
    rng = random.Random(0)
    sink = _Sink()
    stream = HashingStream(sink)
    sizes = [3, OVERLAP, 17, 5 * OVERLAP + 1, 0, OVERLAP - 1, 2 * OVERLAP]
    for size in sizes:
        stream.write(rng.randbytes(size))
    digest = stream.digest()
    assert digest == {"size": sum(sizes), "sha256": hashlib.sha256(sink.data).hexdigest()}
    assert stream.tell() == len(sink.data)


def _state():
    return {
        "model": {"big": torch.randn(OVERLAP // 2 + 7), "small": torch.arange(5.0)},
        "optimizer": {"state": {"big": {"step": torch.tensor(3.0), "exp_avg": torch.randn(OVERLAP // 2 + 7)}},
                      "param_groups": [{"lr": 0.001, "betas": (0.9, 0.95), "name": "decay", "fused": None,
                                        "params": ["big", "small"]}]},
    }


def test_a_dcp_save_through_the_target_loads_with_dcp_and_the_weights_only_loader(tmp_path):
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    folder = tmp_path / "step_1"
    folder.mkdir()
    target = SaveTarget(open_storage(tmp_path), str(folder))
    state = _state()
    assert serialization_config.save.compute_crc32 is True
    dcp.save(state, storage_writer=target.dcp_writer(), planner=target.dcp_planner(), no_dist=True)
    assert serialization_config.save.compute_crc32 is True  # torch's global is back as it was

    # Every file's digest is that of its bytes on disk (the large tensors were hashed in the helper thread).
    on_disk = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}
    assert {rel: d["sha256"] for rel, d in target.merged.items()} == on_disk

    # DCP's own converter (its default planner, plain torch.load) reads tensors and small entries alike.
    dcp_to_torch_save(folder, tmp_path / "whole.pt")
    whole = torch.load(tmp_path / "whole.pt", weights_only=False)
    assert torch.equal(whole["model"]["big"], state["model"]["big"])
    assert whole["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.95)

    # dist_train's weights-only loader: into a fresh state of the same shape.
    fresh = _state()
    for group in fresh["optimizer"]["param_groups"]:
        group.update(lr=0.5, betas=(0.0, 0.0), name="other")
    safe_load.dcp_load(fresh, str(folder), no_dist=True)
    assert torch.equal(fresh["model"]["big"], state["model"]["big"])
    assert torch.equal(fresh["optimizer"]["state"]["big"]["exp_avg"], state["optimizer"]["state"]["big"]["exp_avg"])
    assert fresh["optimizer"]["param_groups"][0] == state["optimizer"]["param_groups"][0]
