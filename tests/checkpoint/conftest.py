"""Uninterrupted reference runs for the checkpoint tests, computed once per session and compared against."""

from __future__ import annotations

from pathlib import Path

import pytest

from checkpoint_support import train


class References:
    """Uninterrupted runs, one per setup, computed on first use."""

    def __init__(self, root: Path):
        self.root, self.runs = root, {}

    def get(self, name: str, *extra: str, nproc: int = 1) -> Path:
        if name not in self.runs:
            run_dir = self.root / name
            train(run_dir, *extra, nproc=nproc)
            self.runs[name] = run_dir
        return self.runs[name]


@pytest.fixture(scope="session")
def references(tmp_path_factory) -> References:
    return References(tmp_path_factory.mktemp("references"))


@pytest.fixture(scope="session")
def saved_run(tmp_path_factory) -> Path:
    """A finished 10-step run with checkpoints step_5 and step_10, for tests that copy and tamper with it."""
    run_dir = tmp_path_factory.mktemp("saved") / "run"
    train(run_dir, "train.max_steps=10")
    return run_dir


@pytest.fixture(scope="session")
def s3(tmp_path_factory):
    """A real S3 API (moto's server, on localhost) and the standard AWS environment pointing at it. The keys are
    unique strings, so a test can check they appear nowhere they should not."""
    pytest.importorskip("moto.server", reason="the S3 tests need moto's server: pip install 'moto[server]'")
    pytest.importorskip("s3fs", reason="checkpoints on S3 need s3fs: pip install 'dist-train[s3]'")
    import secrets
    import socket
    import subprocess
    import sys
    import time

    from support import free_port

    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "server.log"
    with open(log, "wb") as out:
        server = subprocess.Popen([sys.executable, "-m", "moto.server", "-p", str(port)], stdout=out, stderr=out)
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                raise RuntimeError(f"moto server did not start: {log.read_text()[-2000:]}")
            time.sleep(0.2)
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "AKIA" + secrets.token_hex(8).upper(),
           "AWS_SECRET_ACCESS_KEY": "secret-" + secrets.token_hex(16), "AWS_DEFAULT_REGION": "us-east-1"}
    yield env
    server.terminate()
    server.wait(timeout=30)
