"""Compiled teachers: torch.export programs are tapped or refused with the fix, TorchScript is refused for tapping."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from _teacher_helpers import check_teacher, same_outputs

from fpkit.errors import ConfigError, MismatchError
from fpkit.teachers import load_teacher, weights_sha256


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory, net: torch.nn.Module) -> dict[str, Path]:
    """``net`` saved as a state_dict, a TorchScript archive, and torch.export programs with a
    dynamic and with a fixed batch dimension."""
    d = tmp_path_factory.mktemp("compiled")
    paths = {
        k: d / f
        for k, f in [("state_dict", "sd.pt"), ("script", "ts.pt"), ("dynamic", "dyn.pt2"), ("fixed", "fixed.pt2")]
    }
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
    o = BuildOptions(
        teacher=str(teacher),
        dataset="synthetic:16x10",
        output=str(tmp_path / name),
        views=2,
        batch_size=10,
        chunk_size=8,
        dtype="float32",
        device="cpu",
        **kw,
    )
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
    check_teacher(t)
    assert (t.source_kind, t.trusted_code, t.num_classes, t.default_layer) == ("torch_export", True, 10, "layer3")
    assert t.weights_sha256 == weights_sha256(net.state_dict())
    same_outputs(t.model, net)
    ref = open_fingerprints(_build(tmp_path, compiled["state_dict"], "ref.h5", arch="resnet8").path)
    got = open_fingerprints(_build(tmp_path, compiled["dynamic"], "exp.h5", trust_teacher_code=True).path)
    for table in ("sample", "class"):
        np.testing.assert_allclose(got.table(table), ref.table(table), rtol=0, atol=1e-6)
    assert got.metadata.teacher.weights_sha256 == ref.metadata.teacher.weights_sha256
    assert got.metadata.teacher.trusted_code is True
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
    r = _cli(
        "build",
        compiled["fixed"],
        "synthetic:8x10",
        "--trust-teacher-code",
        "--device",
        "cpu",
        "-q",
        "-o",
        tmp_path / "cli.h5",
    )
    assert r.exit_code == 1, r.output
    assert r.output.startswith("fpkit: error: ") and "fixed batch of 2" in r.output
    assert "Traceback" not in r.output and r.output.count("\n") == 1
    # a dynamic batch with an upper bound: torch's own check, reported the same way
    path = tmp_path / "max4.pt2"
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 2)).eval()
    ep = torch.export.export(model, (torch.randn(2, 3, 2, 2),), dynamic_shapes=({0: torch.export.Dim("batch", max=4)},))
    torch.export.save(ep, str(path))
    small = load_teacher(path, trust_code=True).model
    with pytest.raises(MismatchError, match=r"rejected an input of shape \[5, 3, 2, 2\].*Dim"):
        small(torch.randn(5, 3, 2, 2))


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit.load is deprecated, still works
def test_torchscript_teacher_is_refused_with_a_fix_and_the_fix_works(tmp_path: Path, compiled: dict[str, Path]) -> None:
    from fpkit.format import open_fingerprints

    with pytest.raises(ConfigError, match=r"TorchScript .*--arch NAME \(resnet8 fits its weights\)"):
        _build(tmp_path, compiled["script"], "ts.h5", trust_teacher_code=True)
    with pytest.raises(ConfigError, match="TorchScript"):
        _build(tmp_path, compiled["script"], "ts.h5", trust_teacher_code=True, layers=("layer2",))
    for args in (
        ["build", compiled["script"], "synthetic:8x10", "--device", "cpu", "-o", tmp_path / "c.h5"],
        ["layers", compiled["script"]],
    ):
        r = _cli(*args, "--trust-teacher-code")
        errors = [line for line in r.output.splitlines() if line.startswith("fpkit: error")]  # after notes
        assert r.exit_code == 1 and errors[0].startswith("fpkit: error: TorchScript teachers cannot be tapped")
        assert "Traceback" not in r.output and len(errors) == 1 and r.output.endswith(errors[0] + "\n")
    assert not (tmp_path / "ts.h5").exists() and not (tmp_path / "c.h5").exists()
    # the fix the message names: --arch moves the weights into a tappable model
    got = _build(tmp_path, compiled["script"], "fixed.h5", trust_teacher_code=True, arch="resnet8")
    ref = _build(tmp_path, compiled["state_dict"], "ref.h5", arch="resnet8")
    np.testing.assert_array_equal(
        open_fingerprints(got.path).table("sample"), open_fingerprints(ref.path).table("sample")
    )


def test_layers_command_lists_what_build_can_tap(compiled: dict[str, Path]) -> None:
    from fpkit.features import LayerTap

    r = _cli("layers", compiled["dynamic"], "--trust-teacher-code")
    assert r.exit_code == 0, r.output
    rows = [line.split() for line in r.stdout.splitlines()]  # the architecture line goes to stderr
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
    for args in (
        ["layers", compiled[which]],
        ["build", compiled[which], "synthetic:8x10", "--device", "cpu", "-o", tmp_path / "o.h5"],
    ):
        r = _cli(*args)
        assert r.exit_code == 1 and "--trust-teacher-code" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "o.h5").exists()
