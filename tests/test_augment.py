"""Views cut on the device equal torchvision's RandomCrop(padding) + flip + ToTensor + Normalize."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image

from fpkit.augment import ViewPolicy, make_views
from fpkit.errors import ConfigError

MEAN = (0.5071, 0.4867, 0.4408)
STD = (0.2675, 0.2565, 0.2761)


def reference_view(img: Image.Image, top: int, left: int, flip: int, padding: int) -> torch.Tensor:
    """torchvision's own pipeline, one PIL image at a time."""
    w, h = img.size
    x = TF.pad(img, padding, fill=0)
    x = TF.crop(x, top, left, h, w)
    if flip:
        x = TF.hflip(x)
    return TF.normalize(TF.to_tensor(x), MEAN, STD)


@pytest.mark.parametrize("padding,size", [(4, 32), (2, 28), (0, 16)])
def test_views_are_bitwise_torchvision(padding, size):
    rng = np.random.default_rng(padding)
    imgs = rng.integers(0, 256, (3, size, size, 3), dtype=np.uint8)
    policy = ViewPolicy(padding)
    params = policy.sample_views(np.arange(3), 5, seed=7)
    batch = torch.from_numpy(imgs).permute(0, 3, 1, 2)
    got = make_views(batch, torch.from_numpy(params), padding, torch.tensor(MEAN), torch.tensor(STD)).view(
        3, 5, 3, size, size
    )
    for i, j in itertools.product(range(3), range(5)):
        top, left, flip = params[i, j].tolist()
        ref = reference_view(Image.fromarray(imgs[i]), top, left, flip, padding)
        assert torch.equal(got[i, j], ref), (i, j, top, left, flip)


def test_channels_last_same_values():
    imgs = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    p = torch.tensor([[[1, 2, 1]], [[0, 0, 0]]])
    a = make_views(imgs, p, 1, torch.zeros(3), torch.ones(3))
    b = make_views(imgs, p, 1, torch.zeros(3), torch.ones(3), channels_last=True)
    assert torch.equal(a, b) and b.is_contiguous(memory_format=torch.channels_last)


def test_all_views_enumerates_policy():
    allv = ViewPolicy(4, True).all_views()
    assert allv.shape == (162, 3)
    assert {tuple(v) for v in allv.tolist()} == set(itertools.product(range(9), range(9), range(2)))
    assert ViewPolicy(2, False).num_views == 25


def test_sample_views_follow_the_spec_formula():
    """Independent pure-Python SplitMix64: view j of sample i is output i*K + j + 1 of the stream."""
    M = 2**64 - 1

    def splitmix(seed, k):
        z = (seed + k * 0x9E3779B97F4A7C15) & M
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M
        return z ^ (z >> 31)

    k, seed = 4, 12345
    got = ViewPolicy(4, True).sample_views(np.array([0, 5, 99]), k, seed)
    for row, i in enumerate([0, 5, 99]):
        for j in range(k):
            z = splitmix(seed, i * k + j + 1)
            assert got[row, j].tolist() == [(z & 0xFFFF) % 9, ((z >> 16) & 0xFFFF) % 9, (z >> 32) & 1]


def test_views_do_not_depend_on_batching():
    p = ViewPolicy()
    whole = p.sample_views(np.arange(10), 3, 1)
    parts = np.concatenate([p.sample_views(np.arange(0, 4), 3, 1), p.sample_views(np.arange(4, 10), 3, 1)])
    assert np.array_equal(whole, parts)


def test_bad_policy():
    with pytest.raises(ConfigError):
        ViewPolicy(-1)
    with pytest.raises(ConfigError):
        ViewPolicy().sample_views(np.arange(2), 0, 0)
