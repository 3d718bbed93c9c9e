"""The fpkit command line: exit codes, JSON on stdout, help on every command, plots."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from fpkit.cli import main


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    import torch

    from fpkit.models.cifar_resnet import resnet8

    d = tmp_path_factory.mktemp("cli")
    torch.manual_seed(0)
    torch.save({"model": resnet8(num_classes=10).state_dict()}, d / "t.pt")
    out = d / "fp.h5"
    r = CliRunner().invoke(
        main,
        [
            "build",
            str(d / "t.pt"),
            "synthetic:30x10",
            "-o",
            str(out),
            "--views",
            "2",
            "--device",
            "cpu",
            "-q",
            "--json",
        ],
    )
    assert r.exit_code == 0, r.output
    return d, out, r


def test_every_command_has_help():
    runner = CliRunner()
    top = runner.invoke(main, ["--help"])
    assert top.exit_code == 0
    for name, cmd in main.commands.items():
        assert cmd.help and len(cmd.help) > 20, name
        r = runner.invoke(main, [name, "--help"])
        assert r.exit_code == 0 and "Usage:" in r.output, name
        for p in cmd.params:
            if p.param_type_name == "option" and p.name != "help":
                assert p.help, f"{name} --{p.name} has no help"


def test_build_json_on_stdout(built):
    _, out, r = built
    res = json.loads(r.stdout)
    assert res["path"] == str(out) and res["num_samples"] == 30 and res["teacher_forwards"] == 60


def test_inspect_text_and_json(built):
    _, out, _ = built
    r = CliRunner().invoke(main, ["inspect", str(out)])
    assert r.exit_code == 0 and "resnet8" in r.stdout and "layer layer3" in r.stdout and "fidelity" in r.stdout
    j = CliRunner().invoke(main, ["inspect", str(out), "--json"])
    s = json.loads(j.stdout)  # stdout is JSON and nothing else
    assert s["dataset"]["num_samples"] == 30 and s["layers"][0]["r"] == 128
    assert s["layers"][0]["tables"]["sample"]["bytes"] == 30 * 128 * 2


def test_inspect_plot(built, tmp_path):
    _, out, _ = built
    png = tmp_path / "fp.png"
    r = CliRunner().invoke(main, ["inspect", str(out), "--plot", str(png)])
    assert r.exit_code == 0, r.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_inspect_plot_one_sample_per_class_and_exact_name(built, tmp_path):
    """With one sample per class every sample equals its class fingerprint (all cosines 1): the
    histogram still draws; the picture goes exactly to the name given, extension or not."""
    d, _, _ = built
    out = tmp_path / "one.h5"
    r = CliRunner().invoke(
        main, ["build", str(d / "t.pt"), "synthetic:10x10", "-o", str(out), "--views", "1", "--device", "cpu", "-q"]
    )
    assert r.exit_code == 0, r.output
    png = tmp_path / "picture"
    r = CliRunner().invoke(main, ["inspect", str(out), "--plot", str(png)])
    assert r.exit_code == 0, r.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"wrote {png}" in r.stderr
    assert not (tmp_path / "picture.png").exists()


def test_verify_ok_and_damaged(built, tmp_path):
    _, out, _ = built
    r = CliRunner().invoke(main, ["verify", str(out), "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["ok"] is True
    bad = tmp_path / "bad.h5"
    bad.write_bytes(out.read_bytes()[: out.stat().st_size // 2])
    r = CliRunner().invoke(main, ["verify", str(bad)])
    assert r.exit_code == 1 and "Traceback" not in r.output


def test_errors_exit_1_with_one_line(tmp_path):
    r = CliRunner().invoke(main, ["inspect", str(tmp_path / "missing.h5")])
    assert r.exit_code == 1
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("fpkit: error:") and "does not exist" in r.stderr
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    r = CliRunner().invoke(main, ["inspect", str(notes)])
    assert r.exit_code == 1 and "not an HDF5 file" in r.stderr


def test_usage_errors_exit_2():
    r = CliRunner().invoke(main, ["build", "--views", "zero"])
    assert r.exit_code == 2
    r = CliRunner().invoke(main, ["build", "--tables", "pixels"])
    assert r.exit_code == 2


def test_layers_lists_modules(built):
    d, _, _ = built
    r = CliRunner().invoke(main, ["layers", str(d / "t.pt")])
    assert r.exit_code == 0 and "* layer3" in r.stdout and "layer2" in r.stdout


def test_python_dash_m(built):
    import subprocess
    import sys

    from _support import subprocess_env

    p = subprocess.run(
        [sys.executable, "-m", "fpkit", "--version"], capture_output=True, text=True, env=subprocess_env()
    )
    assert p.returncode == 0 and "fpkit" in p.stdout


def test_layers_without_a_guessable_default(tmp_path):
    """A model with no final Linear: `fpkit layers` still lists its modules, marks none, says why."""
    import torch

    torch.save(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU()), tmp_path / "m.pt")
    r = CliRunner().invoke(main, ["layers", str(tmp_path / "m.pt"), "--trust-teacher-code"])
    assert r.exit_code == 0, r.output
    assert "  0  Conv2d" in r.stdout and "*" not in r.stdout and "no default layer" in r.stderr
