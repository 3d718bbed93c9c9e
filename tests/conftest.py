"""Shared fixtures: tiny teachers and datasets written in tmp_path, in their real on-disk form."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from _support import write_tiny_teacher


def pytest_collection_modifyitems(config, items):
    """Tests marked ``cuda`` need a GPU: skipped where torch sees none (bench/gpu_check.sh runs them)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (run bench/gpu_check.sh on a GPU machine)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _few_threads():
    """Two cores, several test processes: one torch thread per test keeps timings sane."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture
def tiny_teacher(tmp_path: Path) -> Path:
    """A RepDistiller-style checkpoint of a seeded random resnet8 (10 classes) in tmp_path."""
    return write_tiny_teacher(tmp_path / "teacher.pt")
