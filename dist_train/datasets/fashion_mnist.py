"""Fashion-MNIST through torchvision's own dataset class, held in memory as normalised tensors.

torchvision's `FashionMNIST(root)` reads the four idx files from `<root>/FashionMNIST/raw/` (uncompressed). With
internet it can download them itself (`fetch(..., download=True)`); without, Debian's `dataset-fashion-mnist`
package ships them gzipped under /usr/share/datasets/fashion-mnist/, and `fetch` unpacks them into place.
"""

from __future__ import annotations

import gzip
import os
import shutil
import tempfile
from pathlib import Path

from dist_train.datasets.debian import unpack_package
from dist_train.errors import UsageError

FILES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
DEBIAN_PACKAGE = "dataset-fashion-mnist"
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
MEAN, STD = 0.2860, 0.3530
FETCH_HINT = "dist-train data fetch fashion-mnist --root {root}"


def raw_dir(root: str | os.PathLike) -> Path:
    return Path(root) / "FashionMNIST" / "raw"


def load(root: str | os.PathLike, train: bool):
    """(images float32 [N,1,28,28] normalised, labels int64 [N]) via torchvision.datasets.FashionMNIST."""
    missing = [f for f in FILES if not (raw_dir(root) / f).is_file()]
    if missing:
        raise UsageError(
            f"data.root: Fashion-MNIST not found in '{raw_dir(root)}' (missing {', '.join(missing)}); "
            f"get it with: {FETCH_HINT.format(root=root)}"
        )
    from dist_train.compat.torchvision import import_torchvision

    tv = import_torchvision()
    try:
        ds = tv.datasets.FashionMNIST(str(root), train=train, download=False)
    except Exception as e:  # torchvision checks the idx magic numbers and sizes
        split = "train" if train else "t10k"
        raise UsageError(
            f"data.root: Fashion-MNIST {split} files in '{raw_dir(root)}' are corrupt ({type(e).__name__}: {e}); "
            f"delete them and run: {FETCH_HINT.format(root=root)}"
        ) from None
    images, labels = ds.data, ds.targets
    if images.ndim != 3 or len(images) != len(labels):
        raise UsageError(f"data.root: Fashion-MNIST files in '{raw_dir(root)}' do not match: "
                         f"{len(images)} images, {len(labels)} labels")
    images = (images.unsqueeze(1).float() / 255.0 - MEAN) / STD
    return images, labels.long()


def train_and_test(root: str | os.PathLike):
    """(train, test) in-memory datasets of (image, label): what a Fashion-MNIST recipe's build_datasets returns."""
    from dist_train.data import InMemoryDataset

    return InMemoryDataset(*load(root, train=True)), InMemoryDataset(*load(root, train=False))


def fetch(root: str | os.PathLike, download: bool = False) -> Path:
    """Put the four idx files under <root>/FashionMNIST/raw/; returns that folder."""
    target = raw_dir(root)
    if all((target / f).is_file() for f in FILES):
        return target
    if download:
        from dist_train.compat.torchvision import import_torchvision

        import_torchvision().datasets.FashionMNIST(str(root), train=True, download=True)
        return target
    with tempfile.TemporaryDirectory() as tmp:
        if all((DEBIAN_DIR / f"{f}.gz").is_file() for f in FILES):
            source = DEBIAN_DIR
        else:
            source = unpack_package(DEBIAN_PACKAGE, Path(tmp), "fashion-mnist",
                                    "; with internet use --download instead") / DEBIAN_DIR.relative_to("/")
        target.mkdir(parents=True, exist_ok=True)
        for f in FILES:
            with gzip.open(source / f"{f}.gz", "rb") as src, open(target / f"{f}.part", "wb") as dst:
                shutil.copyfileobj(src, dst)
            os.replace(target / f"{f}.part", target / f)  # never leave a half-written idx file under its real name
    return target
