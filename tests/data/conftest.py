"""A small multi-file text corpus and its token shards, shared by the data tests of a session."""

from __future__ import annotations

from pathlib import Path

import pytest

from support import make_text


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Path:
    """Three UTF-8 files (one in a sub-folder, one with multi-byte characters) and a hidden file prepare skips."""
    root = tmp_path_factory.mktemp("corpus")
    (root / "b").mkdir()
    make_text(root / "a.txt", n_chars=7000, seed=1)
    make_text(root / "b" / "c.txt", n_chars=5000, seed=2)
    (root / "b" / "d.txt").write_text("naïve café — ünïcödé\nline two\n" * 40, encoding="utf-8")
    (root / ".hidden").write_text("never read", encoding="utf-8")
    return root


@pytest.fixture(scope="session")
def shards(corpus, tmp_path_factory) -> Path:
    """The corpus as byte-level token shards of 4000 tokens (several shards, windows crossing their ends)."""
    from dist_train.data.prepare import prepare

    out = tmp_path_factory.mktemp("shards") / "byte"
    prepare([str(corpus)], str(out), "byte", shard_tokens=4000, chunk_bytes=1500)
    return out
