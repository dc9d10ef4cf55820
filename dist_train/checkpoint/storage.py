"""Where checkpoints live: a local (or shared) folder, or an object store through fsspec (`checkpoint.dir:
s3://bucket/prefix`).

Both offer what the checkpointer needs, with one difference it must know about: a local folder can be renamed
atomically, an object store cannot. So a local save writes into `.tmp-step_<N>/` and the rename to `step_<N>/` is the
commit (`atomic_rename`), while on an object store the save writes straight into `step_<N>/` and the manifest, written
last in one PUT, is the commit: a prefix without `checkpoint.json` is an unfinished save and is never read.

Credentials and endpoint of an object store come only from the standard environment and config files of its
library (for S3: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY/AWS_PROFILE, ~/.aws/config and credentials,
AWS_ENDPOINT_URL); nothing here reads, prints or stores them, and a URL with credentials in it is refused.
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path
from typing import Union
from urllib.parse import urlsplit

from dist_train.errors import UsageError

Location = Union[Path, str]  # a local path, or the URL of a folder/object ("s3://bucket/prefix/step_5")
INSTALL_S3 = "pip install 'dist-train[s3]'"


def is_url(where) -> bool:
    return isinstance(where, str) and "://" in where


def open_storage(where: Location, key: str = "checkpoint.dir") -> "Storage":
    if "\0" in str(where):
        raise UsageError(f"{key}: {str(where)[:120]!r} contains a NUL byte; give a folder path or s3://bucket/prefix")
    if not is_url(where):
        return LocalStorage(Path(where))
    parts = urlsplit(where)
    if parts.username or parts.password or "@" in parts.netloc:
        raise UsageError(f"{key}: credentials do not belong in the URL; give {parts.scheme}://bucket/prefix and set "
                         "them in the environment or the library's config files (e.g. AWS_PROFILE, ~/.aws/credentials)")
    if not parts.netloc:
        raise UsageError(f"{key}: '{where}' names no bucket; give e.g. {parts.scheme}://bucket/prefix")
    return FsspecStorage(where.rstrip("/"), key)


class Storage:
    root: Location
    atomic_rename: bool

    def child(self, name: str) -> Location:
        return self.join(self.root, name)

    def join(self, location: Location, rel: str) -> Location:
        raise NotImplementedError

    def names(self) -> list[str]:
        """Names of the entries directly under the root ([] if there is none yet)."""
        raise NotImplementedError

    def files(self, location: Location) -> dict[str, int]:
        """Every file under a folder, relative path -> size."""
        raise NotImplementedError

    def exists(self, location: Location) -> bool:
        raise NotImplementedError

    def size(self, location: Location) -> int | None:
        """Bytes of a regular file; None for anything else (a device, a folder, a FIFO); FileNotFoundError if absent."""
        raise NotImplementedError

    def open(self, location: Location, mode: str):
        raise NotImplementedError

    def read_bytes(self, location: Location) -> bytes:
        with self.open(location, "rb") as f:
            return f.read()

    def write_bytes(self, location: Location, data) -> None:
        with self.open(location, "wb") as f:
            f.write(data)

    def make_folder(self, location: Location) -> None:
        raise NotImplementedError

    def remove(self, location: Location, first: str | None = None) -> None:
        """Remove a folder and everything in it (`first`, e.g. the manifest, before the rest); errors ignored."""
        raise NotImplementedError

    def rename(self, source: Location, target: Location) -> None:
        raise NotImplementedError("an object store has no atomic rename")

    def make_durable(self, locations: list[Location]) -> None:
        """Wait until what was written to these files (and folders) survives a power loss."""


class LocalStorage(Storage):
    atomic_rename = True

    def __init__(self, root: Path):
        self.root = root

    def join(self, location, rel):
        return Path(location) / rel

    def names(self):
        return sorted(p.name for p in self.root.iterdir()) if self.root.is_dir() else []

    def files(self, location):
        location = Path(location)
        return {p.relative_to(location).as_posix(): p.stat().st_size
                for p in sorted(location.rglob("*")) if p.is_file()}

    def exists(self, location):
        return Path(location).exists()

    def size(self, location):
        st = os.stat(location)
        return st.st_size if stat.S_ISREG(st.st_mode) else None

    def open(self, location, mode):
        return open(location, mode)

    def make_folder(self, location):
        Path(location).mkdir(parents=True, exist_ok=True)

    def remove(self, location, first=None):
        if first is not None:
            try:
                (Path(location) / first).unlink()
            except OSError:
                pass
        shutil.rmtree(location, ignore_errors=True)

    def rename(self, source, target):
        os.replace(source, target)

    def make_durable(self, locations):
        for location in locations:
            fd = os.open(location, os.O_RDONLY)  # fsync through a read-only descriptor flushes the file's pages
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


class FsspecStorage(Storage):
    atomic_rename = False

    def __init__(self, url: str, key: str):
        try:
            from fsspec.core import url_to_fs

            self.fs, _ = url_to_fs(url)
        except ImportError as e:
            raise UsageError(
                f"{key}: '{url}' needs {e.name or 'its fsspec backend'}; install it with {INSTALL_S3}") from None
        except ValueError as e:
            raise UsageError(
                f"{key}: '{url}' is not a storage URL fsspec knows ({e}); give e.g. s3://bucket/prefix") from None
        self.root = url

    def join(self, location, rel):
        return f"{str(location).rstrip('/')}/{rel}"

    def _fresh(self, location) -> str:
        # s3fs caches listings; other ranks (and other jobs) write here, so every question is asked afresh.
        self.fs.invalidate_cache(location)
        return location

    def names(self):
        try:
            entries = self.fs.ls(self._fresh(self.root), detail=False)
        except FileNotFoundError:
            return []
        return sorted(e.rstrip("/").rsplit("/", 1)[-1] for e in entries)

    def files(self, location):
        prefix = self.fs._strip_protocol(location).rstrip("/") + "/"
        found = self.fs.find(self._fresh(location), detail=True)
        return {name[len(prefix):]: int(info["size"]) for name, info in sorted(found.items())
                if name.startswith(prefix) and info.get("type") != "directory"}

    def exists(self, location):
        return self.fs.exists(self._fresh(location))

    def size(self, location):
        info = self.fs.info(location)
        return int(info["size"]) if info.get("type") != "directory" else None

    def open(self, location, mode):
        return self.fs.open(location, mode)

    def make_folder(self, location):
        pass  # prefixes exist as soon as an object under them does

    def remove(self, location, first=None):
        try:
            if not self.fs.exists(self._fresh(location)):
                return  # one request in the common case: nothing there
            if first is not None:
                try:
                    self.fs.rm(self.join(location, first))
                except FileNotFoundError:
                    pass
            self.fs.rm(location, recursive=True)
        except OSError:
            pass
        finally:
            self.fs.invalidate_cache(location)
