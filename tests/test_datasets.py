"""Image sources over tiny datasets written in their real on-disk layouts.

CIFAR-10/100 as torchvision's python pickles (cifar-10-batches-py/, cifar-100-python/),
Fashion-MNIST as IDX files under FashionMNIST/raw/, and image folders of PNG files.  The writers
here are independent of fpkit: they follow the published file formats, and the tests compare the
pixels fpkit hands to a build with the pixels written.
"""

from __future__ import annotations

import hashlib
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torchvision
from click.testing import CliRunner
from PIL import Image

import fpkit
from fpkit.cli import main
from fpkit.datasets import NORMALIZE, open_source
from fpkit.errors import ConfigError, FormatError, FpkitFileNotFoundError, MismatchError

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _rng_images(n: int, shape: tuple[int, ...], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, *shape), dtype=np.uint8)


def write_cifar(root: Path, monkeypatch, *, hundred: bool = False, per_batch: int = 4, n_test: int = 6):
    """torchvision's CIFAR pickle layout; the class's MD5 table is pointed at the files written.
    Returns {split: (images HWC uint8, labels)}."""
    cls = torchvision.datasets.CIFAR100 if hundred else torchvision.datasets.CIFAR10
    folder = root / cls.base_folder
    folder.mkdir(parents=True)
    c = 100 if hundred else 10
    key = "fine_labels" if hundred else "labels"
    names = [f"fine{i}" for i in range(c)] if hundred else CIFAR10_CLASSES
    out, train_list, test_list = {}, [], []
    batches = [(name, "train") for name, _ in cls.train_list] + [(name, "test") for name, _ in cls.test_list]
    seed = 0
    for name, split in batches:
        n = per_batch if split == "train" else n_test
        imgs = _rng_images(n, (32, 32, 3), seed)
        labels = [int(x) for x in np.random.default_rng(100 + seed).integers(0, c, n)]
        seed += 1
        entry = {"data": imgs.transpose(0, 3, 1, 2).reshape(n, -1), key: labels}  # rows are CHW planes
        (folder / name).write_bytes(pickle.dumps(entry))
        (train_list if split == "train" else test_list).append([name, _md5(folder / name)])
        prev = out.get(split, (np.zeros((0, 32, 32, 3), np.uint8), []))
        out[split] = (np.concatenate([prev[0], imgs]), prev[1] + labels)
    meta = folder / cls.meta["filename"]
    meta.write_bytes(pickle.dumps({cls.meta["key"]: names}))
    monkeypatch.setattr(cls, "train_list", train_list)
    monkeypatch.setattr(cls, "test_list", test_list)
    monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": _md5(meta)})
    return out, names


def write_fashionmnist(root: Path, n_train: int = 12, n_test: int = 5):
    """IDX files (big-endian header: 0, 0, type 0x08 = uint8, ndim; then each dimension)."""
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    out = {}
    for split, prefix, n, seed in (("train", "train", n_train, 1), ("test", "t10k", n_test, 2)):
        imgs = _rng_images(n, (28, 28), seed)
        labels = np.random.default_rng(seed).integers(0, 10, n).astype(np.uint8)
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(
            struct.pack(">BBBBIII", 0, 0, 8, 3, n, 28, 28) + imgs.tobytes()
        )
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">BBBBI", 0, 0, 8, 1, n) + labels.tobytes())
        out[split] = (imgs, labels.astype(int).tolist())
    return out


def write_imagefolder(path: Path, classes=("cat", "ant", "bee"), per_class: int = 3, size=(32, 32)):
    """PATH/train/<class>/NNNN.png and PATH/test/<class>/NNNN.png (lossless, so pixels compare)."""
    out = {}
    for s, split in enumerate(("train", "test")):
        imgs, labels = [], []
        for label, cls in enumerate(sorted(classes)):  # ImageFolder sorts class folders
            d = path / split / cls
            d.mkdir(parents=True)
            for j in range(per_class):
                img = _rng_images(1, (*size, 3), 1000 * s + 10 * label + j)[0]
                Image.fromarray(img).save(d / f"{j:04d}.png")
                imgs.append(img)
                labels.append(label)
        out[split] = (np.stack(imgs), labels)
    return out


def _check_source(src, images: np.ndarray, labels: list[int], classes: list[str]) -> None:
    """What a build sees (get_batch) and what a student wraps (torch_dataset) are the files' pixels."""
    assert len(src) == len(labels)
    assert src.labels.tolist() == labels
    assert src.classes == list(classes)
    got = src.get_batch(list(range(len(src)))).numpy()  # [N, C, H, W] uint8
    want = images if images.ndim == 4 else images[..., None]
    np.testing.assert_array_equal(got.transpose(0, 2, 3, 1), want)
    ds = src.torch_dataset()
    for i in (0, len(ds) - 1):
        img, y = ds[i]
        assert y == labels[i]
        np.testing.assert_array_equal(np.asarray(img), images[i])


# ---------------------------------------------------------------------------------- CIFAR
@pytest.mark.parametrize("split", ["train", "test"])
def test_cifar10_pickle_layout(tmp_path, monkeypatch, split):
    data, names = write_cifar(tmp_path, monkeypatch)
    src = open_source("cifar10", tmp_path, split, download=False)
    _check_source(src, *data[split], names)
    assert (src.mean, src.std) == NORMALIZE["cifar10"]
    assert src.image_shape == (3, 32, 32)
    assert len(src) == (20 if split == "train" else 6)  # five train batches of 4


def test_cifar100_pickle_layout_uses_fine_labels(tmp_path, monkeypatch):
    data, names = write_cifar(tmp_path, monkeypatch, hundred=True)
    src = open_source("cifar100", tmp_path, "train", download=False)
    _check_source(src, *data["train"], names)
    assert (src.mean, src.std) == ((0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761))  # RepDistiller's


def test_cifar_missing_offline_names_the_folder_and_the_fix(tmp_path):
    with pytest.raises(FpkitFileNotFoundError) as e:
        open_source("cifar10", tmp_path, "train", download=False)
    msg = str(e.value)
    assert str(tmp_path / "cifar-10-batches-py") in msg and "--no-download" in msg and "--root" in msg
    assert isinstance(e.value, FileNotFoundError)


def test_cifar_files_failing_the_checksum_say_so(tmp_path, monkeypatch):
    """Files present but damaged: not 'is not in ...' (false) but that they fail the checksum."""
    write_cifar(tmp_path, monkeypatch)
    monkeypatch.undo()  # torchvision's own MD5 table again: the files written here fail it
    with pytest.raises(FpkitFileNotFoundError, match="are there but fail torchvision's checksum") as e:
        open_source("cifar10", tmp_path, "train", download=False)
    assert "is not in" not in str(e.value)


def test_a_failed_download_leaves_no_folder(tmp_path, monkeypatch):
    """torchvision creates --root before downloading; a failed open removes what it created."""

    def half_download(self, *a, **kw):
        (Path(self.root) / "cifar-10-batches-py").mkdir(parents=True)
        raise OSError("network is unreachable")

    monkeypatch.setattr(torchvision.datasets.CIFAR10, "download", half_download)
    with pytest.raises(FpkitFileNotFoundError, match="could not be downloaded"):
        open_source("cifar10", tmp_path / "data" / "sub", "train", download=True)
    assert list(tmp_path.iterdir()) == []


def test_cifar_download_failure_is_reported(tmp_path, monkeypatch):
    """Online but the download fails (here: no network): the cause is in the message."""

    def no_network(self, *a, **kw):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torchvision.datasets.CIFAR100, "download", no_network)
    with pytest.raises(FpkitFileNotFoundError, match="could not be downloaded.*network is unreachable"):
        open_source("cifar100", tmp_path, "train", download=True)


def test_build_from_cifar_layout_then_train_from_torchvision_dataset(tmp_path, monkeypatch, tiny_teacher):
    """The user's path: `fpkit build teacher.pt cifar10 --root DIR`, then FingerprintDataset over
    torchvision's own CIFAR10 object; the other split is refused."""
    data, _ = write_cifar(tmp_path / "data", monkeypatch)
    out = tmp_path / "fp.h5"
    r = CliRunner().invoke(
        main,
        [
            "build",
            str(tiny_teacher),
            "cifar10",
            "--root",
            str(tmp_path / "data"),
            "--no-download",
            "--views",
            "2",
            "--device",
            "cpu",
            "-q",
            "-o",
            str(out),
        ],
    )
    assert r.exit_code == 0, r.output
    fp = fpkit.open_fingerprints(out)
    assert fp.metadata.dataset.name == "cifar10" and fp.metadata.dataset.split == "train"
    assert fp.labels.tolist() == data["train"][1]
    assert fp.metadata.dataset.normalize.to_json() == {
        "mean": list(NORMALIZE["cifar10"][0]),
        "std": list(NORMALIZE["cifar10"][1]),
    }
    train = torchvision.datasets.CIFAR10(str(tmp_path / "data"), train=True)
    ds = fpkit.FingerprintDataset(out, train, check_samples=len(train))
    img, y, target = ds[3]
    assert y == data["train"][1][3] and target.shape == (128,)
    np.testing.assert_array_equal(target.numpy(), fp.table("sample")[3])
    test = torchvision.datasets.CIFAR10(str(tmp_path / "data"), train=False)
    with pytest.raises(MismatchError, match="6 samples, the file 20"):
        fpkit.FingerprintDataset(out, test)


# ---------------------------------------------------------------------------------- Fashion-MNIST
def test_fashionmnist_idx_layout_is_one_channel(tmp_path):
    data = write_fashionmnist(tmp_path)
    for split in ("train", "test"):
        src = open_source("fashionmnist", tmp_path, split, download=False)
        _check_source(src, *data[split], torchvision.datasets.FashionMNIST.classes)
        assert src.image_shape == (1, 28, 28)
        assert (src.mean, src.std) == NORMALIZE["fashionmnist"]


def test_fashionmnist_build_and_dataset_check(tmp_path):
    """A one-channel teacher over 28x28 images; the grey PIL images torchvision yields pass the
    file's pixel digests (computed by the build from [H, W, 1] batches)."""
    import torch

    from fpkit.build import BuildOptions, build
    from fpkit.models.cifar_resnet import resnet8

    write_fashionmnist(tmp_path / "data")
    torch.manual_seed(0)
    teacher = tmp_path / "fm.pt"
    torch.save(resnet8(num_classes=10, in_channels=1).state_dict(), teacher)
    res = build(
        BuildOptions(
            teacher=str(teacher),
            dataset="fashionmnist",
            root=str(tmp_path / "data"),
            download=False,
            views=2,
            device="cpu",
            output=str(tmp_path / "fm.h5"),
        ),
        quiet=True,
    )
    fp = fpkit.open_fingerprints(res.path)
    assert fp.metadata.dataset.image_shape == (28, 28, 1)
    ds = torchvision.datasets.FashionMNIST(str(tmp_path / "data"), train=True)
    assert len(fpkit.FingerprintDataset(res.path, ds, check_samples=len(ds))) == 12


# ---------------------------------------------------------------------------------- image folders
def test_imagefolder_reads_the_split_subfolder(tmp_path):
    data = write_imagefolder(tmp_path / "imgs")
    for split in ("train", "test"):
        src = open_source(f"imagefolder:{tmp_path / 'imgs'}", split=split)
        _check_source(src, *data[split], ["ant", "bee", "cat"])
        assert (src.name, src.split) == (f"imagefolder:{tmp_path / 'imgs'}", split)  # the folder is PATH/split
        assert (src.mean, src.std) == NORMALIZE["imagenet"] and not src.own_stats  # no statistics of its own
    flat = open_source(f"imagefolder:{tmp_path / 'imgs' / 'test'}", split="test")  # no split folder inside
    _check_source(flat, *data["test"], ["ant", "bee", "cat"])


def test_imagefolder_records_the_true_folder_and_split(tmp_path):
    """Issue 11 item 2: imagefolder:D/test was recorded as split 'train' (name D/test, output
    ...-test-train.h5); D with --split test recorded name D/test + split test (D/test/test)."""
    write_imagefolder(tmp_path / "imgs")
    d = tmp_path / "imgs"
    cases = [
        (f"imagefolder:{d / 'test'}", None, f"imagefolder:{d}", "test"),  # the folder itself is a split
        (f"imagefolder:{d / 'test'}", "test", f"imagefolder:{d}", "test"),
        (f"imagefolder:{d}", "test", f"imagefolder:{d}", "test"),  # D/test
        (f"imagefolder:{d}", None, f"imagefolder:{d}", "train"),  # D/train by default
        (f"imagefolder:{d / 'train' / '..' / 'test'}", None, f"imagefolder:{d / 'train' / '..'}", "test"),
    ]
    for name, split, want_name, want_split in cases:
        src = open_source(name, split=split)
        assert (src.name, src.split) == (want_name, want_split), (name, split)
    (tmp_path / "flat").mkdir()
    (d / "test" / "ant").rename(tmp_path / "flat" / "ant")
    src = open_source(f"imagefolder:{tmp_path / 'flat'}")  # no split anywhere: the whole folder
    assert (src.name, src.split) == (f"imagefolder:{tmp_path / 'flat'}", "all")
    with pytest.raises(ConfigError, match="no 'test' subfolder.*leave --split out"):
        open_source(f"imagefolder:{tmp_path / 'flat'}", split="test")
    with pytest.raises(ConfigError, match="no 'train' subfolder"):
        open_source(f"imagefolder:{d / 'test'}", split="train")


def test_imagefolder_normalize_override(tmp_path):
    write_imagefolder(tmp_path / "imgs")
    src = open_source(f"imagefolder:{tmp_path / 'imgs'}", normalize="cifar10")
    assert (src.mean, src.std) == NORMALIZE["cifar10"]
    src = open_source(f"imagefolder:{tmp_path / 'imgs'}", normalize="0.5,0.5,0.5:0.2,0.2,0.2")
    assert (src.mean, src.std) == ((0.5,) * 3, (0.2,) * 3)
    with pytest.raises(ConfigError, match="needs 3 finite means"):
        open_source(f"imagefolder:{tmp_path / 'imgs'}", normalize="0.5:0.2")


def test_imagefolder_errors(tmp_path):
    with pytest.raises(FpkitFileNotFoundError, match="does not exist"):
        open_source(f"imagefolder:{tmp_path / 'nope'}")
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    with pytest.raises(FpkitFileNotFoundError, match="no images found"):
        open_source(f"imagefolder:{tmp_path / 'empty'}")
    write_imagefolder(tmp_path / "mixed", classes=("a",), per_class=2)
    Image.new("RGB", (40, 32)).save(tmp_path / "mixed" / "train" / "a" / "9999.png")
    src = open_source(f"imagefolder:{tmp_path / 'mixed'}")
    with pytest.raises(FormatError, match="40x32 pixels but the first is 32x32.*resize"):
        src.get_batch([0, 1, 2])


def test_unknown_name_and_split(tmp_path):
    with pytest.raises(ConfigError, match="unknown dataset"):
        open_source("imagenet22k", tmp_path)
    with pytest.raises(ConfigError):
        open_source("synthetic", tmp_path, split="val")


@pytest.mark.parametrize("spec", ["0,0,0:inf,inf,inf", "nan,0,0:1,1,1", "0,0,0:0,1,1"])
def test_normalize_must_be_finite_with_positive_stds(spec):
    with pytest.raises(ConfigError, match="finite"):
        open_source("synthetic:4x2", normalize=spec)
