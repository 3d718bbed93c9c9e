"""Views for real images (format 1.2): resized-crop and center policies on a folder of JPEGs of
varied sizes and modes, exact replay, and the spec's view sampler against an independent
scalar implementation.  The images are made in tmp_path from the embedded sample."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F2

import fpkit
from fpkit.build import BuildOptions, build
from fpkit.errors import ConfigError, FormatError
from fpkit.format import open_fingerprints
from fpkit.format.digests import sample_digest
from fpkit.images import read_images, rgb_loader
from fpkit.projection import splitmix64_at
from fpkit.views import CenterPolicy, ResizedCropPolicy, cut_views, views_for


def make_varied_folder(root: Path, n: int = 24, seed: int = 0) -> Path:
    """n embedded CIFAR images resized to random sizes in [48, 120], 10 classes: one RGBA PNG,
    one CMYK JPEG, some grayscale JPEGs, the rest RGB JPEGs."""
    src = fpkit.open_source("embedded")
    rng = np.random.default_rng(seed)
    for i in range(n):
        size = tuple(int(x) for x in rng.integers(48, 121, 2))
        img = Image.fromarray(src.get_batch([i])[0].permute(1, 2, 0).numpy()).resize(size, Image.BILINEAR)
        cls = root / "train" / src.classes[i % 10]
        cls.mkdir(parents=True, exist_ok=True)
        if i == 0:
            img.convert("RGBA").save(cls / f"{i:03d}.png")
        elif i == 1:
            img.convert("CMYK").save(cls / f"{i:03d}.jpg", quality=90)
        elif i % 5 == 2:
            img.convert("L").save(cls / f"{i:03d}.jpg", quality=90)
        else:
            img.save(cls / f"{i:03d}.jpg", quality=90)
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return make_varied_folder(tmp_path_factory.mktemp("varied") / "imgs")


def _opts(tmp_path: Path, folder: Path, **kw) -> BuildOptions:
    base = dict(dataset=f"imagefolder:{folder}", output=str(tmp_path / "fp.h5"), views=3, device="cpu")
    base.update(kw)
    return BuildOptions(**base)


# ------------------------------------------------------------------ decoding
def test_batched_decode_equals_pil_for_every_mode(folder):
    src = fpkit.open_source(f"imagefolder:{folder}")
    files = src._files
    sizes = {tuple(t.shape) for t in read_images(files)}
    assert len(sizes) > 10  # varied sizes
    for path, t in zip(files, read_images(files)):
        assert t.dtype == torch.uint8 and t.shape[0] == 3
        assert np.array_equal(t.permute(1, 2, 0).numpy(), np.asarray(rgb_loader(path))), path


# ------------------------------------------------------------------ the sampler of the spec
def _reference_params(seed, n, j, k, h, w, scale, ratio, flip=True):
    """formats/SPEC.md section 5 (1.2), one view, scalar Python: an independent implementation."""
    out = [int(x) for x in splitmix64_at(seed, np.arange(1, 33, dtype=np.uint64) + np.uint64((n * k + j) * 32))]
    u = lambda z: (z >> 11) * 2.0**-53  # noqa: E731
    for t in range(10):
        z0, z1, z2 = out[3 * t : 3 * t + 3]
        area = h * w * (scale[0] + (scale[1] - scale[0]) * u(z0))
        lr0, lr1 = math.log(ratio[0]), math.log(ratio[1])
        aspect = math.exp(lr0 + (lr1 - lr0) * u(z1))
        cw, ch = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
        if 0 < cw <= w and 0 < ch <= h:
            top, left = (z2 & 0xFFFFFFFF) % (h - ch + 1), (z2 >> 32) % (w - cw + 1)
            break
    else:
        r = w / h
        if r < min(ratio):
            cw, ch = w, round(w / min(ratio))
        elif r > max(ratio):
            ch, cw = h, round(h * max(ratio))
        else:
            ch, cw = h, w
        top, left = (h - ch) // 2, (w - cw) // 2
    return [top, left, ch, cw, (out[31] & 1) if flip else 0]


@pytest.mark.parametrize(
    "scale,ratio,sizes",
    [
        ((0.08, 1.0), (3 / 4, 4 / 3), [(48, 120), (120, 48), (77, 77), (500, 375)]),
        ((0.9, 1.0), (1.0, 1.0), [(10, 1000), (1000, 10)]),  # no attempt fits: the fallback
    ],
)
def test_resized_crop_params_follow_the_spec(scale, ratio, sizes):
    p = ResizedCropPolicy(32, scale, ratio)
    idx = np.arange(len(sizes)) + 5
    images = [torch.zeros(3, h, w, dtype=torch.uint8) for h, w in sizes]
    got = views_for(p, idx, 4, 123, images)
    assert got.dtype == np.int32 and got.shape == (len(sizes), 4, 5)
    for b, (h, w) in enumerate(sizes):
        for j in range(4):
            assert got[b, j].tolist() == _reference_params(123, int(idx[b]), j, 4, h, w, scale, ratio)
            top, left, ch, cw, _ = got[b, j]
            assert 0 <= top and top + ch <= h and 0 <= left and left + cw <= w
    # sharding: sample 6 alone gets the views it gets in the batch
    assert np.array_equal(views_for(p, idx[1:2], 4, 123, images[1:2])[0], got[1])


def test_center_equals_torchvision_resize_and_center_crop():
    rng = np.random.default_rng(1)
    for h, w in [(48, 120), (120, 48), (77, 77), (57, 91)]:
        img = torch.from_numpy(rng.integers(0, 256, (3, h, w), dtype=np.uint8))
        p = CenterPolicy(32, 36)
        params = views_for(p, np.array([0]), 1, 0, [img])
        want = v2.Compose([v2.Resize(36, antialias=True), v2.CenterCrop(32)])(img)
        x = cut_views(p, [img], torch.from_numpy(params), torch.zeros(3), torch.ones(3))
        assert torch.equal((x[0] * 255).round().to(torch.uint8), want)


# ------------------------------------------------------------------ builds and replay
def test_pad_crop_refuses_a_varied_folder(tmp_path, folder):
    with pytest.raises(ConfigError, match="--policy resized-crop"):
        build(_opts(tmp_path, folder), quiet=True)


def test_resized_crop_build_replays_exactly(tmp_path, folder):
    res = build(_opts(tmp_path, folder, policy="resized-crop", image_size=40, replay=True), quiet=True)
    fp = open_fingerprints(res.path)
    assert fp.format_version == "1.2"
    m = fp.metadata
    assert m.views.policy == {
        "name": "resized_crop_flip",
        "size": 40,
        "scale": [0.08, 1.0],
        "ratio": [0.75, 4 / 3],
        "flip": True,
    }
    assert m.dataset.image_shape == (None, None, 3)
    assert fp.view_params.dtype == np.int32 and fp.view_params.shape == (24, 3, 5)
    src = fpkit.open_source(f"imagefolder:{folder}")
    files = src._files
    for i, path in enumerate(files):  # the file's digests are those of the PIL pixels
        assert int(fp.sample_digests[i]) == sample_digest(np.asarray(rgb_loader(path)))
    ds = fpkit.FingerprintDataset(fp, src.torch_dataset(), replay=True, check_samples=24)
    torch.manual_seed(0)
    for i in range(len(ds)):
        img, label, target = ds[i]
        j = next(j for j in range(3) if np.array_equal(target.numpy(), fp.table("views")[i, j]))
        top, left, h, w, flip = (int(v) for v in fp.view_params[i, j])
        # independent: PIL crop, then torchvision's functional resize on the uint8 tensor, then flip
        crop = rgb_loader(files[i]).crop((left, top, left + w, top + h))
        t = torch.from_numpy(np.asarray(crop).copy()).permute(2, 0, 1)
        want = F2.resize(t, [40, 40], antialias=True)
        want = want.flip(-1) if flip else want
        assert np.array_equal(np.asarray(img), want.permute(1, 2, 0).numpy())
        # and the teacher's input of that view is ToTensor + Normalize of the replayed image
        x = cut_views(
            ds.policy,
            read_images([files[i]]),
            torch.tensor([[[top, left, h, w, flip]]]),
            torch.tensor(src.mean),
            torch.tensor(src.std),
        )
        norm = torchvision.transforms.Normalize(src.mean, src.std)(torchvision.transforms.functional.to_tensor(img))
        assert torch.equal(x[0], norm)


def test_center_build(tmp_path, folder):
    res = build(_opts(tmp_path, folder, policy="center", image_size=32, replay=True), quiet=True)
    fp = open_fingerprints(res.path)
    assert fp.format_version == "1.2" and fp.metadata.views.per_sample == 1
    assert fp.metadata.views.policy == {"name": "center", "size": 32, "resize": 36}
    src = fpkit.open_source(f"imagefolder:{folder}")
    ds = fpkit.FingerprintDataset(fp, src.torch_dataset(), replay=True)
    img, _, target = ds[3]
    want = v2.Compose([v2.Resize(36, antialias=True), v2.CenterCrop(32)])(read_images([src._files[3]])[0])
    assert np.array_equal(np.asarray(img), want.permute(1, 2, 0).numpy())
    assert np.array_equal(target.numpy(), fp.table("views")[3, 0])


def test_new_policies_need_format_1_2(tmp_path):
    from dataclasses import replace

    from fpkit.format import FingerprintWriter, LayerSpec
    from fpkit.projection import make_projection
    from fpkit.testing import example_contents, example_dataset, example_views

    labels = np.arange(6) % 3
    c = example_contents([LayerSpec("l", "avg", 4, make_projection(4, 8, 0), 0)], labels)
    rc = replace(c, views=replace(example_views(8), policy=ResizedCropPolicy(16).to_dict()))
    with pytest.raises(ConfigError, match="needs format 1.2"):
        FingerprintWriter(tmp_path / "a.h5", rc, version="1.1")
    bad = replace(c, dataset=example_dataset(image_shape=(None, None, 3)))
    with pytest.raises((ConfigError, FormatError)):
        FingerprintWriter(tmp_path / "b.h5", bad)
