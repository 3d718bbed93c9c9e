"""Reading image files by index, in batches: JPEGs through ``torchvision.io.decode_jpeg``, every
other format (and any JPEG it cannot decode) through PIL, all converted to RGB uint8 [3, H, W].

The pixels are those PIL's ``Image.open(path).convert("RGB")`` gives (grayscale, RGBA, palette
and CMYK images included: checked against PIL in tests/test_images.py), so the per-sample digests
of a build (formats/SPEC.md, section 6) match what a student's ``ImageFolder`` loads.  Nothing is
held beyond the batch asked for: a folder of any size is read lazily.
"""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .errors import FormatError, FpkitFileNotFoundError

if TYPE_CHECKING:
    from .datasets import ImageSource

JPEG_MAGIC = b"\xff\xd8\xff"


def rgb_loader(path: str) -> Image.Image:
    """Open an image file as RGB (raises FormatError naming the file if it is not a readable image)."""
    try:
        with open(path, "rb") as fh:
            return Image.open(fh).convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:  # PIL raises all of these
        if isinstance(e, (FileNotFoundError, PermissionError)):
            raise
        raise FormatError(f"{path} is not a readable image ({type(e).__name__}); remove or replace it") from e


def _pil_tensor(path: str) -> torch.Tensor:
    return torch.from_numpy(np.asarray(rgb_loader(path)).copy()).permute(2, 0, 1)


@contextlib.contextmanager
def _quiet():
    """torchvision 0.29 deprecates torchvision.io (in favour of torchcodec) on every call."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


def read_images(paths: Sequence[str]) -> list[torch.Tensor]:
    """RGB uint8 [3, H_i, W_i] of each file, CPU; JPEGs decoded as one batch by decode_jpeg."""
    with warnings.catch_warnings():  # torchvision 0.29 deprecates torchvision.io in favour of torchcodec
        warnings.simplefilter("ignore", DeprecationWarning)
        from torchvision.io import ImageReadMode, decode_jpeg

    out: list[torch.Tensor | None] = [None] * len(paths)
    jpeg_at, jpeg_data = [], []
    for i, p in enumerate(paths):
        with open(p, "rb") as fh:
            raw = fh.read()
        if raw[:3] == JPEG_MAGIC:
            jpeg_at.append(i)
            jpeg_data.append(torch.frombuffer(bytearray(raw), dtype=torch.uint8))
        else:
            out[i] = _pil_tensor(p)
    if jpeg_data:
        try:
            with _quiet():
                decoded = decode_jpeg(jpeg_data, mode=ImageReadMode.RGB)
        except RuntimeError:  # one bad or unusual file fails the batch: decode one by one
            decoded = [_decode_one(d, paths[i]) for d, i in zip(jpeg_data, jpeg_at)]
        for i, t in zip(jpeg_at, decoded):
            out[i] = t
    return out  # type: ignore[return-value]


def _decode_one(data: torch.Tensor, path: str) -> torch.Tensor:
    from torchvision.io import ImageReadMode, decode_jpeg

    try:
        with _quiet():
            return decode_jpeg(data, mode=ImageReadMode.RGB)
    except RuntimeError:
        return _pil_tensor(path)


def header_size(path: str) -> tuple[int, int]:
    """(H, W) of an image file from its header (PIL opens lazily: no pixels are decoded)."""
    try:
        with Image.open(path) as im:
            w, h = im.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        if isinstance(e, (FileNotFoundError, PermissionError)):
            raise
        raise FormatError(f"{path} is not a readable image ({type(e).__name__}); remove or replace it") from e
    return h, w


def imagefolder_source(path: Path, split: str | None) -> ImageSource:
    """An image folder as a source: the file list only (images are read by index, lazily);
    image_shape is the first image's, until :meth:`ImageSource.allow_varied_sizes`."""
    from torchvision import datasets

    from .datasets import NORMALIZE, ImageSource, folder_split
    from .normalization import FALLBACK

    folder, name, split = folder_split(path, split)
    try:
        probe = datasets.ImageFolder(str(folder))
    except (FileNotFoundError, RuntimeError) as e:
        raise FpkitFileNotFoundError(f"no images found under {folder} ({e}); expected {folder}/<class>/<image>") from e

    def make(transform=None, target_transform=None):
        return datasets.ImageFolder(
            str(folder), transform=transform, target_transform=target_transform, loader=rgb_loader
        )

    h, w = header_size(probe.samples[0][0])
    mean, std = NORMALIZE[FALLBACK]
    return ImageSource(
        name,
        split,
        list(probe.classes),
        np.asarray(probe.targets, dtype=np.int64),
        mean,
        std,
        (3, h, w),
        own_stats=False,
        _make_torch=make,
        _files=[p for p, _ in probe.samples],
    )
