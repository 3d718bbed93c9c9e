"""Augmented views made in batches on the device, pixel-identical to torchvision's pipeline.

The policy is torchvision's ``RandomCrop(size=(H, W), padding=p)`` (zero/black padding of the
uint8 image) followed by ``RandomHorizontalFlip``, then ``ToTensor`` and ``Normalize``.  A view is
three integers (top, left, flip): crop rows ``top..top+H-1`` and columns ``left..left+W-1`` of
the zero-padded image, mirrored left-right when ``flip`` is 1.

View parameters never depend on batching, devices or processes: for sample i and view k of a
K-view build they come from one SplitMix64 draw (formats/SPEC.md, "Views"), so any sharding of
the work gives the same views.  ``count="all"`` enumerates every view of the policy
((2p+1)^2 x 2 = 162 for p = 4 with flips) in the order top, left, flip.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .errors import ConfigError
from .format.layout import policy_view_count
from .projection import splitmix64_at


@dataclass(frozen=True)
class ViewPolicy:
    """Pad-crop-flip augmentation: ``padding`` pixels of zeros on every side, optional flip."""

    padding: int = 4
    flip: bool = True

    def __post_init__(self) -> None:
        if self.padding < 0:
            raise ConfigError(f"padding must be >= 0, got {self.padding}")

    @property
    def num_views(self) -> int:
        """Number of distinct views of the policy (the K of ``count="all"``)."""
        return policy_view_count(self.padding, self.flip)

    def to_dict(self) -> dict:
        return {"name": "pad_crop_flip", "padding": self.padding, "fill": 0, "flip": self.flip}

    def all_views(self) -> np.ndarray:
        """Every view, int16 [V, 3] (top, left, flip), ordered by top, then left, then flip."""
        span = np.arange(2 * self.padding + 1)
        flips = np.array([0, 1] if self.flip else [0])
        top, left, flip = np.meshgrid(span, span, flips, indexing="ij")
        return np.stack([top.ravel(), left.ravel(), flip.ravel()], axis=1).astype(np.int16)

    def sample_views(self, indices: np.ndarray, k: int, seed: int) -> np.ndarray:
        """K seeded random views for each sample index: int16 [B, K, 3].

        With ``z`` the (i*K + j + 1)-th SplitMix64 output of stream ``seed`` (projection.py):
        ``top = (z & 0xFFFF) % (2p+1)``, ``left = ((z >> 16) & 0xFFFF) % (2p+1)``,
        ``flip = (z >> 32) & 1`` (0 when the policy has no flip).
        """
        if k < 1:
            raise ConfigError(f"views must be >= 1 or 'all', got {k}")
        idx = np.asarray(indices, dtype=np.uint64)
        counters = idx[:, None] * np.uint64(k) + np.arange(k, dtype=np.uint64)[None, :]
        z = splitmix64_at(seed, counters + np.uint64(1))
        span = np.uint64(2 * self.padding + 1)
        top = (z & np.uint64(0xFFFF)) % span
        left = ((z >> np.uint64(16)) & np.uint64(0xFFFF)) % span
        flip = (z >> np.uint64(32)) & np.uint64(1) if self.flip else np.zeros_like(z)
        return np.stack([top, left, flip], axis=-1).astype(np.int16)

    def views_for(self, indices: np.ndarray, count: int | str, seed: int) -> np.ndarray:
        """View parameters [B, K, 3] for a K-view build, or every view for ``count == "all"``."""
        if count == "all":
            allv = self.all_views()
            return np.broadcast_to(allv, (len(indices),) + allv.shape).copy()
        return self.sample_views(indices, int(count), seed)


def make_views(
    images: torch.Tensor,
    params: torch.Tensor,
    padding: int,
    mean: torch.Tensor,
    std: torch.Tensor,
    channels_last: bool = False,
) -> torch.Tensor:
    """Cut the views of a uint8 batch and normalise them.

    Args:
        images: uint8 [B, C, H, W] on the compute device.
        params: integer [B, K, 3] (top, left, flip) on the same device.
        padding: zero padding p of the policy, in pixels.
        mean, std: float32 [C] normalisation constants (as torchvision's Normalize).
        channels_last: return a channels-last tensor (faster convolutions on CUDA).

    Returns:
        float32 [B*K, C, H, W]: ``(view / 255 - mean) / std``, bitwise what ToTensor + Normalize give.
    """
    b, c, h, w = images.shape
    k = params.shape[1]
    dev = images.device
    hwc = torch.nn.functional.pad(images.permute(0, 2, 3, 1), (0, 0, padding, padding, padding, padding))
    params = params.to(device=dev, dtype=torch.long)
    top, left, flip = params[..., 0], params[..., 1], params[..., 2]
    ar_h = torch.arange(h, device=dev)
    ar_w = torch.arange(w, device=dev)
    rows = top[..., None] + ar_h  # [B, K, H]
    cols_fwd = left[..., None] + ar_w  # [B, K, W]
    cols = torch.where(flip[..., None].bool(), cols_fwd.flip(-1), cols_fwd)
    bidx = torch.arange(b, device=dev)[:, None, None, None]
    views = hwc[bidx, rows[..., :, None], cols[..., None, :]]  # [B, K, H, W, C]
    views = views.reshape(b * k, h, w, c).permute(0, 3, 1, 2)  # channels-last strides
    x = views.to(torch.float32).div(255)
    x = x.sub(mean.to(dev).view(1, c, 1, 1)).div(std.to(dev).view(1, c, 1, 1))
    return x.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
