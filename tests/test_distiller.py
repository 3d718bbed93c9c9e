"""FingerprintDistiller: the same numbers as the hand-wired LayerTap + FingerprintHead + DistillLoss."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torchvision.transforms as T
from torch import nn

import fpkit
from fpkit import FingerprintDataset, FingerprintDistiller
from fpkit.build import BuildOptions, build
from fpkit.datasets import open_source
from fpkit.errors import ConfigError, FpkitError, MismatchError, RedactedError
from fpkit.features import LayerTap, pool_features
from fpkit.losses import DistillLoss, LinearWarmup
from fpkit.models.cifar_resnet import resnet8, resnet8x4
from fpkit.student import FingerprintHead

DATA = "synthetic:40x10"
TO_TENSOR = T.Compose([T.ToTensor(), T.Normalize((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))])
LAM = LinearWarmup(10.0, warmup_epochs=4)


@pytest.fixture(scope="module")
def fp_file(tmp_path_factory):
    d = tmp_path_factory.mktemp("fp")
    torch.manual_seed(0)
    torch.save(resnet8(num_classes=10).state_dict(), d / "t.pt")
    res = build(
        BuildOptions(
            teacher=str(d / "t.pt"),
            dataset=DATA,
            output=str(d / "fp.h5"),
            views=2,
            replay=True,
            layers=("layer3", "layer2"),
            dtype="float32",
            chunk_size=16,
            device="cpu",
        ),
        quiet=True,
    )
    return res.path


@pytest.fixture(scope="module")
def redacted_file(tmp_path_factory):
    d = tmp_path_factory.mktemp("redacted")
    torch.manual_seed(0)
    torch.save(resnet8(num_classes=10).state_dict(), d / "t.pt")
    res = build(
        BuildOptions(
            teacher=str(d / "t.pt"),
            dataset=DATA,
            output=str(d / "r.h5"),
            views=1,
            redact=True,
            tables=("sample",),
            chunk_size=16,
            device="cpu",
        ),
        quiet=True,
    )
    return res.path


@pytest.fixture
def plain():
    return open_source(DATA).torch_dataset()


def _student(arch=resnet8, seed: int = 1) -> nn.Module:
    torch.manual_seed(seed)
    return arch(num_classes=10)


def _batch(ds: FingerprintDataset, n: int = 8):
    return next(iter(torch.utils.data.DataLoader(ds, batch_size=n, shuffle=False)))


def _hand_wired(student, ds, weights, x, y, targets, epoch, heads=None, kind="cosine"):
    """The README's former recipe: a LayerTap, one FingerprintHead per layer, a DistillLoss."""
    layers = list(weights)
    with LayerTap(student, layers) as tap:
        logits, feats = tap(x)
        if kind == "cosine":
            heads = heads or {n: FingerprintHead(ds.projection(n), pooling=ds.fp.layer(n).pooling) for n in layers}
            phi_s = {n: heads[n](feats[n]) for n in layers}
        else:
            phi_s = {n: pool_features(feats[n], ds.fp.layer(n).pooling) for n in layers}
        return DistillLoss(weights, kind=kind, lam=LAM)(logits, y, phi_s, targets, epoch=epoch)


def _grads(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_loss_and_gradients_equal_the_hand_wired_computation(fp_file, plain):
    ds = FingerprintDataset(fp_file, plain, layer="layer3", transform=TO_TENSOR)
    x, y, phi_t = _batch(ds)
    a, b = _student(), _student()
    distiller = FingerprintDistiller(a, ds, lam=LAM)
    loss, parts = distiller(x, y, phi_t, epoch=1.5)
    loss.backward()
    ref_loss, ref_parts = _hand_wired(b, ds, {"layer3": 1.0}, x, y, {"layer3": phi_t}, 1.5)
    ref_loss.backward()
    assert torch.equal(loss, ref_loss) and parts == ref_parts
    assert parts["lambda"] == LAM(1.5) and set(parts) == {"ce", "lambda", "term/layer3", "weighted/layer3", "total"}
    ga, gb = _grads(a), _grads(b)
    assert ga.keys() == gb.keys() and all(torch.equal(ga[k], gb[k]) for k in ga)
    assert list(distiller.parameters()) == list(a.parameters())  # same width: no adapter, nothing extra
    assert distiller.poolings == {"layer3": "avg"} and distiller.head("layer3").in_dim == 64


def test_gradients_of_the_fingerprint_term_reach_the_student(fp_file, plain):
    ds = FingerprintDataset(fp_file, plain, layer="layer3", transform=TO_TENSOR)
    x, y, phi_t = _batch(ds)
    grads = {}
    for lam in (0.0, 10.0):
        student = _student()
        FingerprintDistiller(student, ds, lam=lam)(x, y, phi_t, epoch=0)[0].backward()
        grads[lam] = _grads(student)
    assert torch.equal(grads[0.0]["fc.weight"], grads[10.0]["fc.weight"])  # fc lies after the tap
    for name in ("conv1.weight", "layer1.0.conv1.weight", "layer3.0.conv2.weight"):
        assert not torch.allclose(grads[0.0][name], grads[10.0][name]), name


def test_an_adapter_is_trained_where_widths_differ(fp_file, plain):
    ds = FingerprintDataset(fp_file, plain, layer="layer3", transform=TO_TENSOR)
    x, y, phi_t = _batch(ds)
    a, b = _student(resnet8x4), _student(resnet8x4)
    distiller = FingerprintDistiller(a, ds, lam=LAM)
    head = distiller.head("layer3")
    assert head.in_dim == 256 and head.d == 64 and head.adapter is not None
    params = list(distiller.parameters())
    assert params[:-1] == list(a.parameters()) and params[-1] is head.adapter.weight
    loss, parts = distiller(x, y, phi_t, epoch=0)
    loss.backward()
    assert head.adapter.weight.grad is not None and head.R.grad is None
    ref = FingerprintHead(ds.projection("layer3"), in_dim=256)
    ref.load_state_dict(head.state_dict())
    ref_loss, ref_parts = _hand_wired(b, ds, {"layer3": 1.0}, x, y, {"layer3": phi_t}, 0, heads={"layer3": ref})
    assert torch.equal(loss, ref_loss) and parts == ref_parts


def test_several_layers_from_a_dict_of_targets(fp_file, plain):
    ds = FingerprintDataset(fp_file, plain, layer="all", transform=TO_TENSOR)
    x, y, phi_t = _batch(ds)
    assert set(phi_t) == {"layer3", "layer2"}
    weights = {"layer3": 1.0, "layer2": 0.2}
    distiller = FingerprintDistiller(_student(), ds, lam=LAM, layer_weights=weights)
    loss, parts = distiller(x, y, phi_t, epoch=3)
    ref_loss, ref_parts = _hand_wired(_student(), ds, weights, x, y, phi_t, 3)
    assert torch.equal(loss, ref_loss) and parts == ref_parts
    assert parts["weighted/layer2"] == pytest.approx(0.2 * parts["lambda"] * parts["term/layer2"], rel=1e-6)
    every = FingerprintDistiller(_student(), ds, lam=1.0)  # default: every layer, weight 1
    assert every.layers == ("layer3", "layer2") and every.loss.layer_weights == {"layer3": 1.0, "layer2": 1.0}
    one = FingerprintDistiller(_student(), ds, lam=1.0, layer_weights={"layer2": 1.0})
    assert set(one(x, y, phi_t, epoch=0)[1]) >= {"term/layer2"} and one.layers == ("layer2",)


@pytest.mark.parametrize("table, replay", [("class", False), ("sample", True)])
def test_class_table_and_replay(fp_file, plain, table, replay):
    ds = FingerprintDataset(fp_file, plain, layer="layer3", table=table, replay=replay, transform=TO_TENSOR)
    torch.manual_seed(5)
    x, y, phi_t = _batch(ds)
    if table == "class":
        assert torch.equal(phi_t, torch.from_numpy(ds.fp.table("class", "layer3"))[y])
    loss, parts = FingerprintDistiller(_student(), ds, lam=LAM)(x, y, phi_t, epoch=2)
    ref_loss, ref_parts = _hand_wired(_student(), ds, {"layer3": 1.0}, x, y, {"layer3": phi_t}, 2)
    assert torch.equal(loss, ref_loss) and parts == ref_parts


def test_index_table_is_gathered_on_the_students_device(fp_file, plain):
    by_index = FingerprintDataset(fp_file, plain, layer="all", table="index", transform=TO_TENSOR)
    by_row = FingerprintDataset(fp_file, plain, layer="all", transform=TO_TENSOR)
    x, y, idx = _batch(by_index)
    _, _, rows = _batch(by_row)
    assert torch.equal(idx["layer3"], torch.arange(8))
    distiller = FingerprintDistiller(_student(), by_index, lam=LAM)
    targets = distiller.targets(idx)
    assert all(torch.equal(targets[n], rows[n]) for n in ("layer3", "layer2"))
    assert "_table_0" not in distiller.state_dict()  # the file's table is not checkpointed
    loss, parts = distiller(x, y, idx, epoch=1)
    assert parts == FingerprintDistiller(_student(), by_row, lam=LAM)(x, y, rows, epoch=1)[1]


def test_relational_needs_no_R_and_cosine_refuses_a_redacted_file(redacted_file, plain):
    ds = FingerprintDataset(redacted_file, plain, transform=TO_TENSOR)
    with pytest.raises(RedactedError, match="kind='relational'") as exc:
        FingerprintDistiller(_student(), ds, lam=1.0)
    assert isinstance(exc.value, FpkitError) and isinstance(exc.value, LookupError)
    assert "relational_loss" in str(exc.value)
    x, y, phi_t = _batch(ds)
    distiller = FingerprintDistiller(_student(), ds, lam=LAM, kind="relational")
    assert list(distiller.heads) == []
    loss, parts = distiller(x, y, phi_t, epoch=0)
    ref_loss, ref_parts = _hand_wired(_student(), ds, {"layer3": 1.0}, x, y, {"layer3": phi_t}, 0, kind="relational")
    assert torch.equal(loss, ref_loss) and parts == ref_parts


def test_dataloader_workers(fp_file, plain):
    ds = FingerprintDataset(fp_file, plain, layer="all", transform=TO_TENSOR)
    distiller = FingerprintDistiller(_student(), ds, lam=LAM)
    distiller.eval()  # BatchNorm on running statistics: the same batch, the same loss
    ref = [distiller(x, y, t, epoch=0)[1] for x, y, t in torch.utils.data.DataLoader(ds, batch_size=16)]
    got = [distiller(x, y, t, epoch=0)[1] for x, y, t in torch.utils.data.DataLoader(ds, batch_size=16, num_workers=2)]
    assert len(ref) == 3 and got == ref


def test_construction_leaves_the_rng_and_the_modes_alone(fp_file, plain):
    ds = FingerprintDataset(fp_file, plain, replay=True, transform=T.Compose([T.RandomHorizontalFlip(), TO_TENSOR]))
    student = _student()
    student.layer1.eval()
    torch.manual_seed(9)
    state = torch.get_rng_state()
    distiller = FingerprintDistiller(student, ds, lam=1.0)  # probes with item 0
    assert torch.equal(torch.get_rng_state(), state)
    assert student.training and not student.layer1.training and student.layer2.training
    distiller.eval()
    assert not student.training
    with torch.no_grad():
        out = student(torch.zeros(2, 3, 32, 32))  # a plain forward: the tap captures nothing
    assert out.shape == (2, 10) and distiller.tap._store == {}


def test_student_layers_and_example_input(fp_file, plain):
    ds = FingerprintDataset(fp_file, plain, layer="layer3")  # PIL images: nothing to probe with
    student = _student()
    with pytest.raises(ConfigError, match="example_input"):
        FingerprintDistiller(student, ds, lam=1.0)
    with pytest.raises(RuntimeError):  # the probe fails: 5 channels for a 3-channel student
        FingerprintDistiller(student, ds, lam=1.0, example_input=torch.zeros(2, 5, 32, 32))
    assert all(not m._forward_hooks for m in student.modules())  # a refused construction leaves no hooks
    wrapped = nn.Sequential()
    wrapped.add_module("net", _student())
    distiller = FingerprintDistiller(
        wrapped, ds, lam=1.0, student_layers={"layer3": "net.layer3"}, example_input=torch.zeros(2, 3, 32, 32)
    )
    assert distiller.student_layers == {"layer3": "net.layer3"} and "layer3<-net.layer3" in repr(distiller)
    x = torch.randn(4, 3, 32, 32)
    y, phi_t = torch.arange(4), torch.randn(4, 128)
    _, parts = distiller(x, y, phi_t, epoch=0)
    direct = FingerprintDistiller(copy.deepcopy(wrapped.net), ds, lam=1.0, example_input=x)
    assert direct(x, y, phi_t, epoch=0)[1] == parts


def test_close_removes_the_hooks(fp_file, plain):
    ds = FingerprintDataset(fp_file, plain, layer="layer3", transform=TO_TENSOR)
    student = _student()
    with FingerprintDistiller(student, ds, lam=1.0) as distiller:
        assert len(student.layer3._forward_hooks) == 1
    assert len(student.layer3._forward_hooks) == 0
    x, y, phi_t = _batch(ds)
    with pytest.raises(ConfigError, match="closed"):
        distiller(x, y, phi_t, epoch=0)


def test_errors(fp_file, plain):
    ds = FingerprintDataset(fp_file, plain, layer="layer3", transform=TO_TENSOR)
    both = FingerprintDataset(fp_file, plain, layer="all", transform=TO_TENSOR)
    with pytest.raises(ConfigError, match="FingerprintDataset"):
        FingerprintDistiller(_student(), fp_file, lam=1.0)
    with pytest.raises(TypeError, match="lam"):
        FingerprintDistiller(_student(), ds)  # lambda has no default
    with pytest.raises(ConfigError, match=r"layer2.*layer='all'"):
        FingerprintDistiller(_student(), ds, lam=1.0, layer_weights={"layer2": 1.0})
    with pytest.raises(ConfigError, match="layer9"):
        FingerprintDistiller(_student(), both, lam=1.0, layer_weights={"layer9": 1.0})
    with pytest.raises(ConfigError, match="kind"):
        FingerprintDistiller(_student(), ds, lam=1.0, kind="l2")
    with pytest.raises(ConfigError, match="lambda"):
        FingerprintDistiller(_student(), ds, lam=-1.0)
    with pytest.raises(ConfigError, match="did you mean"):
        FingerprintDistiller(_student(), ds, lam=1.0, student_layers={"layer3": "layer_3"})
    with pytest.raises(ConfigError, match="not distilled"):
        FingerprintDistiller(_student(), ds, lam=1.0, student_layers={"layer2": "layer2"})
    distiller = FingerprintDistiller(_student(), both, lam=1.0)
    x, y, phi_t = _batch(both)
    with pytest.raises(TypeError, match="epoch"):
        distiller(x, y, phi_t)  # the epoch cannot be forgotten
    with pytest.raises(ConfigError, match="epoch"):
        distiller(x, y, phi_t, epoch=-1)
    with pytest.raises(MismatchError, match="one tensor"):
        distiller(x, y, phi_t["layer3"], epoch=0)
    with pytest.raises(MismatchError, match="layer2"):
        distiller(x, y, {"layer3": phi_t["layer3"]}, epoch=0)
    with pytest.raises(MismatchError):
        distiller(x, y, {n: t[:4] for n, t in phi_t.items()}, epoch=0)


def test_an_epoch_that_never_advances_is_reported(fp_file, plain):
    ds = FingerprintDataset(fp_file, plain, layer="layer3", transform=TO_TENSOR)
    x, y, phi_t = _batch(ds, 40)  # one batch = one pass
    stuck = FingerprintDistiller(_student(), ds, lam=LAM)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        stuck(x, y, phi_t, epoch=0)
        stuck(x, y, phi_t, epoch=0)
    with pytest.warns(UserWarning, match="lambda stays at 2.5 instead of warming up to 10"):
        stuck(x, y, phi_t, epoch=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        stuck(x, y, phi_t, epoch=0)  # once
        fine = FingerprintDistiller(_student(), ds, lam=LAM)
        for epoch in range(6):
            fine(x, y, phi_t, epoch=epoch)
        constant = FingerprintDistiller(_student(), ds, lam=10.0)
        for _ in range(4):
            constant(x, y, phi_t, epoch=0)


def test_public_surface():
    assert fpkit.FingerprintDistiller is FingerprintDistiller
    assert "FingerprintDistiller" in dir(fpkit)


def test_file_kd_term_equals_the_hand_wired_distill_loss(fp_file, plain):
    from fpkit.losses import FileKD

    ds = FingerprintDataset(fp_file, plain, layer="layer3", transform=TO_TENSOR)
    x, y, phi_t = _batch(ds)
    z_t = torch.randn(len(y), 10, generator=torch.Generator().manual_seed(3))
    a, b = _student(), _student()
    distiller = FingerprintDistiller(a, ds, lam=LAM, kd=FileKD(weight=0.5, T=2.0))
    loss, parts = distiller(x, y, phi_t, epoch=1.5, logits_t=z_t)
    loss.backward()
    with LayerTap(b, ["layer3"]) as tap:
        logits, feats = tap(x)
        head = FingerprintHead(ds.projection("layer3"), pooling=ds.fp.layer("layer3").pooling)
        ref = DistillLoss({"layer3": 1.0}, lam=LAM, kd_weight=0.5, T=2.0)
        ref_loss, ref_parts = ref(logits, y, {"layer3": head(feats["layer3"])}, {"layer3": phi_t}, 1.5, kd_target=z_t)
    ref_loss.backward()
    assert torch.equal(loss, ref_loss) and parts == ref_parts and any("kd" in k for k in parts)
    ga, gb = _grads(a), _grads(b)
    assert ga.keys() == gb.keys() and all(torch.equal(ga[k], gb[k]) for k in ga)
    with pytest.raises(MismatchError):
        distiller(x, y, phi_t, epoch=1.5)  # kd= without logits_t
    plain_distiller = FingerprintDistiller(_student(), ds, lam=LAM)
    with pytest.raises(ConfigError, match="kd="):
        plain_distiller(x, y, phi_t, epoch=1.5, logits_t=z_t)
