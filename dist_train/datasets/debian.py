"""Get files out of a Debian package without root or network beyond the package mirror.

`apt-get download` + `dpkg-deb -x` needs only the package lists (refreshed once when stale and we are root), and
works whether or not the package is installed (Docker images often drop /usr/share/doc when installing).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from dist_train.errors import UsageError


def unpack_package(package: str, tmp: Path, dataset: str, otherwise: str = "") -> Path:
    """Extract `package` into tmp/x and return that folder (the package's '/'). `otherwise` ends the error
    messages with the alternative, e.g. "; with internet use --download instead"."""
    if not shutil.which("apt-get"):
        raise UsageError(f"data fetch {dataset}: apt-get not found (the data comes from Debian's {package}){otherwise}")

    def download() -> subprocess.CompletedProcess:
        return subprocess.run(["apt-get", "download", package], cwd=tmp, capture_output=True, text=True)

    result = download()
    if result.returncode != 0 and os.geteuid() == 0:
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True)
        result = download()
    debs = list(tmp.glob(f"{package}_*.deb"))
    if result.returncode != 0 or not debs:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise UsageError(f"data fetch {dataset}: apt-get download {package} failed ({last}){otherwise}")
    subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(tmp / "x")], check=True)
    return tmp / "x"
