"""The `slurm` fixture: a real local SLURM cluster (two simulated nodes) for the session, or a skip with the reason."""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from local_cluster import LocalSlurm, SetupError, ensure_hosts, ensure_installed  # noqa: E402


@pytest.fixture(scope="session")
def slurm():
    if os.geteuid() != 0:
        pytest.skip("SLURM tests need root: they install slurm-wlm + munge with apt and start munged/slurmctld/slurmd")
    started = time.monotonic()
    try:
        ensure_installed()
    except SetupError as e:
        pytest.skip(f"cannot install SLURM: {e}")
    added = ensure_hosts()
    if added:
        print(f"\nadded {', '.join(added)} -> 127.0.0.1 to /etc/hosts (simulated SLURM nodes)")
    # Not pytest's tmp_path: its 0700 parents would keep the daemons' files private; this directory is ours alone.
    cluster = LocalSlurm(Path(tempfile.mkdtemp(prefix="dist-train-slurm-")))
    try:
        cluster.start()
    except SetupError as e:
        cluster.stop()
        pytest.skip(f"SLURM daemons did not start: {e}")
    print(f"\nSLURM cluster ready in {time.monotonic() - started:.1f} s (install included) at {cluster.root}")
    yield cluster
    cluster.stop()
