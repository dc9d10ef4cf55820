"""The Jargon File (public domain) as one text file (UTF-8), for the character-level language model.

Debian's `jargon-text` package ships it as /usr/share/doc/jargon-text/jargon.txt.gz (1.7 MB of English text).
`fetch` unpacks it to `<root>/jargon.txt`, the char_lm recipe's default `data.path`.
"""

from __future__ import annotations

import gzip
import os
import tempfile
from pathlib import Path

from dist_train.datasets.debian import unpack_package
from dist_train.errors import UsageError

DEBIAN_PACKAGE = "jargon-text"
DEBIAN_FILE = Path("/usr/share/doc/jargon-text/jargon.txt.gz")
FILENAME = "jargon.txt"


def fetch(root: str | os.PathLike, download: bool = False) -> Path:
    if download:
        raise UsageError("data fetch jargon: comes from Debian's jargon-text package, --download has no other source; "
                         "drop --download, or point data.path at any UTF-8 text file")
    target = Path(root) / FILENAME
    if target.is_file():
        return target
    with tempfile.TemporaryDirectory() as tmp:
        source = DEBIAN_FILE if DEBIAN_FILE.is_file() else \
            unpack_package(DEBIAN_PACKAGE, Path(tmp), "jargon") / DEBIAN_FILE.relative_to("/")
        text = gzip.decompress(source.read_bytes())
        target.parent.mkdir(parents=True, exist_ok=True)
        part = target.with_name(target.name + ".part")
        part.write_bytes(text)
        os.replace(part, target)
    return target
