"""The one resize of the resized-crop and center policies (formats/SPEC.md, section 5, 1.2).

``torchvision.transforms.v2.functional.resize`` on a uint8 tensor [C, H, W] with bilinear
interpolation and ``antialias=True``; the result is uint8.  The build cuts and resizes with it
on the device, and :class:`fpkit.FingerprintDataset` replays with it, so a student sees the
pixels the teacher saw.  It is close to, not equal to, PIL's ``Image.resize(BILINEAR)``: the
figure is in formats/SPEC.md (section 14) with the command that measured it.
"""

from __future__ import annotations

import torch
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as F2

RESIZE_OP = "torchvision.transforms.v2.functional.resize(uint8, bilinear, antialias=True)"


def resize_uint8(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """uint8 [C, H, W] -> uint8 [C, height, width], the spec's resize."""
    return F2.resize(image, [height, width], interpolation=InterpolationMode.BILINEAR, antialias=True)


def crop_resize(image: torch.Tensor, top: int, left: int, height: int, width: int, size: int) -> torch.Tensor:
    """Rows top..top+height-1 and columns left..left+width-1 of uint8 [C, H, W], resized to size x size."""
    return resize_uint8(image[:, top : top + height, left : left + width], size, size)


def normalize_views(views: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """uint8 [V, C, S, S] -> float32 ``(x / 255 - mean) / std`` (ToTensor + Normalize)."""
    c = views.shape[1]
    dev = views.device
    x = views.to(torch.float32).div(255)
    x = x.sub(mean.to(dev).view(1, c, 1, 1)).div(std.to(dev).view(1, c, 1, 1))
    return x.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def as_images(images) -> list[torch.Tensor]:
    """A uint8 batch [B, C, H, W] or a list of uint8 [C, H, W] images, as a list."""
    return list(images.unbind(0)) if isinstance(images, torch.Tensor) else list(images)
