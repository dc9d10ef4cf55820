"""A checkpoint opened outside training (`dist-train export`, `dist-train evaluate`): found, its manifest validated
and every file verified (checksums, and each pickled file read the safe way) before anything of it is used, in the
same way a resume does. Its config is then rebuilt by rebuild.py, which never imports code the checkpoint names."""

from __future__ import annotations

from pathlib import Path

from dist_train.checkpoint.integrity import verify
from dist_train.checkpoint.manifest import InvalidCheckpoint, Manifest
from dist_train.checkpoint.storage import Location, is_url, open_storage
from dist_train.errors import UsageError


def open_verified(location: str, command: str) -> tuple[Location, Manifest]:
    """(where, manifest) of an intact checkpoint folder (a path, or an object store URL); `command` ("export",
    "evaluate") starts every error line."""
    where: Location = location.rstrip("/") if is_url(location) else Path(location)
    storage = open_storage(where, key=command)
    if isinstance(where, Path) and not where.is_dir():
        raise UsageError(f"{command}: checkpoint '{where}' is not a folder; give run_dir/checkpoints/step_<N>")
    try:
        return where, verify(where, storage)
    except InvalidCheckpoint as e:
        raise UsageError(f"{command}: '{where}' is not a usable checkpoint: {e}") from None
