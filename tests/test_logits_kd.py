"""Offline KD equals live KD (format 1.3 logit tables, issue 13).

A seeded teacher is built with ``--replay --logits full --dtype float32`` (and the same build
with mean, topk and sample tables).  The file-KD loss (:func:`fpkit.losses.file_kd_loss`) of a
student on a replayed view, with that view's stored logits, must equal :func:`fpkit.losses.kd_loss`
with the live teacher run on the very image FingerprintDataset returned: loss and every gradient
to float tolerance.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms as T

from fpkit.build import BuildOptions, build
from fpkit.datasets import open_source
from fpkit.errors import ConfigError, MismatchError
from fpkit.fingerprint_dataset import FingerprintDataset
from fpkit.format import open_fingerprints
from fpkit.losses import DistillLoss, SampledTarget, TopKTarget, file_kd_loss, kd_loss
from fpkit.models.cifar_resnet import resnet8
from fpkit.teachers import load_teacher

DATA = "synthetic:24x10"
K = 3
RTOL = 1e-5


def _build(d: Path, logits: str, name: str, dtype: str = "float32") -> Path:
    path = d / name
    build(
        BuildOptions(
            teacher=str(d / "teacher.pt"),
            dataset=DATA,
            output=str(path),
            views=K,
            replay=True,
            logits=logits,
            dtype=dtype,
            tables=("sample",),
            device="cpu",
            batch_size=24,
            chunk_size=8,
        ),
        quiet=True,
    )
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    torch.set_num_threads(1)
    d: Path = tmp_path_factory.mktemp("logits_kd")
    torch.manual_seed(0)
    model = resnet8(num_classes=10)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    torch.save({"model": model.state_dict()}, d / "teacher.pt")
    files = {kind: _build(d, kind, f"{kind.split(':')[0]}.h5") for kind in ("full", "mean", "topk:3", "sample:16:4")}
    source = open_source(DATA, split="train")
    teacher = load_teacher(d / "teacher.pt").model.eval()
    return files, source, teacher


def _student_loss_and_grads(x: torch.Tensor, target, T_: float, live: torch.Tensor | None = None):
    torch.manual_seed(1)
    student = resnet8(num_classes=10)
    s = student(x)
    loss = kd_loss(s, live, T_) if live is not None else file_kd_loss(s, target, T_)
    grads = torch.autograd.grad(loss, list(student.parameters()))
    return loss.detach(), grads


def test_file_kd_equals_live_kd_on_the_replayed_view(setup):
    files, source, teacher = setup
    fp = open_fingerprints(files["full"])
    assert fp.format_version == "1.3" and fp.logits_kind == "full"
    assert fp.metadata.extras["logits"]["dtype"] == "float32"
    tf = T.Compose([T.ToTensor(), T.Normalize(source.mean, source.std)])
    ds = FingerprintDataset(files["full"], source.torch_dataset(), replay=True, transform=tf, targets=("logits",))
    torch.manual_seed(0)
    items = [ds[i] for i in (0, 5, 11, 23)]
    x = torch.stack([img for img, _, _ in items])
    stored = torch.stack([z for _, _, z in items])
    with torch.no_grad():
        live = teacher(x)
    torch.testing.assert_close(stored, live, rtol=RTOL, atol=1e-5)  # the stored logits are the live teacher's
    loss_file, g_file = _student_loss_and_grads(x, stored, 4.0)
    loss_live, g_live = _student_loss_and_grads(x, None, 4.0, live)
    assert loss_file > 0 and abs(float(loss_file - loss_live)) <= RTOL * float(loss_live)
    for a, b in zip(g_file, g_live):
        assert float((a - b).norm()) <= RTOL * max(float(b.norm()), 1e-12)


def test_mean_table_is_the_mean_of_the_views_logits(setup):
    files, _, _ = setup
    full = open_fingerprints(files["full"]).logit_targets()
    mean = open_fingerprints(files["mean"]).logit_targets()
    np.testing.assert_allclose(mean, full.mean(axis=1).astype(np.float16).astype(np.float32), rtol=1e-3, atol=2e-3)


def test_sparse_targets_follow_the_full_logits(setup):
    files, source, _ = setup
    full = open_fingerprints(files["full"]).logit_targets()
    values, idx = open_fingerprints(files["topk:3"]).logit_targets()
    np.testing.assert_array_equal(idx, np.argsort(-full, axis=-1, kind="stable")[..., :3])
    fp = open_fingerprints(files["sample:16:4"])
    assert fp.metadata.extras["logits"] == {**fp.metadata.extras["logits"], "k": 16, "temperature": 4.0}
    assert fp.logit_targets().shape == (24, K, 16)
    ds = FingerprintDataset(
        fp, source.torch_dataset(), replay=True, transform=T.ToTensor(), targets=("fingerprint", "logits")
    )
    img, label, phi, z = ds[2]
    assert isinstance(z, SampledTarget) and z.indices.shape == (16,) and z.temperature == 4.0 and phi.ndim == 1
    batch = torch.utils.data.default_collate([ds[i] for i in range(4)])
    s = torch.randn(4, 10, requires_grad=True)
    assert file_kd_loss(s, batch[3], 4.0) > 0
    with pytest.raises(ConfigError, match="T=4.0"):
        file_kd_loss(s, batch[3], 2.0)
    tk = FingerprintDataset(files["topk:3"], source.torch_dataset(), replay=True, targets=("logits",))
    assert isinstance(tk[0][2], TopKTarget)
    with pytest.raises(ConfigError, match="replay=True"):
        FingerprintDataset(files["topk:3"], source.torch_dataset(), targets=("logits",))


def test_file_kd_loss_sparse_forms():
    torch.manual_seed(0)
    t, s = torch.randn(5, 7) * 3, torch.randn(5, 7)
    v, i = t.topk(7, dim=1)
    torch.testing.assert_close(file_kd_loss(s, TopKTarget(v, i), 2.0), kd_loss(s, t, 2.0))  # k = C: exact
    # sampled: the mean over many draws of the gradient approaches live KD's gradient
    p = torch.softmax(t / 2.0, 1)
    draws = torch.multinomial(p, 40000, replacement=True)
    s1 = s.clone().requires_grad_(True)
    g_est = torch.autograd.grad(file_kd_loss(s1, SampledTarget(draws, 2.0), 2.0), s1)[0]
    s2 = s.clone().requires_grad_(True)
    g_true = torch.autograd.grad(kd_loss(s2, t, 2.0), s2)[0]
    assert float((g_est - g_true).abs().max()) < 0.02


def test_distill_loss_adds_the_weighted_kd_term():
    torch.manual_seed(0)
    logits, labels = torch.randn(4, 10, requires_grad=True), torch.randint(0, 10, (4,))
    phi = {"layer3": torch.randn(4, 8)}
    loss = DistillLoss({"layer3": 1.0}, lam=0.5, kd_weight=0.7, T=3.0)
    t = torch.randn(4, 10)
    total, parts = loss(logits, labels, phi, phi, kd_target=t)
    assert parts["kd"] == pytest.approx(float(kd_loss(logits, t, 3.0).detach()), rel=1e-6)
    assert parts["weighted/kd"] == pytest.approx(0.7 * parts["kd"], rel=1e-6)
    assert parts["total"] == pytest.approx(parts["ce"] + parts["weighted/layer3"] + parts["weighted/kd"], rel=1e-6)
    with pytest.raises(MismatchError, match="kd_target"):
        loss(logits, labels, phi, phi)
    _, plain = DistillLoss({"layer3": 1.0})(logits, labels, phi, phi)
    assert "kd" not in plain


def test_build_options_and_resume_rules():
    from dataclasses import replace

    from fpkit.build.options import check_options
    from fpkit.build.plan import BuildPlan

    with pytest.raises(ConfigError, match="needs --replay"):
        check_options(BuildOptions(logits="topk:3"))
    with pytest.raises(ConfigError, match="topk:K"):
        check_options(BuildOptions(logits="top5"))
    check_options(BuildOptions(logits="mean"))
    # a plan written before --logits existed loads with none, and a change of --logits is named on resume
    plan = _small_plan()
    old = plan.to_json()
    del old["logits"], old["num_classes"]
    assert BuildPlan.from_json(old) == plan and plan.logits_shape is None
    new = replace(plan, logits="full", num_classes=10)
    assert BuildPlan.from_json(new.to_json()) == new and new.logits_shape == (4, 2, 10)
    assert replace(new, logits="mean").logits_shape == (4, 10)
    assert new.changes_from(plan) == ["--logits was none, now full"]


def test_work_folder_keeps_reduced_logits_for_topk_and_sample(tmp_path):
    """topk:K and sample:K keep [N, K, k] in the work folder (reduced per step), not [N, K, C];
    a work folder of the older layout (float32 logits.npy) is refused on resume."""
    from dataclasses import replace

    from fpkit.build.workstore import WorkStore

    plan = _small_plan(num_classes=10)
    want = {
        "topk:3": {"logits/topk_values": ((4, 2, 3), np.float32), "logits/topk_indices": ((4, 2, 3), np.int32)},
        "sample:5:2": {"logits/sample_indices": ((4, 2, 5), np.int32)},
    }
    for kind, arrays in want.items():
        work = tmp_path / kind.replace(":", "_")
        WorkStore.create(work, replace(plan, logits=kind))
        store = WorkStore(work, replace(plan, logits=kind))
        assert store.logits is None and not (work / "logits.npy").exists()
        assert {p: (a.shape, a.dtype) for p, a in store.logit_tables.items()} == arrays
    WorkStore.create(tmp_path / "full", replace(plan, logits="full"))
    store = WorkStore(tmp_path / "full", replace(plan, logits="full"))
    assert store.logits.shape == (4, 2, 10) and store.logit_tables == {}
    old = tmp_path / "topk_3"  # an older fpkit's layout: the float32 [N, K, C] logits
    for p in old.glob("logits.*.npy"):
        p.unlink()
    np.save(old / "logits.npy", np.zeros((4, 2, 10), np.float32))
    with pytest.raises(MismatchError, match="--force"):
        WorkStore(old, replace(plan, logits="topk:3"))


def _small_plan(**changes):
    """A build plan of 4 samples x 2 replayed views, one layer (d = 4, r = 8), no logits."""
    from fpkit.build.plan import BuildPlan, LayerPlan, StoragePlan, ViewPlan

    plan = BuildPlan(
        teacher_sha256="0" * 64,
        dataset={"name": "x"},
        num_samples=4,
        labels_sha256="0" * 64,
        layers=(LayerPlan("layer3", "avg", 4, 8, 0),),
        views=ViewPlan(2, 2, 0, 4, True, True),
        samples_per_step=2,
        chunk_size=2,
        autocast=None,
        storage=StoragePlan("float16", "none", ("sample",)),
    )
    return replace(plan, **changes)
