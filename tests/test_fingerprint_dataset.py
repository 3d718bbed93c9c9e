"""FingerprintDataset: pairing, dataset checks, replay, class table, workers."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
import torchvision.transforms as T

from fpkit import FingerprintDataset
from fpkit.build import BuildOptions, build
from fpkit.datasets import ArrayImageDataset, open_source
from fpkit.errors import ConfigError, MismatchError, RedactedError
from fpkit.fingerprint_dataset import replay_view
from fpkit.format import open_fingerprints

DATA = "synthetic:40x10"
TRANSFORM = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor()])


@pytest.fixture(scope="module")
def fp_file(tmp_path_factory):
    from fpkit.models.cifar_resnet import resnet8

    d = tmp_path_factory.mktemp("fp")
    torch.manual_seed(0)
    torch.save(resnet8(num_classes=10).state_dict(), d / "t.pt")
    res = build(
        BuildOptions(
            teacher=str(d / "t.pt"),
            dataset=DATA,
            output=str(d / "fp.h5"),
            views=3,
            replay=True,
            layers=("layer2", "layer3"),
            dtype="float32",
            chunk_size=16,
            device="cpu",
        ),
        quiet=True,
    )
    return res.path


@pytest.fixture
def plain():
    return open_source(DATA).torch_dataset()


def test_items_pair_images_labels_and_rows(fp_file, plain):
    ds = FingerprintDataset(fp_file, plain, transform=T.ToTensor())
    fp = open_fingerprints(fp_file)
    img, label, target = ds[7]
    assert torch.equal(img, T.ToTensor()(plain[7][0]))
    assert label == plain[7][1] and target.dtype == torch.float32 and target.shape == (128,)
    assert np.array_equal(target.numpy(), fp.table("sample", "layer2")[7])  # first layer by default
    _, _, t3 = FingerprintDataset(fp_file, plain, layer="layer3")[7]
    assert np.array_equal(t3.numpy(), fp.table("sample", "layer3")[7])
    _, _, both = FingerprintDataset(fp_file, plain, layer="all")[7]
    assert set(both) == {"layer2", "layer3"}


def test_class_table_gives_the_label_row(fp_file, plain):
    ds = FingerprintDataset(fp_file, plain, table="class", layer="layer3")
    fp = open_fingerprints(fp_file)
    for i in (0, 13, 39):
        _, label, target = ds[i]
        assert np.array_equal(target.numpy(), fp.table("class", "layer3")[label])


def test_index_mode_and_device_table(fp_file, plain):
    ds = FingerprintDataset(fp_file, plain, table="index", transform=T.ToTensor())
    _, _, idx = ds[5]
    assert idx == 5
    table = ds.target_table("cpu", layer="layer3")
    assert torch.equal(table[torch.tensor([5])][0], FingerprintDataset(fp_file, plain, layer="layer3")[5][2])
    R = ds.projection("layer3")
    assert R.shape == (64, 128) and not R.requires_grad


def test_wrong_length(fp_file):
    src = open_source("synthetic:39x10")
    with pytest.raises(MismatchError, match="39 samples, the file 40"):
        FingerprintDataset(fp_file, src.torch_dataset())


def test_wrong_labels(fp_file):
    src = open_source(DATA)
    labels = src.labels.copy()
    labels[11] = (labels[11] + 1) % 10
    ds = ArrayImageDataset(src._array, labels)
    with pytest.raises(MismatchError, match="label of sample 11"):
        FingerprintDataset(fp_file, ds)


def test_wrong_pixels_or_order(fp_file):
    src = open_source(DATA)
    images = src._array.copy()
    images[[0, 10]] = images[[10, 0]]  # same labels (0 and 10 are both class 0), other order
    with pytest.raises(MismatchError, match="pixels of sample 0"):
        FingerprintDataset(fp_file, ArrayImageDataset(images, src.labels))


def test_wrong_classes(fp_file, plain):
    plain.classes = [f"c{i}" for i in range(10)]
    with pytest.raises(MismatchError, match="class 0"):
        FingerprintDataset(fp_file, plain)


def test_transformed_dataset_is_explained(fp_file):
    ds = open_source(DATA).torch_dataset(transform=T.ToTensor())
    with pytest.raises(MismatchError, match="without a transform"):
        FingerprintDataset(fp_file, ds)
    FingerprintDataset(fp_file, ds, check_samples=0)  # the user may opt out


def test_class_table_only_needs_classes(fp_file):
    ds = open_source("synthetic:7x10").torch_dataset()
    FingerprintDataset(fp_file, ds, table="class")


def test_replay_returns_that_views_fingerprint(fp_file, plain):
    fp = open_fingerprints(fp_file)
    ds = FingerprintDataset(fp_file, plain, replay=True, layer="layer3", transform=T.ToTensor())
    torch.manual_seed(3)
    img, _, target = ds[9]
    torch.manual_seed(3)
    j = int(torch.randint(3, (1,)).item())
    top, left, flip = fp.view_params[9, j].tolist()
    expected = T.ToTensor()(replay_view(plain[9][0], top, left, flip, 4))
    assert torch.equal(img, expected)
    assert np.array_equal(target.numpy(), fp.table("views", "layer3")[9, j])


def test_bad_options(fp_file, plain, tmp_path):
    with pytest.raises(ConfigError):
        FingerprintDataset(fp_file, plain, table="pixels")
    with pytest.raises(ConfigError, match="layer9"):
        FingerprintDataset(fp_file, plain, layer="layer9")
    with pytest.raises(ConfigError, match="replay"):
        FingerprintDataset(fp_file, plain, replay=True, table="class")


def test_redacted_file_has_no_projection(tmp_path, tiny_teacher, plain):
    res = build(
        BuildOptions(
            teacher=str(tiny_teacher), dataset=DATA, output=str(tmp_path / "r.h5"), views=1, redact=True, device="cpu"
        ),
        quiet=True,
    )
    ds = FingerprintDataset(res.path, plain)
    with pytest.raises(RedactedError, match="relational"):
        ds.projection()
    assert ds[0][2].shape == (128,)


def test_pickles(fp_file, plain):
    ds = FingerprintDataset(fp_file, plain)
    clone = pickle.loads(pickle.dumps(ds))
    assert torch.equal(clone[3][2], ds[3][2])


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_dataloader_workers_give_the_same_batches(fp_file, plain, context):
    ds = FingerprintDataset(fp_file, plain, transform=T.ToTensor())
    ref = list(torch.utils.data.DataLoader(ds, batch_size=8, num_workers=0))
    got = list(torch.utils.data.DataLoader(ds, batch_size=8, num_workers=2, multiprocessing_context=context))
    assert len(ref) == len(got) == 5
    for (a_img, a_lab, a_t), (b_img, b_lab, b_t) in zip(ref, got):
        assert torch.equal(a_img, b_img) and torch.equal(a_lab, b_lab) and torch.equal(a_t, b_t)
