"""Tests for fpkit.features: pooling, LayerTap, default_layer, list_layers, compiled models."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import resnet18

from fpkit.errors import ConfigError, MismatchError
from fpkit.features import (
    LAYER_POOLINGS_ATTR,
    LAYER_TYPES_ATTR,
    NOT_TAPPABLE_ATTR,
    POOLINGS,
    LayerTap,
    default_layer,
    layer_pooling,
    list_layers,
    pool_features,
    project_features,
    resolve_pooling,
    tap_refusal,
)

# --- small models -------------------------------------------------------------------------


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.block = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(16, 5)

    def forward(self, x):
        x = torch.relu(self.conv1(x))
        x = self.block(x)
        return self.head(self.pool(x).flatten(1))


class _Block(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, 2, batch_first=True)  # returns a tuple
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x):
        h = self.norm(x)
        x = x + self.attn(h, h, h)[0]
        return x + self.mlp(x)


class TinyViT(nn.Module):
    """Transformer-like: patches -> [B, T, D] tokens with a CLS token, classifier on token 0."""

    def __init__(self, dim: int = 16, classes: int = 4) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, dim, 4, stride=4)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.blocks = nn.Sequential(_Block(dim), _Block(dim))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        t = self.patch(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.cls.expand(t.shape[0], -1, -1), t], dim=1)
        t = self.norm(self.blocks(t))
        return self.head(t[:, 0])


class _CifarBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)

    def forward(self, x):
        return torch.relu(self.bn1(self.conv1(x)))


class CifarResNetStub(nn.Module):
    """RepDistiller-like CIFAR ResNet: conv1, bn1, layer1..layer3, fc; no layer4."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = nn.Sequential(_CifarBlock(16, 16, 1))
        self.layer2 = nn.Sequential(_CifarBlock(16, 32, 2))
        self.layer3 = nn.Sequential(_CifarBlock(32, 64, 2))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, 100)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.avgpool(x).flatten(1))


def _all_hooks_empty(model: nn.Module) -> bool:
    return all(len(m._forward_hooks) == 0 for m in model.modules())


# --- pooling ------------------------------------------------------------------------------


def test_pool_avg_matches_numpy():
    x = torch.randn(3, 5, 4, 6)
    expect = x.numpy().astype(np.float64).mean(axis=(2, 3))
    for mode in ("avg", "auto"):
        out = pool_features(x, mode)
        assert out.dtype == torch.float32 and out.shape == (3, 5)
        np.testing.assert_allclose(out.numpy(), expect, rtol=1e-6, atol=1e-6)


def test_pool_tokens_and_none():
    x = torch.randn(2, 7, 4)
    np.testing.assert_allclose(pool_features(x).numpy(), x.numpy().mean(axis=1), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(pool_features(x, "token_mean").numpy(), x.numpy().mean(axis=1), rtol=1e-6, atol=1e-6)
    assert torch.equal(pool_features(x, "token_cls"), x[:, 0])
    y = torch.randn(4, 9)
    assert torch.equal(pool_features(y), y)
    assert torch.equal(pool_features(y, "none"), y)


def test_pool_casts_half_to_float32_before_reducing():
    x = torch.randn(2, 3, 5, 5).to(torch.bfloat16)
    out = pool_features(x)
    assert out.dtype == torch.float32
    assert torch.equal(out, x.float().mean(dim=(2, 3)))


@pytest.mark.parametrize(
    "shape,pooling",
    [
        ((2, 3, 4, 4), "token_mean"),
        ((2, 3, 4), "avg"),
        ((2, 3), "token_cls"),
        ((2, 3, 4), "none"),
        ((2, 3, 4, 4, 4), "auto"),
        ((3,), "auto"),
        ((2, 3), "max"),
    ],
)
def test_pool_rejects_misfit(shape, pooling):
    with pytest.raises(ConfigError):
        pool_features(torch.zeros(shape), pooling)


def test_resolve_pooling():
    assert resolve_pooling(4, "auto") == "avg"
    assert resolve_pooling(3, "auto") == "token_mean"
    assert resolve_pooling(2, "auto") == "none"
    assert resolve_pooling(3, "token_cls") == "token_cls"
    assert set(POOLINGS) == {"avg", "token_mean", "token_cls", "none"}
    with pytest.raises(ConfigError, match="token_mean"):
        resolve_pooling(3, "avg")
    with pytest.raises(ConfigError, match="unknown pooling"):
        resolve_pooling(4, "gem")


def test_layer_pooling_takes_the_loaders_pooling_for_auto():
    """A loader may say what "auto" means for a layer (a ViT's encoder: its class token); an explicit
    pooling and the other layers keep resolve_pooling's rules."""
    model = TinyViT()
    assert layer_pooling(model, "norm", 3) == "token_mean"
    setattr(model, LAYER_POOLINGS_ATTR, {"norm": "token_cls"})
    assert layer_pooling(model, "norm", 3) == "token_cls"
    assert layer_pooling(model, "norm", 3, "token_mean") == "token_mean"
    assert layer_pooling(model, "blocks", 3) == "token_mean"
    with pytest.raises(ConfigError, match="needs a"):
        layer_pooling(model, "norm", 4)


def test_project_features_formula_and_mismatch():
    torch.manual_seed(0)
    pooled, R = torch.randn(5, 8), F.normalize(torch.randn(8, 3), dim=0)
    assert torch.equal(project_features(pooled, R), F.normalize(pooled, dim=1) @ R)
    with pytest.raises(MismatchError, match=r"\[5, 8\].*\[7, 3\]"):
        project_features(pooled, torch.randn(7, 3))


# --- LayerTap -----------------------------------------------------------------------------


def test_layertap_small_cnn_matches_manual_forward():
    torch.manual_seed(0)
    model = SmallCNN().eval()
    x = torch.randn(2, 3, 8, 8)
    with LayerTap(model, ["conv1", "block"]) as tap:
        out, feats = tap(x)
    assert set(feats) == {"conv1", "block"}
    c1 = model.conv1(x)
    assert torch.equal(feats["conv1"], c1)
    assert torch.equal(feats["block"], model.block(torch.relu(c1)))
    assert torch.equal(out, model(x))
    assert _all_hooks_empty(model)


def test_layertap_keeps_graph_and_works_under_no_grad_and_autocast():
    torch.manual_seed(0)
    model = SmallCNN()
    x = torch.randn(2, 3, 8, 8)
    tap = LayerTap(model, "block")  # a bare string is one layer
    _, feats = tap(x)
    pool_features(feats["block"]).sum().backward()
    assert model.conv1.weight.grad is not None
    with torch.no_grad():
        _, feats = tap(x)
    assert not feats["block"].requires_grad
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, feats = tap(x)
    assert feats["block"].dtype == torch.bfloat16
    assert pool_features(feats["block"]).dtype == torch.float32
    tap.close()
    assert _all_hooks_empty(model)


def test_layertap_no_leak_across_calls():
    torch.manual_seed(0)
    model = SmallCNN()
    tap = LayerTap(model, ["block"])
    _, a = tap(torch.randn(2, 3, 8, 8))
    _, b = tap(torch.randn(4, 3, 8, 8))
    assert a["block"].shape[0] == 2 and b["block"].shape[0] == 4
    assert tap._store == {}
    model(torch.randn(2, 3, 8, 8))  # plain forward while open: nothing captured
    assert tap._store == {}
    tap.close()
    tap.close()  # idempotent
    assert tap.closed
    with pytest.raises(ConfigError, match="closed"):
        tap(torch.randn(1, 3, 8, 8))


def test_layertap_resnet18():
    model = resnet18(weights=None).eval()
    with torch.no_grad(), LayerTap(model, ["layer4", "layer3.1.conv2"]) as tap:
        out, feats = tap(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 1000)
    assert feats["layer4"].shape == (2, 512, 1, 1)
    assert feats["layer3.1.conv2"].shape == (2, 256, 2, 2)
    assert _all_hooks_empty(model)


def test_layertap_tokens_and_tuple_outputs():
    torch.manual_seed(0)
    model = TinyViT().eval()
    x = torch.randn(3, 3, 16, 16)
    with LayerTap(model, ["blocks.1", "blocks.0.attn", "norm"]) as tap:
        out, feats = tap(x)
    assert feats["blocks.1"].shape == (3, 17, 16)
    assert feats["blocks.0.attn"].shape == (3, 17, 16)  # element 0 of (output, weights)
    assert torch.equal(out, model.head(feats["norm"][:, 0]))
    assert torch.equal(pool_features(feats["norm"], "token_cls"), feats["norm"][:, 0])
    assert pool_features(feats["blocks.1"]).shape == (3, 16)
    assert _all_hooks_empty(model)


def test_layertap_unknown_layer_suggests_and_registers_nothing():
    model = resnet18(weights=None)
    with pytest.raises(ConfigError) as err:
        LayerTap(model, ["layer4", "layer5"])
    msg = str(err.value)
    assert "layer5" in msg and "layer4" in msg and "fpkit layers" in msg
    assert "\n" not in msg
    assert _all_hooks_empty(model)  # the valid name before it was not hooked either
    with pytest.raises(ConfigError, match="layer4.1.conv2"):
        LayerTap(model, ["layer4.1.cnv2"])


@pytest.mark.parametrize("layers", [[], ["fc", "fc"], [""]])
def test_layertap_rejects_bad_layer_lists(layers):
    with pytest.raises(ConfigError):
        LayerTap(SmallCNN(), layers)


def test_layertap_module_not_run():
    class Unused(SmallCNN):
        def __init__(self) -> None:
            super().__init__()
            self.spare = nn.ReLU()

    with LayerTap(Unused(), ["spare"]) as tap, pytest.raises(ConfigError, match="did not run"):
        tap(torch.randn(1, 3, 8, 8))


# --- default_layer, list_layers -----------------------------------------------------------


def test_default_layer_resnets():
    assert default_layer(CifarResNetStub()) == "layer3"
    assert default_layer(resnet18(weights=None)) == "layer4"


def test_default_layer_generic_models():
    assert default_layer(SmallCNN()) == "pool"
    assert default_layer(TinyViT()) == "norm"
    mlp = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Flatten(), nn.Linear(8, 2))
    assert default_layer(mlp) == "2"

    class Nested(nn.Module):  # the classifier is the first child of its own container
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
            self.classifier = nn.Sequential(nn.Linear(4, 2))

    assert default_layer(Nested()) == "features"


def test_default_layer_without_linear_asks_for_layer():
    with pytest.raises(ConfigError, match="--layer"):
        default_layer(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()))
    with pytest.raises(ConfigError, match="--layer"):
        default_layer(nn.Sequential(nn.Linear(3, 4)))


def test_list_layers():
    layers = list_layers(resnet18(weights=None))
    assert ("layer4", "Sequential") in layers
    assert ("layer4.1.conv2", "Conv2d") in layers
    assert ("fc", "Linear") in layers
    assert all(name for name, _ in layers)
    assert [n for n, _ in list_layers(SmallCNN())] == ["conv1", "block", "block.0", "block.1", "pool", "head"]


# --- compiled models: TorchScript, torch.export -------------------------------------------


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit is deprecated, still loadable
@pytest.mark.parametrize("how", ["script", "trace"])
def test_torchscript_is_refused_everywhere_with_one_message(how):
    model = SmallCNN().eval()
    ts = torch.jit.script(model) if how == "script" else torch.jit.trace(model, torch.randn(1, 3, 8, 8))
    reason = tap_refusal(ts)
    assert reason and "TorchScript" in reason and "--arch" in reason and "torch.export" in reason
    assert "\n" not in reason
    for call in (lambda: LayerTap(ts, ["block"]), lambda: list_layers(ts), lambda: default_layer(ts)):
        with pytest.raises(ConfigError) as info:
            call()
        assert str(info.value) == reason
    assert tap_refusal(model) is None


def test_not_tappable_marker_layer_types_and_internal_names():
    model = SmallCNN()
    model._guards_fn = nn.Identity()  # torch.export adds such a submodule; it is no layer
    assert "_guards_fn" not in [n for n, _ in list_layers(model)]
    setattr(model, LAYER_TYPES_ATTR, {"block": "my.pkg.Stage", "head": "torch.nn.modules.linear.Linear"})
    assert ("block", "Stage") in list_layers(model) and ("pool", "AdaptiveAvgPool2d") in list_layers(model)
    setattr(model, NOT_TAPPABLE_ATTR, "cannot tap this one; pass --arch NAME")
    for call in (lambda: LayerTap(model, ["block"]), lambda: list_layers(model), lambda: default_layer(model)):
        with pytest.raises(ConfigError, match="cannot tap this one"):
            call()


def test_unflattened_export_taps_like_the_eager_model():
    torch.manual_seed(0)
    model = SmallCNN().eval()
    x = torch.randn(2, 3, 8, 8)
    ep = torch.export.export(model, (x,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    flat = ep.module()
    unflat = torch.export.unflatten(ep)
    # the flat graph inlines every submodule: hooks on its empty shells never fire
    with LayerTap(flat, ["block"]) as tap, pytest.raises(ConfigError, match="did not run"):
        tap(x)
    # without the recorded classes nothing is an nn.Linear; with them the classifier is found
    with pytest.raises(ConfigError, match="--layer"):
        default_layer(unflat)
    types = {}
    for node in ep.graph.nodes:
        for fqn, cls in (node.meta.get("nn_module_stack") or {}).values():
            types[fqn] = cls if isinstance(cls, str) else f"{cls.__module__}.{cls.__qualname__}"
    setattr(unflat, LAYER_TYPES_ATTR, types)
    assert default_layer(unflat) == "pool"
    assert [n for n, _ in list_layers(unflat)] == ["conv1", "block", "block.0", "block.1", "pool", "head"]
    assert dict(list_layers(unflat))["head"] == "Linear"
    for batch in (1, 5):
        xb = torch.randn(batch, 3, 8, 8)
        with LayerTap(unflat, ["block", "pool"]) as t1, LayerTap(model, ["block", "pool"]) as t2, torch.no_grad():
            (out1, f1), (out2, f2) = t1(xb), t2(xb)
        torch.testing.assert_close(out1, out2)
        for name in ("block", "pool"):
            torch.testing.assert_close(f1[name], f2[name])


def test_tap_counts_calls_of_a_reused_module():
    """A CIFAR ResNet's BasicBlock calls its one relu twice: the tap counts the calls; by default
    (the student side) the last call's output is captured; ``repeated="error"`` (what a build
    uses) refuses, naming the enclosing block, which runs once."""
    from fpkit.models.cifar_resnet import resnet8

    model = resnet8(num_classes=10).eval()
    x = torch.randn(2, 3, 32, 32)
    block = model.get_submodule("layer3.0")
    with LayerTap(model, ["layer3.0.relu", "layer3"]) as tap, torch.no_grad():
        _, feats = tap(x)
        assert tap.calls["layer3.0.relu"] == 2 and tap.calls["layer3"] == 1 and tap.calls["layer3.0"] == 1
        torch.testing.assert_close(feats["layer3.0.relu"], feats["layer3"])  # the last relu ends the block
    assert block is model.get_submodule("layer3.0")
    with LayerTap(model, ["layer3.0.relu"], repeated="error") as tap, torch.no_grad():
        with pytest.raises(ConfigError, match=r"'layer3.0.relu' runs 2 times.*e\.g\. 'layer3.0', which contains it"):
            tap(x)
    with LayerTap(model, ["layer3"], repeated="error") as tap, torch.no_grad():
        assert tap(x)[1]["layer3"].shape == (2, 64, 8, 8)
    with pytest.raises(ConfigError, match="repeated"):
        LayerTap(model, ["layer3"], repeated="first")
