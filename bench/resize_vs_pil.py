"""How far the resize of the resized-crop and center policies is from PIL's (formats/SPEC.md, section 14).

    python -m bench.resize_vs_pil [JPEG_FOLDER] [--images 500]

For each of the first N JPEGs (default: the CIFAR-10 test JPEGs under .data/cifar10-jpeg/test),
the image is first resized with PIL to a random size in [48, 400] (seeded), then a
RandomResizedCrop view (the spec's sampler, seed 0) is cut and resized to 224 and to 32 both with
fpkit's resize (torchvision v2 resize on uint8, bilinear, antialias) and with PIL's
``Image.resize(BILINEAR)`` of the same crop.  Prints mean and max absolute differences in uint8 levels.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fpkit.views import ResizedCropPolicy, resize_uint8, views_for


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("folder", nargs="?", default=".data/cifar10-jpeg/test")
    ap.add_argument("--images", type=int, default=500)
    a = ap.parse_args()
    files = sorted(Path(a.folder).rglob("*.jpg"))[: a.images]
    rng = np.random.default_rng(0)
    for size in (224, 32):
        diffs, peak = [], 0
        for n, f in enumerate(files):
            im = Image.open(f).convert("RGB")
            im = im.resize(tuple(int(x) for x in rng.integers(48, 401, 2)), Image.BILINEAR)
            t = torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1)
            top, left, h, w, _ = views_for(ResizedCropPolicy(size), np.array([n]), 1, 0, [t])[0, 0].tolist()
            ours = resize_uint8(t[:, top : top + h, left : left + w], size, size).permute(1, 2, 0).numpy()
            pil = np.asarray(im.crop((left, top, left + w, top + h)).resize((size, size), Image.BILINEAR))
            d = np.abs(ours.astype(np.int16) - pil.astype(np.int16))
            diffs.append(d.mean())
            peak = max(peak, int(d.max()))
        print(f"{len(files)} images, views {size}x{size}: mean |fpkit - PIL| {np.mean(diffs):.4f} levels, max {peak}")


if __name__ == "__main__":
    main()
