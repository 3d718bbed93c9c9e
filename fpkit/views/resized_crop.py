"""The ``resized_crop_flip`` policy: torchvision's RandomResizedCrop + RandomHorizontalFlip.

A view is five integers (top, left, height, width, flip): the crop of rows top..top+height-1
and columns left..left+width-1 of the image, resized to size x size (:mod:`.resize`), mirrored
left-right when flip is 1.  The integers follow torchvision's ``RandomResizedCrop.get_params``
(up to 10 attempts, then the central-crop fallback), drawn from the counter-based SplitMix64
stream of formats/SPEC.md section 5, so they depend only on (seed, sample, view, H, W): any
sharding gives the same views, and images of different sizes get their own crops.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import ConfigError
from ..projection import splitmix64_at
from .resize import as_images, crop_resize, normalize_views

ATTEMPTS = 10
DRAWS_PER_VIEW = 32  # stream outputs reserved per view: 3 per attempt, the flip at 31


@dataclass(frozen=True)
class ResizedCropPolicy:
    """RandomResizedCrop(size, scale, ratio) + RandomHorizontalFlip (when ``flip``)."""

    size: int = 224
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: bool = True

    name = "resized_crop_flip"
    param_width = 5

    def __post_init__(self) -> None:
        if not isinstance(self.size, int) or self.size < 1:
            raise ConfigError(f"--image-size must be a positive integer, got {self.size!r}")
        s0, s1 = self.scale
        if not 0 < s0 <= s1 <= 1:
            raise ConfigError(f"--scale must be LO,HI with 0 < LO <= HI <= 1, got {s0},{s1}")
        r0, r1 = self.ratio
        if not 0 < r0 <= r1:
            raise ConfigError(f"--ratio must be LO,HI with 0 < LO <= HI, got {r0},{r1}")

    @property
    def num_views(self) -> int | None:
        """None: the policy has no finite set of views (``--views all`` is not defined)."""
        return None

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "size": self.size,
            "scale": [float(x) for x in self.scale],
            "ratio": [float(x) for x in self.ratio],
            "flip": self.flip,
        }

    def views_for(self, indices: np.ndarray, count: int | str, seed: int, sizes: np.ndarray) -> np.ndarray:
        """int32 [B, K, 5] (top, left, height, width, flip) for sample ``indices`` of sizes [B, 2] (H, W)."""
        if count == "all" or int(count) < 1:
            raise ConfigError(f"--views must be a positive integer for --policy resized-crop, got {count!r}")
        k = int(count)
        idx = np.asarray(indices, dtype=np.uint64)
        base = (idx[:, None] * np.uint64(k) + np.arange(k, dtype=np.uint64)[None, :]) * np.uint64(DRAWS_PER_VIEW)
        z = splitmix64_at(seed, base[..., None] + np.arange(1, DRAWS_PER_VIEW + 1, dtype=np.uint64))  # [B, K, 32]
        h_img = np.asarray(sizes, dtype=np.int64)[:, 0][:, None]
        w_img = np.asarray(sizes, dtype=np.int64)[:, 1][:, None]
        return _params(z, h_img, w_img, self)


def _uniform(z: np.ndarray) -> np.ndarray:
    return (z >> np.uint64(11)).astype(np.float64) * 2.0**-53


def _params(z: np.ndarray, h_img: np.ndarray, w_img: np.ndarray, p: ResizedCropPolicy) -> np.ndarray:
    """The spec's procedure on stream outputs z [B, K, 32] for images H x W ([B, 1] each)."""
    area = (h_img * w_img).astype(np.float64)[..., None]  # [B, 1, 1]
    s0, s1 = (float(x) for x in p.scale)
    lr0, lr1 = math.log(p.ratio[0]), math.log(p.ratio[1])
    zt = z[..., : 3 * ATTEMPTS].reshape(z.shape[:2] + (ATTEMPTS, 3))
    target = area * (s0 + (s1 - s0) * _uniform(zt[..., 0]))
    aspect = np.exp(lr0 + (lr1 - lr0) * _uniform(zt[..., 1]))
    w = np.round(np.sqrt(target * aspect)).astype(np.int64)  # round half to even, as Python's round
    h = np.round(np.sqrt(target / aspect)).astype(np.int64)
    hh, ww = h_img[..., None], w_img[..., None]
    ok = (w > 0) & (w <= ww) & (h > 0) & (h <= hh)
    zi = zt[..., 2]
    top = ((zi & np.uint64(0xFFFFFFFF)) % np.maximum(hh - h + 1, 1).astype(np.uint64)).astype(np.int64)
    left = ((zi >> np.uint64(32)) % np.maximum(ww - w + 1, 1).astype(np.uint64)).astype(np.int64)
    first = np.argmax(ok, axis=-1)[..., None]  # the first attempt that fits
    pick = lambda a: np.take_along_axis(a, first, axis=-1)[..., 0]  # noqa: E731
    fb = _fallback(h_img, w_img, p.ratio)  # [B, 1, 4]
    found = ok.any(axis=-1)
    out = np.empty(z.shape[:2] + (5,), dtype=np.int64)
    for col, a in enumerate((top, left, h, w)):
        out[..., col] = np.where(found, pick(a), fb[..., col])
    out[..., 4] = (z[..., DRAWS_PER_VIEW - 1] & np.uint64(1)).astype(np.int64) if p.flip else 0
    return out.astype(np.int32)


def _fallback(h_img: np.ndarray, w_img: np.ndarray, ratio: tuple[float, float]) -> np.ndarray:
    """torchvision's central crop when no attempt fits: [B, 1, 4] (top, left, height, width)."""
    out = []
    for hi, wi in zip(h_img[:, 0].tolist(), w_img[:, 0].tolist()):
        in_ratio = wi / hi
        if in_ratio < min(ratio):
            w, h = wi, int(round(wi / min(ratio)))
        elif in_ratio > max(ratio):
            h, w = hi, int(round(hi * max(ratio)))
        else:
            h, w = hi, wi
        out.append([(hi - h) // 2, (wi - w) // 2, h, w])
    return np.asarray(out, dtype=np.int64)[:, None, :]


def cut_resized(
    images, params: torch.Tensor, size: int, mean: torch.Tensor, std: torch.Tensor, channels_last: bool = False
) -> torch.Tensor:
    """Cut each recorded crop of each image, resize it to size x size, flip, normalise.

    Args:
        images: uint8 [B, C, H, W] or a list of B uint8 [C, H_b, W_b] (varied sizes), on the device.
        params: integer [B, K, 5] (top, left, height, width, flip).

    Returns:
        float32 [B*K, C, size, size], views of sample b at rows b*K .. b*K+K-1.
    """
    ims = as_images(images)
    rows = params.to("cpu", torch.long).tolist()
    views = []
    for img, per in zip(ims, rows):
        for top, left, h, w, flip in per:
            v = crop_resize(img, top, left, h, w, size)
            views.append(v.flip(-1) if flip else v)
    return normalize_views(torch.stack(views), mean, std, channels_last)
