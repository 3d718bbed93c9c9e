"""Safe teacher loading: formats, architecture resolution, refusals, and the weights digest."""

from __future__ import annotations

import hashlib
import os
import pickle
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from fpkit.errors import (
    ConfigError,
    FormatError,
    FpkitFileNotFoundError,
    MismatchError,
    UntrustedCodeError,
)
from fpkit.models import resnet8, resnet20
from fpkit.teachers import Teacher, load_embedded_teacher, load_teacher, resolve_arch, weights_sha256


@pytest.fixture(scope="module")
def net() -> torch.nn.Module:
    torch.manual_seed(0)
    model = resnet8(num_classes=10)
    # non-trivial BN statistics so buffers matter for the digest
    model.train()
    with torch.no_grad():
        model(torch.randn(8, 3, 32, 32))
    return model.eval()


def _same_outputs(a: torch.nn.Module, b: torch.nn.Module, channels: int = 3) -> None:
    x = torch.randn(2, channels, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x))


def _check_teacher(t: Teacher) -> None:
    assert not t.model.training
    assert all(not p.requires_grad for p in t.model.parameters())
    assert all(p.device.type == "cpu" for p in t.model.parameters())
    assert t.weights_sha256 == weights_sha256(t.model.state_dict())
    assert t.num_params == sum(p.numel() for p in t.model.parameters())


# ------------------------------------------------------------------------- safe formats


def test_plain_state_dict(tmp_path: Path, net: torch.nn.Module) -> None:
    path = tmp_path / "t.pt"
    torch.save(net.state_dict(), path)
    t = load_teacher(path, arch="resnet8")
    _check_teacher(t)
    assert (t.arch, t.num_classes, t.source_kind, t.trusted_code) == ("resnet8", 10, "state_dict", False)
    assert t.default_layer == "layer3"
    assert t.weights_sha256 == weights_sha256(net.state_dict())
    _same_outputs(t.model, net)


def test_repdistiller_checkpoint_with_module_prefix_inferred_arch(tmp_path: Path, net: torch.nn.Module) -> None:
    path = tmp_path / "ckpt_epoch_240.pth"
    sd = {f"module.{k}": v for k, v in net.state_dict().items()}
    torch.save({"model": sd, "epoch": 240, "accuracy": 12.5}, path)
    t = load_teacher(path)  # arch inferred, num_classes from fc
    assert (t.arch, t.num_classes) == ("resnet8", 10)
    assert t.weights_sha256 == weights_sha256(net.state_dict())


def test_legacy_non_zip_format(tmp_path: Path, net: torch.nn.Module) -> None:
    path = tmp_path / "legacy.pt"
    torch.save(net.state_dict(), path, _use_new_zipfile_serialization=False)
    t = load_teacher(path)
    assert (t.arch, t.source_kind) == ("resnet8", "state_dict")
    assert t.weights_sha256 == weights_sha256(net.state_dict())


@pytest.mark.parametrize("key", ["state_dict", "model_state_dict", "net"])
def test_other_checkpoint_keys(tmp_path: Path, net: torch.nn.Module, key: str) -> None:
    path = tmp_path / "t.pt"
    torch.save({key: net.state_dict(), "optimizer": {"lr": 0.1}}, path)
    assert load_teacher(path).arch == "resnet8"


def test_checkpoint_arch_entry_used(tmp_path: Path) -> None:
    model = resnet20(num_classes=10)
    sd = model.state_dict()
    path = tmp_path / "t.pt"
    torch.save({"model": sd, "arch": "resnet20"}, path)
    assert load_teacher(path).arch == "resnet20"


def test_checkpoint_arch_callable_not_imported(tmp_path: Path, net: torch.nn.Module) -> None:
    """A file must not choose code to import: a 'pkg:callable' arch entry is ignored."""
    path = tmp_path / "t.pt"
    torch.save({"model": net.state_dict(), "arch": "os:system"}, path)
    assert load_teacher(path).arch == "resnet8"


def test_safetensors(tmp_path: Path, net: torch.nn.Module) -> None:
    safetensors_torch = pytest.importorskip("safetensors.torch")
    path = tmp_path / "t.safetensors"
    safetensors_torch.save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    t = load_teacher(path)
    assert (t.arch, t.source_kind) == ("resnet8", "safetensors")
    assert t.weights_sha256 == weights_sha256(net.state_dict())
    _same_outputs(t.model, net)


def test_torchvision_arch(tmp_path: Path) -> None:
    tv = pytest.importorskip("torchvision")
    model = tv.models.resnet18(num_classes=10)
    path = tmp_path / "r18.pt"
    torch.save(model.state_dict(), path)
    t = load_teacher(path, arch="torchvision:resnet18")
    assert (t.arch, t.num_classes, t.default_layer) == ("torchvision:resnet18", 10, None)
    with pytest.raises(ConfigError, match="cannot tell the architecture"):
        load_teacher(path)
    assert load_teacher(path, arch="resnet18").arch == "torchvision:resnet18"


def test_callable_arch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = tmp_path / "mypkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "nets.py").write_text(
        textwrap.dedent(
            """
            import torch

            def build(num_classes):
                return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, num_classes))
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    from mypkg.nets import build  # type: ignore[import-not-found]

    model = build(num_classes=4)
    path = tmp_path / "t.pt"
    torch.save(model.state_dict(), path)
    t = load_teacher(path, arch="mypkg.nets:build", num_classes=4)
    assert (t.arch, t.num_classes) == ("mypkg.nets:build", 4)
    with pytest.raises(ConfigError, match="cannot import"):
        resolve_arch("nopkg_xyz.nets:build", 4)
    with pytest.raises(ConfigError, match="no attribute"):
        resolve_arch("mypkg.nets:missing", 4)
    sys.modules.pop("mypkg.nets", None)
    sys.modules.pop("mypkg", None)


def test_resolve_arch_unknown() -> None:
    with pytest.raises(ConfigError, match="unknown architecture"):
        resolve_arch("no_such_net", 10)


# ------------------------------------------------------------------------- errors


def test_wrong_arch(tmp_path: Path, net: torch.nn.Module) -> None:
    path = tmp_path / "t.pt"
    torch.save(net.state_dict(), path)
    with pytest.raises(MismatchError, match="unexpected|missing") as info:
        load_teacher(path, arch="resnet20")
    assert "--arch" in str(info.value)
    with pytest.raises(MismatchError, match="shape"):
        load_teacher(path, arch="resnet8", num_classes=100)
    with pytest.raises(MismatchError, match="shape"):
        load_teacher(path, arch="resnet8", in_channels=1)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FpkitFileNotFoundError):
        load_teacher(tmp_path / "nope.pt")


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="folder"):
        load_teacher(tmp_path)


@pytest.mark.parametrize(
    "content", [b"hello, this is a text file\n", bytes(range(256)) * 4, b"", b"PK\x03\x04junk"]
)
def test_garbage_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "t.pt"
    path.write_bytes(content)
    with pytest.raises(FormatError, match="not a PyTorch checkpoint or safetensors file"):
        load_teacher(path)


def test_random_zip_is_format_error(tmp_path: Path) -> None:
    import zipfile

    path = tmp_path / "t.pt"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("hello.txt", "hi")
    with pytest.raises(FormatError, match="not a PyTorch checkpoint"):
        load_teacher(path)


def test_bad_safetensors(tmp_path: Path) -> None:
    path = tmp_path / "t.safetensors"
    path.write_bytes(b"not safetensors at all")
    with pytest.raises(FormatError):
        load_teacher(path)


def test_dict_without_state_dict(tmp_path: Path) -> None:
    path = tmp_path / "t.pt"
    torch.save({"epoch": 3, "lr": 0.1}, path)
    with pytest.raises(FormatError, match="no state_dict"):
        load_teacher(path)


def test_unknown_arch_needs_flag(tmp_path: Path) -> None:
    path = tmp_path / "t.pt"
    torch.save(torch.nn.Linear(5, 3).state_dict(), path)
    with pytest.raises(ConfigError, match="--arch"):
        load_teacher(path)


# ------------------------------------------------------------------------- code-executing files


def test_pickled_module_refused_then_trusted(tmp_path: Path, net: torch.nn.Module) -> None:
    path = tmp_path / "whole.pt"
    torch.save(net, path)
    with pytest.raises(UntrustedCodeError) as info:
        load_teacher(path)
    msg = str(info.value)
    assert "--trust-teacher-code" in msg and "state_dict()" in msg and "\n" not in msg
    t = load_teacher(path, trust_code=True)
    _check_teacher(t)
    assert (t.source_kind, t.trusted_code, t.arch, t.num_classes) == ("pickled_module", True, "resnet8", 10)
    assert t.weights_sha256 == weights_sha256(net.state_dict())
    # with --arch, the weights move into a freshly built model
    t2 = load_teacher(path, trust_code=True, arch="resnet8")
    assert t2.weights_sha256 == t.weights_sha256 and t2.trusted_code


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_torchscript_refused_then_trusted(tmp_path: Path, net: torch.nn.Module) -> None:
    path = tmp_path / "ts.pt"
    torch.jit.save(torch.jit.trace(net, torch.randn(1, 3, 32, 32)), str(path))
    with pytest.raises(UntrustedCodeError, match="TorchScript"):
        load_teacher(path)
    t = load_teacher(path, trust_code=True)
    _check_teacher(t)
    # TorchScript cannot be tapped (tests below), so it has no default layer
    assert (t.source_kind, t.trusted_code, t.default_layer) == ("torchscript", True, None)
    assert t.weights_sha256 == weights_sha256(net.state_dict())
    _same_outputs(t.model, net)


def test_torch_export_refused(tmp_path: Path) -> None:
    model = torch.nn.Linear(4, 2).eval()
    path = tmp_path / "m.pt2"
    torch.export.save(torch.export.export(model, (torch.zeros(1, 4),)), str(path))
    with pytest.raises(UntrustedCodeError, match="torch.export"):
        load_teacher(path)
    renamed = tmp_path / "m.pt"
    os.replace(path, renamed)  # detected from the archive's entries, not the suffix
    with pytest.raises(UntrustedCodeError, match="torch.export"):
        load_teacher(renamed)
    t = load_teacher(renamed, trust_code=True)
    assert (t.source_kind, t.trusted_code, t.num_classes) == ("torch_export", True, None)
    assert t.weights_sha256 == weights_sha256(model.state_dict())


# ------------------------------------------------------------------------- compiled teachers: tapping


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory, net: torch.nn.Module) -> dict[str, Path]:
    """``net`` saved as a state_dict, a TorchScript archive, and torch.export programs with a
    dynamic and with a fixed batch dimension."""
    d = tmp_path_factory.mktemp("compiled")
    paths = {k: d / f for k, f in [("state_dict", "sd.pt"), ("script", "ts.pt"), ("dynamic", "dyn.pt2"),
                                   ("fixed", "fixed.pt2")]}
    torch.save(net.state_dict(), paths["state_dict"])
    with pytest.warns(FutureWarning):  # torch.jit is deprecated, still loadable
        torch.jit.save(torch.jit.script(net), str(paths["script"]))
    x = torch.randn(2, 3, 32, 32)
    batch = torch.export.Dim("batch")
    torch.export.save(torch.export.export(net, (x,), dynamic_shapes=({0: batch},)), str(paths["dynamic"]))
    torch.export.save(torch.export.export(net, (x,)), str(paths["fixed"]))
    return paths


def _build(tmp_path: Path, teacher: Path, name: str, **kw):
    from fpkit.build import BuildOptions, build

    # batch_size 10 with 2 views: batches of 10 and 6 views, after the 1-view probe
    o = BuildOptions(teacher=str(teacher), dataset="synthetic:16x10", output=str(tmp_path / name), views=2,
                     batch_size=10, chunk_size=8, dtype="float32", device="cpu", **kw)
    return build(o, quiet=True)


def _cli(*args: object):
    from click.testing import CliRunner

    from fpkit.cli import main

    return CliRunner().invoke(main, [str(a) for a in args])


def test_torch_export_dynamic_batch_builds_like_its_state_dict(
    tmp_path: Path, compiled: dict[str, Path], net: torch.nn.Module
) -> None:
    from fpkit.format import open_fingerprints

    t = load_teacher(compiled["dynamic"], trust_code=True)
    _check_teacher(t)
    assert (t.source_kind, t.trusted_code, t.num_classes, t.default_layer) == ("torch_export", True, 10, "layer3")
    assert t.weights_sha256 == weights_sha256(net.state_dict())
    _same_outputs(t.model, net)
    ref = open_fingerprints(_build(tmp_path, compiled["state_dict"], "ref.h5", arch="resnet8").path)
    got = open_fingerprints(_build(tmp_path, compiled["dynamic"], "exp.h5", trust_teacher_code=True).path)
    for table in ("sample", "class"):
        np.testing.assert_allclose(got.table(table), ref.table(table), rtol=0, atol=1e-6)
    assert got.metadata["teacher"]["weights_sha256"] == ref.metadata["teacher"]["weights_sha256"]
    assert got.metadata["teacher"]["trusted_code"] is True
    assert got.layers[0].name == "layer3"


def test_torch_export_fixed_batch_is_a_clear_error(tmp_path: Path, compiled: dict[str, Path]) -> None:
    t = load_teacher(compiled["fixed"], trust_code=True)
    with torch.no_grad():
        assert t.model(torch.randn(2, 3, 32, 32)).shape == (2, 10)  # the batch it was exported for runs
        with pytest.raises(MismatchError, match=r"fixed batch of 2 .*torch\.export\.Dim"):
            t.model(torch.randn(3, 3, 32, 32))
        with pytest.raises(MismatchError, match=r"exported for inputs of shape \[2, 3, 32, 32\]"):
            t.model(torch.randn(2, 3, 28, 28))
    with pytest.raises(MismatchError, match="fixed batch of 2"):
        _build(tmp_path, compiled["fixed"], "fixed.h5", trust_teacher_code=True)
    assert not (tmp_path / "fixed.h5").exists()
    # the other fix the message names: --arch moves the weights into a freshly built model
    moved = load_teacher(compiled["fixed"], trust_code=True, arch="resnet8")
    assert (moved.default_layer, moved.weights_sha256) == ("layer3", t.weights_sha256)
    r = _cli("build", compiled["fixed"], "synthetic:8x10", "--trust-teacher-code", "--device", "cpu", "-q",
             "-o", tmp_path / "cli.h5")
    assert r.exit_code == 1, r.output
    assert r.output.startswith("fpkit: error: ") and "fixed batch of 2" in r.output
    assert "Traceback" not in r.output and r.output.count("\n") == 1
    # a dynamic batch with an upper bound: torch's own check, reported the same way
    path = tmp_path / "max4.pt2"
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 2)).eval()
    ep = torch.export.export(model, (torch.randn(2, 3, 2, 2),),
                             dynamic_shapes=({0: torch.export.Dim("batch", max=4)},))
    torch.export.save(ep, str(path))
    small = load_teacher(path, trust_code=True).model
    with pytest.raises(MismatchError, match=r"rejected an input of shape \[5, 3, 2, 2\].*Dim"):
        small(torch.randn(5, 3, 2, 2))


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit.load is deprecated, still works
def test_torchscript_teacher_is_refused_with_a_fix_and_the_fix_works(
    tmp_path: Path, compiled: dict[str, Path]
) -> None:
    from fpkit.format import open_fingerprints

    with pytest.raises(ConfigError, match=r"TorchScript .*--arch NAME \(resnet8 fits its weights\)"):
        _build(tmp_path, compiled["script"], "ts.h5", trust_teacher_code=True)
    with pytest.raises(ConfigError, match="TorchScript"):
        _build(tmp_path, compiled["script"], "ts.h5", trust_teacher_code=True, layers=("layer2",))
    for args in (["build", compiled["script"], "synthetic:8x10", "--device", "cpu", "-o", tmp_path / "c.h5"],
                 ["layers", compiled["script"]]):
        r = _cli(*args, "--trust-teacher-code")
        assert r.exit_code == 1 and r.output.startswith("fpkit: error: TorchScript teachers cannot be tapped")
        assert "Traceback" not in r.output and r.output.count("\n") == 1
    assert not (tmp_path / "ts.h5").exists() and not (tmp_path / "c.h5").exists()
    # the fix the message names: --arch moves the weights into a tappable model
    got = _build(tmp_path, compiled["script"], "fixed.h5", trust_teacher_code=True, arch="resnet8")
    ref = _build(tmp_path, compiled["state_dict"], "ref.h5", arch="resnet8")
    np.testing.assert_array_equal(open_fingerprints(got.path).table("sample"),
                                  open_fingerprints(ref.path).table("sample"))


def test_layers_command_lists_what_build_can_tap(compiled: dict[str, Path]) -> None:
    from fpkit.features import LayerTap

    r = _cli("layers", compiled["dynamic"], "--trust-teacher-code")
    assert r.exit_code == 0, r.output
    rows = [line.split() for line in r.output.splitlines()]
    names = [row[-2] for row in rows]
    assert [row[1] for row in rows if row[0] == "*"] == ["layer3"]
    assert "_guards_fn" not in r.output and "InterpreterModule" not in r.output
    assert ["layer3", "Sequential"] == rows[names.index("layer3")][-2:] and rows[names.index("fc")][-1] == "Linear"
    assert names == [n for n, _ in load_teacher(compiled["state_dict"], arch="resnet8").model.named_modules() if n]
    # every listed name runs and is captured by the tap build uses
    model = load_teacher(compiled["dynamic"], trust_code=True).model
    with LayerTap(model, names) as tap, torch.no_grad():
        _, feats = tap(torch.randn(3, 3, 32, 32))
    assert set(feats) == set(names)


def test_torch_export_without_module_hierarchy_is_refused_for_tapping(
    tmp_path: Path, compiled: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    def unflatten(ep):  # noqa: ANN001, ANN202 - stands in for a program unflatten cannot handle
        raise RuntimeError("cannot unflatten this one")

    monkeypatch.setattr(torch.export, "unflatten", unflatten)
    t = load_teacher(compiled["fixed"], trust_code=True)
    assert t.default_layer is None and t.weights_sha256 == load_teacher(compiled["state_dict"]).weights_sha256
    with torch.no_grad():  # the flat program still runs, and a failed guard is a clear error
        assert t.model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
        with pytest.raises(MismatchError, match=r"rejected an input of shape \[3, 3, 32, 32\].*Dim"):
            t.model(torch.randn(3, 3, 32, 32))
    with pytest.raises(ConfigError, match="module hierarchy could not be restored.*--arch"):
        _build(tmp_path, compiled["fixed"], "flat.h5", trust_teacher_code=True)
    r = _cli("layers", compiled["fixed"], "--trust-teacher-code")
    assert r.exit_code == 1 and "could not be restored" in r.output and r.output.count("\n") == 1


@pytest.mark.parametrize("which", ["script", "dynamic"])
def test_compiled_teachers_need_trust(tmp_path: Path, compiled: dict[str, Path], which: str) -> None:
    for args in (["layers", compiled[which]],
                 ["build", compiled[which], "synthetic:8x10", "--device", "cpu", "-o", tmp_path / "o.h5"]):
        r = _cli(*args)
        assert r.exit_code == 1 and "--trust-teacher-code" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "o.h5").exists()


class _Payload:
    """Unpickling this creates a marker file: stands in for any code a checkpoint could run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return (open, (str(self.marker), "w"))


def test_malicious_torch_save_never_executed(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"model": _Payload(marker)}, path)
    with pytest.raises(UntrustedCodeError):
        load_teacher(path)
    assert not marker.exists()
    with pytest.raises(UntrustedCodeError):
        load_teacher(path, arch="resnet8", num_classes=10)
    assert not marker.exists()
    # the payload is real: a trusted load does run it
    with pytest.raises(FormatError):
        load_teacher(path, trust_code=True)
    assert marker.exists()


def test_malicious_raw_pickle_never_executed(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(_Payload(marker), protocol=2))
    with pytest.raises(UntrustedCodeError):
        load_teacher(path)
    assert not marker.exists()


# ------------------------------------------------------------------------- digest


def _independent_sha(sd: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for key in sorted(sd):
        t = sd[key].detach().cpu().contiguous()
        h.update(key.encode() + b"\x00")
        h.update({torch.float32: b"float32", torch.int64: b"int64", torch.float16: b"float16"}[t.dtype])
        h.update(b"\x00" + ",".join(map(str, t.shape)).encode() + b"\x00")
        h.update(t.numpy().astype(t.numpy().dtype.newbyteorder("<")).tobytes(order="C"))
    return h.hexdigest()


def test_weights_sha256_definition(net: torch.nn.Module) -> None:
    sd = net.state_dict()
    assert weights_sha256(sd) == _independent_sha(sd)
    small = {"b": torch.tensor(3, dtype=torch.int64), "a": torch.arange(6, dtype=torch.float16).view(2, 3)}
    expected = hashlib.sha256(
        b"a\x00float16\x002,3\x00" + small["a"].numpy().astype("<f2").tobytes()
        + b"b\x00int64\x00\x00" + (3).to_bytes(8, "little")
    ).hexdigest()
    assert weights_sha256(small) == expected


def test_weights_sha256_sees_buffers_and_transposes(net: torch.nn.Module) -> None:
    sd = dict(net.state_dict())
    base = weights_sha256(sd)
    changed = dict(sd, **{"bn1.num_batches_tracked": sd["bn1.num_batches_tracked"] + 1})
    assert weights_sha256(changed) != base
    w = sd["fc.weight"]
    assert weights_sha256(dict(sd, **{"fc.weight": w.t().contiguous().t()})) == base  # layout-free
    assert weights_sha256(dict(sd, **{"fc.weight": w.reshape(-1)})) != base  # shape counts


def test_weights_sha256_round_trip(tmp_path: Path, net: torch.nn.Module) -> None:
    path = tmp_path / "t.pt"
    torch.save(net.state_dict(), path)
    first = load_teacher(path)
    again = tmp_path / "again.pt"
    torch.save({"model": first.model.state_dict()}, again)
    assert load_teacher(again).weights_sha256 == first.weights_sha256 == weights_sha256(net.state_dict())


# ------------------------------------------------------------------------- embedded teacher


def test_embedded_teacher() -> None:
    from importlib import resources

    if not (resources.files("fpkit") / "data" / "embedded_teacher.pt").is_file():
        pytest.skip("embedded teacher not generated yet (python examples/make_embedded.py)")
    t = load_embedded_teacher()
    _check_teacher(t)
    assert (t.arch, t.num_classes, t.source_kind, t.trusted_code, t.default_layer) == (
        "resnet8", 10, "embedded", False, "layer3"
    )
