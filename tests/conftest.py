"""Shared fixtures: tiny teachers and datasets written in tmp_path, in their real on-disk form."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

@pytest.fixture(autouse=True)
def _few_threads():
    """Two cores, several test processes: one torch thread per test keeps timings sane."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)

@pytest.fixture
def tiny_teacher(tmp_path: Path) -> Path:
    """A RepDistiller-style checkpoint {'model': state_dict} of a seeded random resnet8 (10 classes)."""
    from fpkit.models.cifar_resnet import resnet8
    torch.manual_seed(0)
    model = resnet8(num_classes=10)
    # non-trivial BN statistics so features differ between samples
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    path = tmp_path / "teacher.pt"
    torch.save({"model": model.state_dict(), "epoch": 1}, path)
    return path
