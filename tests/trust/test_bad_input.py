"""Bad input through the CLI: exit code 1 (2 for click usage errors), one line on stderr that
names the cause and the fix, no traceback; and teachers that would run code are refused before
any of their code runs."""

from __future__ import annotations

import errno
import os
import pickle
from pathlib import Path

import _evil_model
import h5py
import pytest
import torch
from click.testing import CliRunner

from fpkit.cli import main

QUICK = ["--device", "cpu", "--views", "1", "--batch-size", "8", "-q"]


def run(*args) -> click.testing.Result:  # noqa: F821
    import signal

    old = signal.getsignal(signal.SIGTERM)  # `fpkit build` installs a SIGTERM handler
    try:
        return CliRunner().invoke(main, [str(a) for a in args], prog_name="fpkit")
    finally:
        signal.signal(signal.SIGTERM, old)


def expect_error(result, *needles: str, code: int = 1) -> str:
    """The one-line error of a failed command; checks exit code, no traceback, the needles."""
    err = result.stderr
    assert result.exit_code == code, (result.exit_code, result.output)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    lines = [ln for ln in err.splitlines() if ln.strip()]
    if code == 1:
        assert len(lines) == 1 and lines[0].startswith("fpkit: "), err
    else:  # click usage error: "Usage: ..." then "Error: ..."
        assert lines[-1].startswith("Error: "), err
    for n in needles:
        assert n in err, (n, err)
    return err


def no_leftovers(folder: Path, name: str = "out.h5") -> None:
    left = sorted(p.name for p in folder.iterdir() if p.name == name or p.name.startswith(f".{name}.writing-"))
    assert left == [], left


# ------------------------------------------------------------------------------------ teachers
def test_missing_teacher(tmp_path):
    expect_error(
        run("build", tmp_path / "nope.pt", "synthetic:8x10", "-o", tmp_path / "out.h5", *QUICK),
        "does not exist",
        "check the path",
    )
    no_leftovers(tmp_path)


def test_teacher_is_a_folder(tmp_path):
    expect_error(
        run("build", tmp_path, "synthetic:8x10", "-o", tmp_path / "out.h5", *QUICK),
        "is a folder",
        "checkpoint file inside it",
    )


def test_teacher_not_a_checkpoint(tmp_path):
    bad = tmp_path / "notes.pt"
    bad.write_text("hello, not a checkpoint\n")
    expect_error(
        run("build", bad, "synthetic:8x10", "-o", tmp_path / "out.h5", *QUICK), "not a PyTorch checkpoint", "torch.save"
    )


def test_weights_do_not_fit_arch(tiny_teacher, tmp_path):
    expect_error(
        run("build", tiny_teacher, "synthetic:8x10", "--arch", "resnet20", "-o", tmp_path / "out.h5", *QUICK),
        "does not fit architecture resnet20",
        "--arch",
    )
    no_leftovers(tmp_path)


def test_unknown_arch(tiny_teacher, tmp_path):
    expect_error(
        run("build", tiny_teacher, "synthetic:8x10", "--arch", "resnet9000", "-o", tmp_path / "out.h5", *QUICK),
        "unknown architecture",
        "--arch",
    )


def test_unknown_layer(tiny_teacher, tmp_path):
    expect_error(
        run("build", tiny_teacher, "synthetic:8x10", "--layer", "layer9", "-o", tmp_path / "out.h5", *QUICK),
        "layer9",
        "fpkit layers",
    )
    no_leftovers(tmp_path)
    assert not (tmp_path / ".out.h5.partial").exists()


@pytest.mark.parametrize("r", ["0", "-5"])
def test_bad_r(tiny_teacher, tmp_path, r):
    expect_error(
        run("build", tiny_teacher, "synthetic:8x10", "--r", r, "-o", tmp_path / "out.h5", *QUICK),
        "--r must be a positive integer",
        code=2,  # a bad option value is a usage error (issue 11)
    )


@pytest.mark.parametrize(
    "args",
    [["--views", "0"], ["--dtype", "float64"], ["--tables", "nothing"], ["--split", "val"], ["--no-such-option"]],
)
def test_usage_errors_exit_2(tiny_teacher, tmp_path, args):
    expect_error(run("build", tiny_teacher, "synthetic:8x10", "-o", tmp_path / "out.h5", *args), code=2)


# ------------------------------------------------------------------------------------ datasets
def test_unknown_dataset(tiny_teacher, tmp_path):
    expect_error(
        run("build", tiny_teacher, "imagenet22k", "-o", tmp_path / "out.h5", *QUICK), "unknown dataset", "cifar10"
    )


def test_offline_cifar100_names_the_folder(tiny_teacher, tmp_path):
    err = expect_error(
        run("build", tiny_teacher, "cifar100", "--root", tmp_path, "--no-download", "-o", tmp_path / "out.h5", *QUICK),
        "cifar-100-python",
        "--root",
    )
    assert str(tmp_path) in err


def test_teacher_dataset_class_mismatch(tiny_teacher, tmp_path):
    expect_error(
        run("build", tiny_teacher, "synthetic:8x3", "-o", tmp_path / "out.h5", *QUICK), "10 outputs", "3 classes"
    )


# ------------------------------------------------------------------------------------ output
def test_output_folder_missing(tiny_teacher, tmp_path):
    expect_error(
        run("build", tiny_teacher, "synthetic:8x10", "-o", tmp_path / "no" / "out.h5", *QUICK), "does not exist", "-o"
    )


def test_output_folder_not_writable_simulated(tiny_teacher, tmp_path, monkeypatch):
    """Root ignores permissions, so os.access is made to say 'not writable' for this folder."""
    folder = tmp_path / "ro"
    folder.mkdir()
    real = os.access

    def access(path, mode, *a, **kw):
        if mode & os.W_OK and Path(path).resolve() == folder.resolve():
            return False
        return real(path, mode, *a, **kw)

    monkeypatch.setattr(os, "access", access)
    expect_error(run("build", tiny_teacher, "synthetic:8x10", "-o", folder / "out.h5", *QUICK), "not writable", "-o")
    assert list(folder.iterdir()) == []


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores folder permissions")
def test_output_folder_not_writable_real(tiny_teacher, tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        expect_error(run("build", tiny_teacher, "synthetic:8x10", "-o", folder / "out.h5", *QUICK), "not writable")
    finally:
        folder.chmod(0o755)


def test_output_exists(tiny_teacher, tmp_path):
    out = tmp_path / "out.h5"
    out.write_bytes(b"precious")
    expect_error(run("build", tiny_teacher, "synthetic:8x10", "-o", out, *QUICK), "exists", "--force")
    assert out.read_bytes() == b"precious"


def test_disk_full(tiny_teacher, tmp_path, monkeypatch):
    import fpkit.format.codecs as codecs

    def full(*a, **kw):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(codecs, "write_chunk", full)
    out = tmp_path / "out.h5"
    expect_error(run("build", tiny_teacher, "synthetic:8x10", "-o", out, *QUICK), "disk full", "free space")
    no_leftovers(tmp_path)  # neither the output nor the writer's temporary file
    monkeypatch.undo()
    # the computed chunks were kept: once there is space again, --resume only writes the file
    res = run("build", tiny_teacher, "synthetic:8x10", "-o", out, "--resume", *QUICK)
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.h5", "teacher.pt"]


# ------------------------------------------------------------------------------------ inspect/verify/audit
@pytest.mark.parametrize("command", ["inspect", "verify", "audit"])
def test_read_commands_on_bad_files(tmp_path, command):
    text = tmp_path / "notes.h5"
    text.write_text("not hdf5\n")
    expect_error(run(command, text), "not an HDF5 file", "fpkit build")
    expect_error(run(command, tmp_path), "is a folder", ".h5 file inside it")
    expect_error(run(command, tmp_path / "missing.h5"), "does not exist", "check the path")
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["x"] = [1, 2, 3]
    expect_error(run(command, other), "not an fpkit fingerprint file")
    empty = tmp_path / "empty.h5"
    empty.write_bytes(b"")
    expect_error(run(command, empty), "not an HDF5 file")


# ------------------------------------------------------------------------------------ code in teachers
@pytest.fixture
def marker(tmp_path, monkeypatch) -> Path:
    m = tmp_path / "MARKER-code-ran"
    monkeypatch.setenv("FPKIT_TEST_MARKER", str(m))
    return m


def test_pickled_module_is_refused_before_its_code_runs(tmp_path, marker):
    path = tmp_path / "whole_model.pt"
    torch.save(_evil_model.EvilNet(), path)
    for command in (["build", path, "synthetic:8x10", "-o", tmp_path / "out.h5", *QUICK], ["layers", path]):
        expect_error(run(*command), "--trust-teacher-code", "state_dict")
        assert not marker.exists(), "code from the checkpoint ran"
    no_leftovers(tmp_path)
    # the file really runs code when trusted: the refusal above is what kept the marker away
    torch.load(path, weights_only=False)
    assert marker.read_text() == "EvilNet.__setstate__ ran"


@pytest.mark.parametrize("how", ["torch.save", "pickle.dump"])
def test_malicious_reduce_is_refused(tmp_path, how):
    marker = tmp_path / "PWNED"
    path = tmp_path / "teacher.pt"
    payload = {"model": _evil_model.Payload(str(marker))}
    if how == "torch.save":
        torch.save(payload, path)
    else:
        with open(path, "wb") as fh:
            pickle.dump(payload, fh, protocol=2)
    expect_error(run("build", path, "synthetic:8x10", "-o", tmp_path / "out.h5", *QUICK), "--trust-teacher-code")
    assert not marker.exists(), "the pickle's payload ran"
    # sanity: the same file does run its payload when loaded without restriction
    if how == "torch.save":
        torch.load(path, weights_only=False)
    else:
        with open(path, "rb") as fh:
            pickle.load(fh)
    assert marker.read_text() == "pwned"


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit.trace is deprecated, still loadable
def test_torchscript_is_refused(tmp_path, marker):
    from fpkit.models.cifar_resnet import resnet8

    path = tmp_path / "scripted.pt"
    torch.jit.trace(resnet8(num_classes=10).eval(), torch.zeros(1, 3, 32, 32)).save(str(path))
    expect_error(
        run("build", path, "synthetic:8x10", "-o", tmp_path / "out.h5", *QUICK), "TorchScript", "--trust-teacher-code"
    )
    no_leftovers(tmp_path)


def test_trusted_code_is_recorded(tmp_path, marker):
    from fpkit.format import open_fingerprints

    path = tmp_path / "whole_model.pt"
    torch.save(_evil_model.EvilNet(), path)
    out = tmp_path / "out.h5"
    res = run("build", path, "synthetic:8x10", "--trust-teacher-code", "--layer", "pool", "-o", out, *QUICK)
    assert res.exit_code == 0, res.output
    assert marker.exists()  # trusted: its code ran, as the user allowed
    assert open_fingerprints(out).metadata.teacher.trusted_code is True


@pytest.mark.parametrize("device, message", [("gpu", "not a device"), ("mps", "cpu or cuda"), ("cuda:7", "CUDA")])
def test_bad_device_is_one_line(tiny_teacher, tmp_path, device, message):
    expect_error(
        run("build", tiny_teacher, "synthetic:8x10", "-o", tmp_path / "out.h5", "--device", device, "-q"), message
    )
    assert list(tmp_path.iterdir()) == [tiny_teacher]


@pytest.mark.parametrize("option", ["--batch-size", "--chunk-size"])
def test_zero_sizes_name_their_option(tiny_teacher, tmp_path, option):
    expect_error(
        run("build", tiny_teacher, "synthetic:8x10", "-o", tmp_path / "out.h5", *QUICK, option, "0"),
        f"{option} must be an integer >= 1",
        code=2,
    )


def test_unreadable_image_in_a_folder_names_the_file(tiny_teacher, tmp_path):
    from PIL import Image

    for i in range(10):  # the tiny teacher has 10 classes
        (tmp_path / "imgs" / f"c{i}").mkdir(parents=True)
        Image.new("RGB", (32, 32)).save(tmp_path / "imgs" / f"c{i}" / "0.png")
    (tmp_path / "imgs" / "c7" / "1.png").write_bytes(b"not an image at all")
    err = expect_error(
        run("build", tiny_teacher, f"imagefolder:{tmp_path / 'imgs'}", "-o", tmp_path / "out.h5", *QUICK),
        "1.png is not a readable image",
        "remove or replace",
    )
    assert "BufferedReader" not in err
