"""Fashion-MNIST loader: missing, corrupt (bad idx magic, truncated) files are one-line errors naming the fix."""

from __future__ import annotations

import pytest

from dist_train.datasets import fashion_mnist
from dist_train.errors import UsageError
from support import make_fashion_mnist


def test_loads_generated_files(tmp_path):
    make_fashion_mnist(tmp_path, n_train=32, n_test=16)
    images, labels = fashion_mnist.load(tmp_path, train=False)
    assert images.shape == (16, 1, 28, 28) and labels.shape == (16,)


def test_missing_names_the_fetch_command(tmp_path):
    with pytest.raises(UsageError, match=r"Fashion-MNIST not found .*missing train-images-idx3-ubyte.*"
                                         r"dist-train data fetch fashion-mnist --root"):
        fashion_mnist.load(tmp_path, train=True)


@pytest.mark.parametrize("damage", ["magic", "truncated"])
def test_corrupt_files(tmp_path, damage):
    make_fashion_mnist(tmp_path, n_train=32, n_test=16)
    path = fashion_mnist.raw_dir(tmp_path) / "train-images-idx3-ubyte"
    data = path.read_bytes()
    path.write_bytes(b"\x00\x00\x07\x03" + data[4:] if damage == "magic" else data[: len(data) // 2])
    with pytest.raises(UsageError, match=r"Fashion-MNIST train files in .* are corrupt .*delete them and run: "
                                         r"dist-train data fetch fashion-mnist"):
        fashion_mnist.load(tmp_path, train=True)
