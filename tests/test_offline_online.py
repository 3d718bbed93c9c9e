"""Offline equals online: targets read from a fingerprint file train the student exactly as the
teacher run live on the same views would.

A small seeded teacher is fingerprinted with recorded views (``replay``, float32 tables, K views).
For one batch, the fingerprint loss and every gradient of the student are computed twice:
(a) with phi_T from the file, (b) with phi_T computed live by the teacher on the very views the
file recorded (pool -> normalize -> @R -> mean over the views).  They must agree to 1e-5
(relative).  Then a single replayed view (FingerprintDataset(replay=True)) must carry the live
teacher's fingerprint of exactly the image it returns.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms as T

from fpkit.augment import make_views
from fpkit.build import BuildOptions, build
from fpkit.datasets import open_source
from fpkit.features import LayerTap, pool_features, project_features
from fpkit.fingerprint_dataset import FingerprintDataset
from fpkit.format import open_fingerprints
from fpkit.losses import fingerprint_loss
from fpkit.models.cifar_resnet import resnet8
from fpkit.student import FingerprintHead
from fpkit.teachers import load_teacher

DATA = "synthetic:40x10"
K = 4
LAYER = "layer3"
RTOL = 1e-5


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(file, opened file, source, live teacher model, R) for a seeded resnet8 teacher."""
    torch.set_num_threads(1)
    d: Path = tmp_path_factory.mktemp("offline_online")
    torch.manual_seed(0)
    model = resnet8(num_classes=10)
    for m in model.modules():  # non-trivial BN statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    torch.save({"model": model.state_dict()}, d / "teacher.pt")
    path = d / "fp.h5"
    build(
        BuildOptions(
            teacher=str(d / "teacher.pt"),
            dataset=DATA,
            output=str(path),
            views=K,
            replay=True,
            dtype="float32",
            tables=("sample",),
            device="cpu",
            batch_size=64,
            chunk_size=16,
        ),
        quiet=True,
    )
    fp = open_fingerprints(path)
    source = open_source(DATA, split="train")
    teacher = load_teacher(d / "teacher.pt").model
    R = torch.from_numpy(fp.projection(LAYER).copy())
    return path, fp, source, teacher, R


def _live_fingerprints(teacher, R, x: torch.Tensor) -> torch.Tensor:
    """phi = normalize(pool(teacher.layer3(x))) @ R for every image of x: [B, r]."""
    with torch.no_grad(), LayerTap(teacher, [LAYER]) as tap:
        _, feats = tap(x)
    return project_features(pool_features(feats[LAYER], "avg"), R)


def _loss_and_grads(target: torch.Tensor, x: torch.Tensor, R: torch.Tensor):
    """Fingerprint loss of a freshly seeded student (+ adapter-free head) and its parameter grads."""
    torch.manual_seed(1)
    student = resnet8(num_classes=10)
    head = FingerprintHead(R)
    with LayerTap(student, [LAYER]) as tap:
        _, feats = tap(x)
    loss = fingerprint_loss(head(feats[LAYER]), target)
    # every parameter up to layer3 gets a gradient; fc lies after the tap and gets none
    named = [(n, p) for n, p in student.named_parameters() if not n.startswith("fc.")]
    grads = torch.autograd.grad(loss, [p for _, p in named])
    return loss.detach(), [g.detach() for g in grads]


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def test_file_targets_give_the_live_teachers_loss_and_gradients(setup):
    _, fp, source, teacher, R = setup
    idx = np.arange(0, 40, 5)  # 8 samples
    b, r = len(idx), R.shape[1]
    params = torch.from_numpy(fp.view_params[idx].astype(np.int64))  # the recorded views [B, K, 3]
    pad = int(fp.metadata.views.policy["padding"])
    mean, std = torch.tensor(source.mean), torch.tensor(source.std)
    views = make_views(source.get_batch(idx), params, pad, mean, std)  # [B*K, C, H, W]

    stored = torch.from_numpy(fp.table("sample", LAYER)[idx])
    live = _live_fingerprints(teacher, R, views).view(b, K, r).mean(dim=1)
    torch.testing.assert_close(stored, live, rtol=RTOL, atol=1e-6)

    x_student = views.view(b, K, *views.shape[1:])[:, 0]  # the student sees one view per sample
    loss_file, grads_file = _loss_and_grads(stored, x_student, R)
    loss_live, grads_live = _loss_and_grads(live, x_student, R)
    assert loss_file > 0
    assert abs(float(loss_file - loss_live)) <= RTOL * abs(float(loss_live))
    assert len(grads_file) == len(grads_live) > 0
    for g_file, g_live in zip(grads_file, grads_live):
        assert _rel(g_file, g_live) <= RTOL


@pytest.mark.parametrize("seed, i", [(0, 3), (1, 17), (2, 39)])
def test_a_replayed_view_carries_the_live_fingerprint_of_that_view(setup, seed, i):
    path, fp, source, teacher, R = setup
    tf = T.Compose([T.ToTensor(), T.Normalize(source.mean, source.std)])
    ds = FingerprintDataset(path, source.torch_dataset(), replay=True, layer=LAYER, transform=tf)

    torch.manual_seed(seed)
    img, label, target = ds[i]
    torch.manual_seed(seed)
    img_again, _, target_again = ds[i]
    assert torch.equal(img, img_again) and torch.equal(target, target_again)
    assert label == int(fp.labels[i])

    # the target is the stored fingerprint of one recorded view, and img is exactly that view
    views_table = torch.from_numpy(fp.table("views", LAYER)[i])  # [K, r]
    j = [k for k in range(K) if torch.equal(views_table[k], target)]
    assert len(j) >= 1
    recorded = torch.from_numpy(fp.view_params[i : i + 1, j[0] : j[0] + 1].astype(np.int64))
    pad = int(fp.metadata.views.policy["padding"])
    cut = make_views(source.get_batch([i]), recorded, pad, torch.tensor(source.mean), torch.tensor(source.std))[0]
    assert torch.equal(img, cut)

    # and the live teacher, run on the image the dataset returned, gives that fingerprint
    live = _live_fingerprints(teacher, R, img.unsqueeze(0))[0]
    torch.testing.assert_close(target, live, rtol=RTOL, atol=1e-6)
