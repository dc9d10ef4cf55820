"""CIFAR-10 through torchvision's CIFAR10 class: generated pickles load (md5 check replaced by an existence check);
missing and corrupt files are one-line errors; fetch without --download says where to get it."""

from __future__ import annotations

import pytest
import torch

from dist_train.datasets import cifar10
from dist_train.errors import UsageError
from support import make_cifar10


def test_loads_generated_batches_in_the_real_layout(tmp_path):
    make_cifar10(tmp_path, n_per_batch=8, n_test=4)
    images, labels = cifar10.load(tmp_path, train=True)
    assert images.shape == (40, 3, 32, 32) and labels.dtype == torch.long
    test_images, _ = cifar10.load(tmp_path, train=False)
    assert test_images.shape == (4, 3, 32, 32)
    # pixel (row 0, col 1) of channel 1 is byte 1024 + 1 of the row, as in the CIFAR format
    import pickle
    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "rb") as f:
        raw = pickle.load(f)["data"][0]
    expected = (raw[1024 + 1] / 255.0 - cifar10.MEAN[1]) / cifar10.STD[1]
    assert test_images[0, 1, 0, 1].item() == pytest.approx(expected, abs=1e-6)


def test_missing(tmp_path):
    with pytest.raises(UsageError, match=r"CIFAR-10 not found .*dist-train data fetch cifar10 .*--download"):
        cifar10.load(tmp_path, train=True)


def test_corrupt(tmp_path):
    make_cifar10(tmp_path, n_per_batch=8, n_test=4)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(UsageError, match=r"CIFAR-10 files in .* are corrupt"):
        cifar10.load(tmp_path, train=True)


def test_fetch_without_download_explains(tmp_path):
    with pytest.raises(UsageError, match=r"no package here ships CIFAR-10"):
        cifar10.fetch(tmp_path)
