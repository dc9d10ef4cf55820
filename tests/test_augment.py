"""Batched torchvision v2 augmentation from config: real transforms, one random draw per group, config errors."""

from __future__ import annotations

import pytest
import torch

from dist_train.augment import AugmentConfig, BatchAugment
from dist_train.errors import UsageError


def test_flip_with_p1_flips_every_image():
    aug = BatchAugment(AugmentConfig(transforms=[{"name": "RandomHorizontalFlip", "p": 1.0}], groups=4))
    x = torch.arange(2 * 1 * 3 * 3, dtype=torch.float32).reshape(2, 1, 3, 3)
    assert torch.equal(aug(x), x.flip(-1))


def test_groups_draw_independently():
    aug = BatchAugment(AugmentConfig(transforms=[{"name": "RandomHorizontalFlip", "p": 0.5}], groups=16))
    x = torch.arange(5, dtype=torch.float32).expand(64, 1, 5, 5).contiguous()
    torch.manual_seed(0)
    flipped = (aug(x)[:, 0, 0, 0] == 4).reshape(16, 4)
    assert (flipped.all(dim=1) | (~flipped).all(dim=1)).all()  # one draw per group
    assert 0 < flipped[:, 0].sum() < 16  # and the groups differ


def test_unknown_transform_and_bad_arguments():
    message = r"augment.transforms\[0\].name: 'RandomFlip' is not a torchvision.transforms.v2"
    with pytest.raises(UsageError, match=message):
        BatchAugment(AugmentConfig(transforms=[{"name": "RandomFlip"}]))
    with pytest.raises(UsageError, match=r"augment.transforms\[1\]: bad arguments \{'degree': 10\} for RandomRotation"):
        transforms = [{"name": "RandomHorizontalFlip"}, {"name": "RandomRotation", "degree": 10}]
        BatchAugment(AugmentConfig(transforms=transforms))
