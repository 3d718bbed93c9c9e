"""examples/train_student.py on the embedded demo file, for a tiny budget (in-process, CPU)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from fpkit.build import BuildOptions, build
from fpkit.teachers import load_teacher

ROOT = Path(__file__).resolve().parents[2]


def _load_script():
    spec = importlib.util.spec_from_file_location(
        "fpkit_examples_train_student", ROOT / "examples" / "train_student.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


script = _load_script()


@pytest.fixture(scope="module")
def embedded_file(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("student") / "embedded.h5"
    build(BuildOptions(output=str(out), views=2, device="cpu"), quiet=True)  # the embedded teacher and images
    return out


def test_trains_a_student_from_the_embedded_file(embedded_file: Path, tmp_path: Path, capsys):
    out = tmp_path / "student.pt"
    argv = [
        str(embedded_file),
        "--arch",
        "resnet8",
        "--epochs",
        "2",
        "--batch-size",
        "100",
        "--num-workers",
        "0",
        "--device",
        "cpu",
        "--out",
        str(out),
    ]
    assert script.main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    epochs = [line for line in lines if line.startswith("epoch ")]
    assert len(epochs) == 2 and "test top-1" in epochs[-1] and lines[-1] == f"wrote {out}"
    parts = dict(zip(epochs[-1].split()[2:12:2], map(float, epochs[-1].split()[3:13:2])))
    assert parts["lambda"] == 30.0 and parts["weighted/layer3"] >= 0.1 * parts["total"]  # the term matters
    ckpt = torch.load(out, weights_only=True)
    assert ckpt["arch"] == "resnet8" and ckpt["epoch"] == 2 and 0.0 <= ckpt["test_top1"] <= 100.0
    assert load_teacher(out).arch == "resnet8"  # a student can teach in turn


def test_a_file_of_other_data_is_refused(embedded_file: Path, tmp_path: Path, capsys):
    argv = [
        str(embedded_file),
        "--data",
        "synthetic:500x10",
        "--split",
        "train",
        "--epochs",
        "1",
        "--num-workers",
        "0",
        "--device",
        "cpu",
        "--out",
        str(tmp_path / "x.pt"),
    ]
    assert script.main(argv) == 1
    assert "MismatchError" in capsys.readouterr().err
    assert not (tmp_path / "x.pt").exists()
