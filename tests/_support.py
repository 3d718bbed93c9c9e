"""Helpers shared by test modules (imported as ``_support``; fixtures live in conftest.py)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable


def subprocess_env() -> dict:
    """Environment for `python -m fpkit ...` subprocesses: this checkout first, one thread."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
    return env


def write_tiny_teacher(path: Path) -> Path:
    """Save a RepDistiller-style checkpoint {'model': state_dict} of a seeded random resnet8 with
    10 classes and non-trivial BatchNorm statistics (so features differ between samples)."""
    import torch

    from fpkit.models.cifar_resnet import resnet8

    torch.manual_seed(0)
    model = resnet8(num_classes=10)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    torch.save({"model": model.state_dict(), "epoch": 1}, path)
    return path


SYNTHETIC_DATA = "synthetic:24x10"


def build_options(tmp_path: Path, teacher: Path, **changes):
    """BuildOptions of a small, fast CPU build of ``teacher`` over 24 synthetic images (3 views,
    float32, 12 views per forward, chunks of 8) into ``tmp_path / "fp.h5"``; ``changes`` override."""
    from fpkit.build import BuildOptions

    base = dict(
        teacher=str(teacher),
        dataset=SYNTHETIC_DATA,
        output=str(tmp_path / "fp.h5"),
        views=3,
        dtype="float32",
        chunk_size=8,
        batch_size=12,
        device="cpu",
    )
    base.update(changes)
    return BuildOptions(**base)
