"""Reading a checkpoint without running code it holds: the one way every dist_train reader opens checkpoint files.

A checkpoint is data, but three of its readers unpickle: DCP's `FileSystemReader.read_metadata` (plain
`pickle.load` of `.metadata`), DCP's default load planner (`torch.load(weights_only=False)` of non-tensor entries)
and DeepSpeed's engine and `zero_to_fp32` (`torch.load(weights_only=False)` of every file). Here:
- `.metadata` goes through `MetadataUnpickler`, which admits only the classes DCP metadata is made of and plain
  containers; every other global (a payload's `os.system`, `builtins.eval`, ...) is refused before anything is
  called, so a payload that would return the real metadata never runs. The result is then checked: every entry
  must point into a file of the checkpoint folder, with no stream transform (dist_train never writes one).
- DCP's non-tensor entries and dist_train's own `.pt` files load with `torch.load(weights_only=True)`.
- DeepSpeed's loaders run under `deepspeed_weights_only()`, which forces `weights_only=True` on the `torch.load`
  calls they make (torch's TORCH_FORCE_WEIGHTS_ONLY_LOAD) and admits the four DeepSpeed classes its files hold.
`dcp_load` (DCP with this reader and planner) is what strategies call, for resume and for export/evaluate alike.
A refusal is `UnsafeCheckpoint`, one line naming the file.
"""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import re
import warnings
from typing import Any

import torch

from dist_train.checkpoint.manifest import InvalidCheckpoint

METADATA = ".metadata"

# (module, name) -> what find_class returns. The DCP metadata classes are dataclasses and an Enum: unpickling one
# sets fields, nothing else runs. torch.Size/dtypes/layouts and pathlib paths are inert values.
_DCP = "torch.distributed.checkpoint.metadata"
_ALLOWED = {
    (_DCP, name) for name in ("Metadata", "TensorStorageMetadata", "BytesStorageMetadata", "ChunkStorageMetadata",
                              "TensorProperties", "MetadataIndex", "StorageMeta", "_MEM_FORMAT_ENCODING")
} | {
    ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
    ("torch", "Size"), ("torch.serialization", "_get_layout"),
    ("pathlib", "PosixPath"), ("pathlib", "PurePosixPath"), ("pathlib", "WindowsPath"), ("pathlib", "PureWindowsPath"),
    ("collections", "OrderedDict"), ("builtins", "set"), ("builtins", "frozenset"), ("builtins", "slice"),
    # Plain tensors: rebuilt by torch's own weights-only rules (see _load_tensor_bytes).
    ("torch._utils", "_rebuild_tensor_v2"),
}
# The classes DeepSpeed (0.16-0.19) pickles into its optimizer-state files, all plain data holders.
DEEPSPEED_CLASSES = [
    ("deepspeed.runtime.zero.config", "ZeroStageEnum"),
    ("deepspeed.utils.tensor_fragment", "fragment_address"),
    ("deepspeed.runtime.fp16.loss_scaler", "LossScaler"),
    ("deepspeed.runtime.fp16.loss_scaler", "DynamicLossScaler"),
]


class UnsafeCheckpoint(InvalidCheckpoint):
    """A checkpoint file that would run code or build objects a checkpoint never holds; the message names it."""


def _load_tensor_bytes(data: bytes):
    # A tensor pickled with plain pickle carries its storage as torch.save bytes, which torch's own
    # `_load_from_bytes` reads with weights_only=False; these are read with weights_only=True instead.
    return torch.load(io.BytesIO(data), weights_only=True)


class MetadataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if module == "torch.storage" and name == "_load_from_bytes":
            return _load_tensor_bytes
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global '{module}.{name}' is not part of DCP metadata")

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("persistent ids are not part of DCP metadata")


def read_metadata(data: bytes, name: str = METADATA):
    """The DCP Metadata in `data`, or UnsafeCheckpoint naming `name`."""
    from torch.distributed.checkpoint.metadata import Metadata

    try:
        metadata = MetadataUnpickler(io.BytesIO(data)).load()
    except pickle.UnpicklingError as e:
        raise UnsafeCheckpoint(f"file {name} is refused: {_short(e)} (a checkpoint holds data, never code)") from None
    except Exception as e:  # noqa: BLE001 - any other malformed pickle: damaged, not dangerous
        raise InvalidCheckpoint(f"file {name} is not readable DCP metadata ({type(e).__name__}: {_short(e)})") from None
    if not isinstance(metadata, Metadata):
        raise InvalidCheckpoint(f"file {name} does not hold DCP metadata (got {type(metadata).__name__})")
    _check_storage(metadata, name)
    return metadata


def _check_storage(metadata, name: str) -> None:
    """Every entry must name a file of this folder (no path, no '..') and carry no stream transform."""
    from torch.distributed.checkpoint.filesystem import _StorageInfo

    if not isinstance(metadata.storage_data, dict):
        raise InvalidCheckpoint(f"file {name}: storage_data is not a mapping")
    for info in metadata.storage_data.values():
        path = getattr(info, "relative_path", None)
        if (not isinstance(info, _StorageInfo) or not isinstance(path, str) or not path or "/" in path
                or "\\" in path or path.startswith(".") or not _is_count(info.offset) or not _is_count(info.length)):
            raise InvalidCheckpoint(f"file {name}: an entry points outside the checkpoint folder ({_short(path)})")
        if info.transform_descriptors:
            raise InvalidCheckpoint(f"file {name}: stream transforms {_short(info.transform_descriptors)} are not "
                                    "read by dist_train")


def _is_count(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


class _SafeMetadataMixin:
    def read_metadata(self, *args: Any, **kwargs: Any):
        from torch.distributed.checkpoint.metadata import StorageMeta

        path = self._get_metadata_path(kwargs.get("rank"))
        with self.fs.create_stream(path, "rb") as stream:
            metadata = read_metadata(stream.read(), os.path.basename(os.fspath(path)))
        if getattr(metadata, "storage_meta", None) is None:
            metadata.storage_meta = StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata


def storage_reader(location):
    """DCP's reader for `location` (a local Path, or a URL such as s3://bucket/prefix/step_5) that reads
    `.metadata` with MetadataUnpickler."""
    if isinstance(location, str) and "://" in location:
        from torch.distributed.checkpoint._fsspec_filesystem import FsspecReader

        class SafeFsspecReader(_SafeMetadataMixin, FsspecReader):
            pass

        return SafeFsspecReader(location)
    from torch.distributed.checkpoint import FileSystemReader

    class SafeFileSystemReader(_SafeMetadataMixin, FileSystemReader):
        pass

    return SafeFileSystemReader(location)


def weights_only_load_planner():
    """DCP's default load planner, except that non-tensor entries (optimizer hyper-parameters, ...) are read with
    `torch.load(weights_only=True)`: the default unpickles them with weights_only=False."""
    from torch.distributed.checkpoint import DefaultLoadPlanner
    from torch.distributed.checkpoint._traverse import set_element

    class WeightsOnlyLoadPlanner(DefaultLoadPlanner):
        def load_bytes(self, read_item, value) -> None:
            try:
                obj = torch.load(value, weights_only=True)
            except pickle.UnpicklingError as e:
                raise UnsafeCheckpoint(f"entry {read_item.dest_index.fqn} is refused: {_short(e)}") from None
            if self.flatten_state_dict:
                set_element(self.original_state_dict, self.mappings[read_item.dest_index.fqn], obj)
            else:
                self.state_dict[read_item.dest_index.fqn] = obj

    return WeightsOnlyLoadPlanner()


def dcp_load(state: dict, location, no_dist: bool) -> None:
    """DCP load of `state` in place from `location`, with the restricted metadata reader and the weights-only
    planner. A refused or malformed file becomes UnsafeCheckpoint/InvalidCheckpoint (one line)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.api import CheckpointException

    try:
        with warnings.catch_warnings():
            # DCP warns that it assumes one process even when told so (no_dist=True); that is the intent here.
            warnings.filterwarnings("ignore", message="torch.distributed is disabled, unavailable or uninitialized")
            dcp.load(state, storage_reader=storage_reader(location), planner=weights_only_load_planner(),
                     no_dist=no_dist)
    except CheckpointException as e:
        inner = [f[0] if isinstance(f, tuple) else f for f in e.failures.values()]
        known = [x for x in inner if isinstance(x, InvalidCheckpoint)]
        if known:
            raise type(known[0])(str(known[0])) from None
        raise InvalidCheckpoint(f"DCP could not load it ({_short(inner[0] if inner else e)})") from None


def torch_load(data_or_path, name: str, mmap: bool = False, allow: list[type] = ()):
    """`torch.load(weights_only=True)` of one checkpoint file (trainer_state.pt, rng_rank<R>.pt, a DeepSpeed file
    with `allow=deepspeed_classes()`); a refusal or damage is one line naming `name`."""
    try:
        source = data_or_path if isinstance(data_or_path, (str, os.PathLike)) else io.BytesIO(data_or_path)
        with torch.serialization.safe_globals(list(allow)):
            return torch.load(source, weights_only=True, map_location="cpu", mmap=mmap)
    except pickle.UnpicklingError as e:
        raise UnsafeCheckpoint(f"file {name} is refused by torch.load(weights_only=True): {_short(e)} (a "
                               "checkpoint holds data, never code)") from None
    except Exception as e:  # noqa: BLE001 - truncated zip, bad magic, ...: damaged
        raise InvalidCheckpoint(f"file {name} is not a readable torch file ({type(e).__name__}: {_short(e)})") from None


def deepspeed_classes() -> list[type]:
    import importlib

    found = []
    for module, name in DEEPSPEED_CLASSES:
        cls = getattr(importlib.import_module(module), name, None)
        if cls is not None:
            found.append(cls)
    return found


@contextlib.contextmanager
def deepspeed_weights_only():
    """Run DeepSpeed's checkpoint loaders with every torch.load forced to weights_only=True (they pass
    weights_only=False), admitting only the plain DeepSpeed classes its files hold."""
    classes = deepspeed_classes()
    previous = os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD")
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    try:
        with torch.serialization.safe_globals(classes):
            yield
    except pickle.UnpicklingError as e:
        raise UnsafeCheckpoint(f"a DeepSpeed file is refused by torch.load(weights_only=True): {_short(e)}") from None
    finally:
        if previous is None:
            os.environ.pop("TORCH_FORCE_WEIGHTS_ONLY_LOAD", None)
        else:
            os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = previous


def _short(e, limit: int = 160) -> str:
    """The useful part of an unpickling error (torch's weights_only message is many lines) in one short line."""
    text = str(e)
    match = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if match:
        return f"it names {match.group(1)}"
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
