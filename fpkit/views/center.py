"""The ``center`` policy: torchvision's Resize(resize) + CenterCrop(size), one view per image.

The shorter side is resized to ``resize`` (the longer to ``int(resize * long / short)``, as
torchvision computes it), then the central size x size square is cut at
``top = round((H' - size) / 2)``, ``left = round((W' - size) / 2)``.  The view is recorded as
(top, left, H', W', 0): the crop's corner in the resized image and the resized image's size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import ConfigError
from .resize import as_images, normalize_views, resize_uint8


@dataclass(frozen=True)
class CenterPolicy:
    """Resize the shorter side to ``resize``, cut the central ``size`` x ``size`` (K = 1)."""

    size: int = 224
    resize: int = 256

    name = "center"
    param_width = 5
    flip = False

    def __post_init__(self) -> None:
        if not isinstance(self.size, int) or self.size < 1:
            raise ConfigError(f"--image-size must be a positive integer, got {self.size!r}")
        if not isinstance(self.resize, int) or self.resize < self.size:
            raise ConfigError(f"--resize must be an integer >= --image-size {self.size}, got {self.resize!r}")

    @property
    def num_views(self) -> int:
        return 1

    def to_dict(self) -> dict:
        return {"name": self.name, "size": self.size, "resize": self.resize}

    def views_for(self, indices: np.ndarray, count: int | str, seed: int, sizes: np.ndarray) -> np.ndarray:
        """int32 [B, 1, 5] (top, left, H', W', 0) for images of sizes [B, 2] (H, W)."""
        if count not in ("all", 1):
            raise ConfigError(f"--policy center has one view per image: use --views 1, got {count!r}")
        out = []
        for h, w in np.asarray(sizes, dtype=np.int64).tolist():
            short, long = (h, w) if h <= w else (w, h)
            new_long = int(self.resize * long / short)
            rh, rw = (self.resize, new_long) if h <= w else (new_long, self.resize)
            out.append([int(round((rh - self.size) / 2.0)), int(round((rw - self.size) / 2.0)), rh, rw, 0])
        return np.asarray(out, dtype=np.int32).reshape(len(out), 1, 5)


def cut_center(
    images, params: torch.Tensor, size: int, mean: torch.Tensor, std: torch.Tensor, channels_last: bool = False
) -> torch.Tensor:
    """Resize each image to its recorded (H', W') and cut the size x size square at (top, left)."""
    views = []
    for img, per in zip(as_images(images), params.to("cpu", torch.long).tolist()):
        for top, left, rh, rw, _ in per:
            views.append(resize_uint8(img, rh, rw)[:, top : top + size, left : left + size])
    return normalize_views(torch.stack(views), mean, std, channels_last)
