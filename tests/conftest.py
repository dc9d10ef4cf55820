"""Shared fixtures. `support.py` beside this file holds the helpers tests import (generated data, CLI runners)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from support import make_fashion_mnist  # noqa: E402


@pytest.fixture(scope="session")
def fashion_root(tmp_path_factory) -> Path:
    """A tiny Fashion-MNIST in the real idx format (never the Debian data), shared by the session's tests."""
    root = tmp_path_factory.mktemp("fashion")
    make_fashion_mnist(root, n_train=512, n_test=128)
    return root
