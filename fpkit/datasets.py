"""Image sources a build can run over: cifar10, cifar100, fashionmnist, imagefolder:PATH,
synthetic[:N[xC]] and the embedded sample.

Every source gives uint8 batches [B, C, H, W] by index (fast paths for in-memory arrays), the
labels, the class names, the normalisation constants, and :meth:`ImageSource.torch_dataset`, a
map-style dataset yielding ``(PIL image, label)`` in the same order, which is what a student's
training code wraps with :class:`fpkit.FingerprintDataset`.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image

from .errors import ConfigError, FormatError, FpkitFileNotFoundError
from .images import header_size, read_images
from .normalization import FALLBACK, NORMALIZE, parse_normalize  # noqa: F401  (their home is fpkit.normalization)

FOLDER_SPLITS = ("train", "test", "val")
"""Folder names an image folder's split is read from (``imagefolder:PATH/test``: split ``test``)."""
DATASET_NAMES = ("cifar10", "cifar100", "fashionmnist", "imagefolder:PATH", "synthetic[:N[xC]]", "embedded")


class ArrayImageDataset(torch.utils.data.Dataset):
    """Map-style dataset over uint8 images held in memory ([N, H, W, C] or [N, H, W]), yielding
    ``(PIL image, label)`` like torchvision's datasets, with optional transforms."""

    def __init__(
        self,
        images: np.ndarray,
        labels: Sequence[int],
        transform: Callable | None = None,
        target_transform: Callable | None = None,
    ):
        self.images = images
        self.targets = [int(x) for x in labels]
        self.transform, self.target_transform = transform, target_transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        img = Image.fromarray(self.images[i])
        y = self.targets[i]
        if self.transform is not None:
            img = self.transform(img)
        if self.target_transform is not None:
            y = self.target_transform(y)
        return img, y


@dataclass
class ImageSource:
    """A dataset split as the build sees it."""

    name: str
    split: str
    classes: list[str]
    labels: np.ndarray
    mean: tuple[float, ...]
    std: tuple[float, ...]
    image_shape: tuple[int, int | None, int | None]  # C, H, W (H, W None: images of varied sizes)
    own_stats: bool = True  # mean/std are the dataset's own (False: an image folder's ImageNet guess)
    _array: np.ndarray | None = field(default=None, repr=False)  # [N, H, W, C] or [N, H, W] uint8
    _make_torch: Callable[..., torch.utils.data.Dataset] | None = field(default=None, repr=False)
    _plain: torch.utils.data.Dataset | None = field(default=None, repr=False)
    _files: list[str] | None = field(default=None, repr=False)  # an image folder's files, read by index

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def get_batch(self, indices: Sequence[int]) -> torch.Tensor:
        """uint8 [B, C, H, W] images at ``indices`` (CPU).

        Raises:
            FormatError: an image's size differs from the first one's (views need one size).
        """
        idx = np.asarray(indices, dtype=np.int64)
        if self._array is not None:
            arr = self._array[idx]
        else:
            if self._plain is None:
                self._plain = self.torch_dataset()
            ds = self._plain
            arr = np.stack([self._pixels(ds, int(i)) for i in idx])
        t = torch.from_numpy(np.ascontiguousarray(arr))
        if t.ndim == 3:
            t = t.unsqueeze(-1)
        return t.permute(0, 3, 1, 2)

    @property
    def varied(self) -> bool:
        """True when the images may differ in size (H, W unknown): read them with :meth:`get_images`."""
        return self.image_shape[1] is None

    def allow_varied_sizes(self) -> None:
        """Mark an image folder's images as possibly of varied sizes (for the resized-crop and
        center policies): its identity then records H and W as null, and batches are lists."""
        if self._files is not None:
            self.image_shape = (self.image_shape[0], None, None)

    def get_images(self, indices: Sequence[int]) -> list[torch.Tensor]:
        """uint8 [C, H_i, W_i] of each image at ``indices`` (CPU), of any sizes; an image folder's
        files are decoded as one batch (:func:`fpkit.images.read_images`)."""
        if self._files is not None:
            return read_images([self._files[int(i)] for i in indices])
        return list(ImageSource.get_batch(self, indices).unbind(0))  # not a subclass's offset

    def sizes_vary(self) -> bool:
        """Whether an image folder holds images of more than one size (reads every file's header)."""
        if self._files is None:
            return False
        first = header_size(self._files[0])
        return any(header_size(f) != first for f in self._files[1:])

    def _pixels(self, ds, i: int) -> np.ndarray:
        img = ds[i][0]
        arr = np.asarray(img, dtype=np.uint8)
        c, h, w = self.image_shape
        got = arr.shape[:2]
        if got != (h, w):
            raise FormatError(
                f"{self.name}: image {i} is {got[1]}x{got[0]} pixels but the first is {w}x{h}; "
                "pad-crop views need images of one size: pass --policy resized-crop (or center), "
                "or resize the folder first"
            )
        return arr

    def torch_dataset(
        self, transform: Callable | None = None, target_transform: Callable | None = None
    ) -> torch.utils.data.Dataset:
        """The split as a map-style dataset yielding ``(PIL image, label)`` in file order."""
        assert self._make_torch is not None
        return self._make_torch(transform=transform, target_transform=target_transform)

    def load_all(self, num_workers: int = 0, chunk: int = 1000) -> torch.Tensor:
        """Every image of the split as one uint8 tensor [N, C, H, W] on the CPU, in file order.

        Args:
            num_workers: DataLoader workers decoding ``chunk`` images each (0: this process).
            chunk: images per :meth:`get_batch` call.

        Raises:
            FormatError: an image's size differs from the first one's.
        """
        n = len(self)
        steps = [list(range(s, min(n, s + chunk))) for s in range(0, n, chunk)]
        if num_workers <= 0:
            return torch.cat([self.get_batch(idx) for idx in steps])
        loader = torch.utils.data.DataLoader(BatchFetch(self), batch_size=None, sampler=steps, num_workers=num_workers)
        return torch.cat([images for images, _ in loader])

    def identity(self) -> dict:
        c, h, w = self.image_shape
        return {
            "name": self.name,
            "split": self.split,
            "image_shape": [h, w, c],  # the spec's H, W, channels
            "normalize": {"mean": list(self.mean), "std": list(self.std)},
        }


class BatchFetch(torch.utils.data.Dataset):
    """An :class:`ImageSource` as a dataset of whole batches, so DataLoader workers decode a batch each.

    Item ``idx`` (a sequence of sample indices) is ``(uint8 [B, C, H, W], int64 [B] indices)``; use it as
    ``DataLoader(BatchFetch(source), batch_size=None, sampler=[[0, 1, ...], ...], num_workers=N)``.
    """

    def __init__(self, source: ImageSource):
        self.source = source

    def __getitem__(self, idx: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        idx = np.asarray(idx, dtype=np.int64)
        images = self.source.get_images(idx) if self.source.varied else self.source.get_batch(idx)
        return images, torch.from_numpy(idx)

    def __len__(self) -> int:
        return len(self.source)


def open_source(
    name: str,
    root: str | os.PathLike = "data",
    split: str | None = None,
    *,
    download: bool = True,
    normalize: str | None = None,
) -> ImageSource:
    """Open a dataset split by name (see :data:`DATASET_NAMES`).

    Args:
        name: dataset name; ``imagefolder:PATH`` reads ``PATH/<split>`` if it exists, else PATH
            (see :func:`_imagefolder` for the name and split it records).
        root: folder holding (or to receive) torchvision datasets.
        split: "train" or "test"; None for the dataset's default (train; test for "embedded"; for
            an image folder, ``PATH/train`` if it exists, else the folder itself).
        download: let torchvision download a missing dataset (needs internet).
        normalize: a preset name (cifar10, cifar100, fashionmnist, imagenet, none) or
            "m1,m2,m3:s1,s2,s3"; default: the dataset's own statistics (imagenet for folders,
            with ``own_stats`` False).

    Raises:
        ConfigError: unknown name or split (OptionError: a malformed ``normalize``).
        FpkitFileNotFoundError: data missing offline.
    """
    key = name.lower()
    if key.startswith("imagefolder:"):
        from .images import imagefolder_source

        src = imagefolder_source(Path(name.split(":", 1)[1]), split)
        if normalize is not None:
            src.mean, src.std = parse_normalize(normalize, channels=src.image_shape[0])
        return src
    if split is None:
        split = "test" if key == "embedded" else "train"
    if split not in ("train", "test"):
        raise ConfigError(f"split must be 'train' or 'test', got {split!r}")
    if key in ("cifar10", "cifar100"):
        src = _cifar(key, Path(root), split, download)
    elif key == "fashionmnist":
        src = _fashionmnist(Path(root), split, download)
    elif key == "synthetic" or key.startswith("synthetic:"):
        src = _synthetic(key, split)
    elif key == "embedded":
        src = _embedded(split)
    else:
        raise ConfigError(f"unknown dataset {name!r}; use one of {', '.join(DATASET_NAMES)}")
    if normalize is not None:
        src.mean, src.std = parse_normalize(normalize, channels=src.image_shape[0])
    return src


def _cifar(key: str, root: Path, split: str, download: bool) -> ImageSource:
    from torchvision import datasets

    cls = datasets.CIFAR10 if key == "cifar10" else datasets.CIFAR100
    folder = root / ("cifar-10-batches-py" if key == "cifar10" else "cifar-100-python")

    def make(transform=None, target_transform=None):
        return cls(
            str(root), train=split == "train", transform=transform, target_transform=target_transform, download=False
        )

    ds = _torchvision_open(
        lambda: cls(str(root), train=split == "train", download=download), key, folder, root, download
    )
    mean, std = NORMALIZE[key]
    return ImageSource(
        key,
        split,
        list(ds.classes),
        np.asarray(ds.targets, dtype=np.int64),
        mean,
        std,
        (3, 32, 32),
        _array=ds.data,
        _make_torch=make,
    )


def _fashionmnist(root: Path, split: str, download: bool) -> ImageSource:
    from torchvision import datasets

    def make(transform=None, target_transform=None):
        return datasets.FashionMNIST(
            str(root), train=split == "train", transform=transform, target_transform=target_transform, download=False
        )

    ds = _torchvision_open(
        lambda: datasets.FashionMNIST(str(root), train=split == "train", download=download),
        "fashionmnist",
        root / "FashionMNIST" / "raw",
        root,
        download,
    )
    mean, std = NORMALIZE["fashionmnist"]
    return ImageSource(
        "fashionmnist",
        split,
        list(ds.classes),
        ds.targets.numpy().astype(np.int64),
        mean,
        std,
        (1, 28, 28),
        _array=ds.data.numpy(),
        _make_torch=make,
    )


def _torchvision_open(open_fn, key: str, folder: Path, root: Path, download: bool):
    made = _missing_parents(root)  # torchvision creates root (and more) before downloading
    present = folder.is_dir() and any(p.is_file() for p in folder.iterdir())
    try:
        return open_fn()
    except (RuntimeError, OSError) as e:  # torchvision: "Dataset not found"; URLError is an OSError
        if made is not None:  # a failed open leaves no folder behind
            shutil.rmtree(made, ignore_errors=True)
        if present and not download:
            raise FpkitFileNotFoundError(
                f"{key}: the files in {folder} are there but fail torchvision's checksum (damaged, "
                "incomplete or another version); delete that folder and run again without --no-download "
                "to download them afresh, or put intact torchvision files there"
            ) from e
        why = (
            f"could not be downloaded ({type(e).__name__}: {str(e)[:80]})"
            if download
            else "downloading was turned off (--no-download)"
        )
        raise FpkitFileNotFoundError(
            f"{key} is not in {folder} and {why}; put the torchvision files there or pass --root DIR "
            "pointing to the folder that holds them"
        ) from e


def _missing_parents(path: Path) -> Path | None:
    """The outermost of ``path`` and its parents that does not exist yet (None if ``path`` exists)."""
    made = None
    for p in (path, *path.parents):
        if p.exists():
            break
        made = p
    return made


def folder_split(path: Path, split: str | None) -> tuple[Path, str, str]:
    """Where an image folder's images are, and the dataset name and split that describe them truly.

    * ``PATH/<split>`` exists (``split`` given, or ``train`` by default): name ``imagefolder:PATH``,
      that split.
    * PATH is itself a split folder (its last name is train, test or val; a given ``split`` must
      match it): name ``imagefolder:PARENT``, split that name, so that ``imagefolder:D/test``
      records ``D`` + ``test``.
    * otherwise (no ``split`` given): name ``imagefolder:PATH``, split ``all``, the whole folder.

    Raises:
        FpkitFileNotFoundError: PATH does not exist.
        ConfigError: ``split`` is given but neither ``PATH/<split>`` nor PATH itself is that split.
    """
    if not path.is_dir():
        raise FpkitFileNotFoundError(
            f"image folder {path} does not exist; give imagefolder:PATH with "
            "PATH/<class>/<image> or PATH/<split>/<class>/<image>"
        )
    want = split or "train"
    if (path / want).is_dir():
        return path / want, f"imagefolder:{path}", want
    if path.name in FOLDER_SPLITS and split in (None, path.name):
        return path, f"imagefolder:{path.parent}", path.name
    if split is not None:
        raise ConfigError(
            f"image folder {path} has no {split!r} subfolder and is not itself named {split!r}; "
            f"leave --split out to fingerprint {path} as it is, or give imagefolder:PATH for the folder "
            f"holding {split}/"
        )
    return path, f"imagefolder:{path}", "all"


def _synthetic(key: str, split: str) -> ImageSource:
    n, c = 256, 10
    if ":" in key:
        spec = key.split(":", 1)[1]
        try:
            n, c = (int(x) for x in spec.split("x")) if "x" in spec else (int(spec), c)
        except ValueError as e:
            raise ConfigError(f"synthetic dataset spec {key!r} must look like synthetic:N or synthetic:NxC") from e
    if n < 1 or c < 1:
        raise ConfigError(f"synthetic dataset needs N >= 1 and C >= 1, got {n}, {c}")
    images, labels = synthetic_images(n, c, seed=0 if split == "train" else 1)
    return ImageSource(
        f"synthetic:{n}x{c}",
        split,
        [f"class{i}" for i in range(c)],
        labels,
        (0.5, 0.5, 0.5),
        (0.25, 0.25, 0.25),
        (3, 32, 32),
        _array=images,
        _make_torch=lambda transform=None, target_transform=None: ArrayImageDataset(
            images, labels, transform, target_transform
        ),
    )


def synthetic_images(n: int, c: int, seed: int = 0, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic learnable images: class-dependent colour and stripe frequency plus noise."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n, dtype=np.int64) % c
    yy, xx = np.mgrid[0:size, 0:size] / size
    base = np.empty((n, size, size, 3), dtype=np.float64)
    for k in range(3):
        phase = 2 * np.pi * (labels[:, None, None] + 1) * (xx if k % 2 else yy)[None] * (k + 1) / 2
        base[..., k] = 0.5 + 0.35 * np.sin(phase + k * labels[:, None, None])
    base += rng.normal(0, 0.12, base.shape)
    return (np.clip(base, 0, 1) * 255).round().astype(np.uint8), labels


def _embedded(split: str) -> ImageSource:
    if split != "test":
        raise ConfigError(
            f"the embedded sample has only a test split (500 CIFAR-10 test images), not {split!r}; "
            "leave --split out or pass --split test"
        )
    ref = resources.files("fpkit.data").joinpath("embedded_sample.npz")
    if not ref.is_file():
        raise FpkitFileNotFoundError(
            "the embedded sample fpkit/data/embedded_sample.npz is missing from this installation; reinstall fpkit"
        )
    with resources.as_file(ref) as p, np.load(p, allow_pickle=False) as z:
        images, labels, classes = z["images"], z["labels"].astype(np.int64), [str(x) for x in z["classes"]]
    mean, std = NORMALIZE["cifar10"]
    return ImageSource(
        "embedded",
        "test",
        classes,
        labels,
        mean,
        std,
        (3, 32, 32),
        _array=images,
        _make_torch=lambda transform=None, target_transform=None: ArrayImageDataset(
            images, labels, transform, target_transform
        ),
    )
