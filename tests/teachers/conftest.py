"""Fixtures shared by the teacher tests: a seeded resnet8 with non-trivial BatchNorm statistics."""

from __future__ import annotations

import pytest
import torch

from fpkit.models import resnet8


@pytest.fixture(scope="module")
def net() -> torch.nn.Module:
    torch.manual_seed(0)
    model = resnet8(num_classes=10)
    # non-trivial BN statistics so buffers matter for the digest
    model.train()
    with torch.no_grad():
        model(torch.randn(8, 3, 32, 32))
    return model.eval()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "heavy: a test of a large model (a torchvision ViT-B/16, ~5 s); deselect with -m 'not heavy'"
    )
