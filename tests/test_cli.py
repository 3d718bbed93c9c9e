"""The fpkit command line: exit codes, JSON on stdout, help on every command, plots."""

from __future__ import annotations

import json
import re

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
    # one span for every rate, each with its unit: views/s = images/s x K
    assert 0 < res["compute_seconds"] <= res["seconds"]
    assert res["views_per_second"] == pytest.approx(2 * res["images_per_second"])
    assert res["images_per_second"] == pytest.approx(30 / res["compute_seconds"])


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


def test_inspect_shows_the_diagnoses(built):
    """The fixture's teacher is random-init: inspect says, from the file alone, that its top-1 is
    near chance and its class fingerprints have collapsed."""
    _, out, _ = built
    s = json.loads(CliRunner().invoke(main, ["inspect", str(out), "--json"]).stdout)
    assert any("near chance" in w for w in s["warnings"]), s["warnings"]
    assert any("have collapsed" in w for w in s["warnings"]), s["warnings"]
    text = CliRunner().invoke(main, ["inspect", str(out)]).stdout
    assert "  warning     the teacher's top-1 on the built views is" in text


def test_inspect_plot_format_follows_the_suffix(built, tmp_path):
    _, out, _ = built
    jpg = tmp_path / "x.jpg"
    r = CliRunner().invoke(main, ["inspect", str(out), "--plot", str(jpg)])
    assert r.exit_code == 0, r.output
    assert jpg.read_bytes()[:3] == b"\xff\xd8\xff"  # JPEG, not PNG bytes under a .jpg name
    svg = tmp_path / "x.svg"
    assert CliRunner().invoke(main, ["inspect", str(out), "--plot", str(svg)]).exit_code == 0
    assert b"<svg" in svg.read_bytes()[:1000]


@pytest.mark.parametrize(
    "name, message",
    [("x.foo", r"'\.foo' is not an image format.*\.png"), ("missing/x.png", r"the folder .*missing does not exist")],
)
def test_inspect_plot_bad_name_fails_before_any_output(built, tmp_path, name, message):
    _, out, _ = built
    r = CliRunner().invoke(main, ["inspect", str(out), "--plot", str(tmp_path / name)])
    assert r.exit_code == 1 and r.stdout == "", r.output  # no summary printed, then an errno
    assert re.search(message, r.stderr) and r.stderr.startswith("fpkit: error: ")


def test_inspect_plot_colours_span_the_data(built, tmp_path, monkeypatch):
    """A trained teacher's class similarities lie in 0.5-0.95: a fixed -1..1 scale makes them one
    colour, so the scale is the matrix's own range and the colour bar says so."""
    import matplotlib.axes
    import matplotlib.colorbar

    from fpkit.format import open_fingerprints
    from fpkit.plot import class_similarity

    _, out, _ = built
    seen = {}
    real_imshow, real_label = matplotlib.axes.Axes.imshow, matplotlib.colorbar.Colorbar.set_label
    monkeypatch.setattr(
        matplotlib.axes.Axes, "imshow", lambda self, *a, **k: seen.update(k) or real_imshow(self, *a, **k)
    )
    monkeypatch.setattr(
        matplotlib.colorbar.Colorbar, "set_label", lambda self, t, **k: seen.update(label=t) or real_label(self, t, **k)
    )
    assert CliRunner().invoke(main, ["inspect", str(out), "--plot", str(tmp_path / "p.png")]).exit_code == 0
    sim = class_similarity(open_fingerprints(out))
    assert seen["vmin"] == pytest.approx(sim.min()) and seen["vmax"] == pytest.approx(sim.max())
    assert seen["vmin"] > -1 and "range" in seen["label"]


# ------------------------------------------------------------------------------ issue 11 (command line)
def test_inspect_text_shows_the_normalisation(built):
    _, out, _ = built
    r = CliRunner().invoke(main, ["inspect", str(out)])
    assert r.exit_code == 0 and "normalise   mean [0.5, 0.5, 0.5], std [0.25, 0.25, 0.25]" in r.stdout, r.output


def test_inspect_shows_the_part_of_the_split(tmp_path):
    out = tmp_path / "part.h5"
    r = CliRunner().invoke(main, ["build", "--samples", "100:140", "--views", "1", "-o", str(out), "-q"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["inspect", str(out)])
    assert "40 samples (samples 100:140 of 500)" in r.stdout, r.output
    r = CliRunner().invoke(main, ["inspect", str(out), "--json"])
    assert {k: v for k, v in json.loads(r.stdout)["dataset"]["subset"].items() if k != "must_understand"} == {
        "start": 100,
        "stop": 140,
        "source_num_samples": 500,
    }


@pytest.mark.parametrize(
    "args, message",
    [
        (["--r", "0"], "--r must be a positive integer"),
        (["--normalize", "bogus"], "neither a preset"),
        (["--normalize", "0.5:0.2"], "needs 3 finite means"),  # fits no 3-channel image: found by the library
        (["--checkpoint-key", "state_dict"], "the embedded teacher has one set"),
    ],
)
def test_bad_option_values_are_usage_errors(tmp_path, args, message):
    """Exit 2 like click's own refusals (the library's refusals of --r 0 and --normalize exited 1)."""
    data = [] if "--checkpoint-key" in args else ["embedded", "synthetic:4x10"]
    r = CliRunner().invoke(main, ["build", *data, "-o", str(tmp_path / "x.h5"), "--device", "cpu", *args])
    assert r.exit_code == 2 and message in r.output, r.output
    assert not (tmp_path / "x.h5").exists()


def test_missing_files_are_reported_before_torch_is_imported(tmp_path):
    import subprocess

    from _support import PYTHON, subprocess_env

    code = (
        "import sys\nfrom fpkit.cli import main\n"
        "for args in (['build', 'missing.pt', 'cifar10'], ['build', 'embedded', 'imagefolder:nope'], "
        "['layers', 'missing.pt']):\n"
        "    try:\n        main(args)\n    except SystemExit as e:\n        assert e.code == 1, e.code\n"
        "print('torch' in sys.modules)\n"
    )
    r = subprocess.run([PYTHON, "-c", code], cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True)
    assert r.stdout.strip() == "False", r.stdout + r.stderr
    assert "teacher file missing.pt does not exist" in r.stderr and "image folder nope does not exist" in r.stderr
    assert list(tmp_path.iterdir()) == []  # no data/ folder


def test_help_names_batch_size_units_and_keeps_summaries_whole():
    top = CliRunner().invoke(main, ["--help"], terminal_width=80)
    commands = " ".join(top.output.split("Commands:")[1].split())
    assert "..." not in commands and "teacher, dataset, normalisation, layers, sizes." in commands, top.output
    r = CliRunner().invoke(main, ["build", "--help"])
    assert re.search(r"Views \(not\s+images\) per teacher forward", r.output), r.output


def test_build_without_a_dataset_names_the_fix(built, tmp_path):
    d, _, _ = built
    r = CliRunner().invoke(main, ["build", str(d / "t.pt"), "--views", "1", "-o", str(tmp_path / "x.h5")])
    assert r.exit_code == 1 and "no DATASET given" in r.output and "t.pt cifar10" in r.output, r.output
    r = CliRunner().invoke(main, ["build", "imagefolder:/x"])
    assert r.exit_code == 1 and "TEACHER is missing" in r.output, r.output
    assert not (tmp_path / "x.h5").exists()


def test_layers_names_the_architecture(tmp_path):
    """resnet8 and resnet8x4 list the same module names: `fpkit layers` says which it recognised."""
    import torch

    from fpkit.models.cifar_resnet import resnet8, resnet8x4

    for name, make in (("resnet8", resnet8), ("resnet8x4", resnet8x4)):
        torch.save(make(num_classes=10).state_dict(), tmp_path / f"{name}.pt")
        r = CliRunner().invoke(main, ["layers", str(tmp_path / f"{name}.pt")])
        assert r.exit_code == 0 and f"fpkit: teacher architecture {name} (recognised" in r.stderr, r.output
        assert "architecture" not in r.stdout


def test_checkpoint_key_and_notes(tmp_path):
    """Item 9's wiring: --checkpoint-key reaches the loader, and the loader's notes are printed."""
    import torch

    from fpkit.models.cifar_resnet import resnet8
    from fpkit.teachers import weights_sha256

    torch.manual_seed(0)
    student, teacher = resnet8(num_classes=10).state_dict(), resnet8(num_classes=10).state_dict()
    torch.save({"state_dict": {f"model.{k}": v for k, v in teacher.items()}}, tmp_path / "lit.ckpt")
    r = CliRunner().invoke(
        main, ["build", str(tmp_path / "lit.ckpt"), "synthetic:4x10", "-o", str(tmp_path / "a.h5"), "--device", "cpu"]
    )
    assert r.exit_code == 0 and "[fpkit build] note: " in r.stderr and "model." in r.stderr, r.output
    r = CliRunner().invoke(main, ["layers", str(tmp_path / "lit.ckpt")])
    assert r.exit_code == 0 and "fpkit: note: " in r.stderr, r.output
    both = {**{f"student.{k}": v for k, v in student.items()}, **{f"teacher.{k}": v for k, v in teacher.items()}}
    torch.save({"state_dict": both}, tmp_path / "kd.ckpt")
    base = ["build", str(tmp_path / "kd.ckpt"), "synthetic:4x10", "--device", "cpu", "--views", "1"]
    r = CliRunner().invoke(main, [*base, "-o", str(tmp_path / "b.h5")])
    assert r.exit_code == 1 and "--checkpoint-key" in r.output, r.output
    r = CliRunner().invoke(main, [*base, "-o", str(tmp_path / "b.h5"), "--checkpoint-key", "state_dict.teacher"])
    assert r.exit_code == 0, r.output
    from fpkit.format import open_fingerprints

    assert open_fingerprints(tmp_path / "b.h5").metadata.teacher.weights_sha256 == weights_sha256(teacher)
