"""Checks shared by the teacher tests (imported as ``_teacher_helpers``)."""

from __future__ import annotations

import torch

from fpkit.teachers import Teacher, weights_sha256


def same_outputs(a: torch.nn.Module, b: torch.nn.Module, channels: int = 3) -> None:
    x = torch.randn(2, channels, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x))


def check_teacher(t: Teacher) -> None:
    assert not t.model.training
    assert all(not p.requires_grad for p in t.model.parameters())
    assert all(p.device.type == "cpu" for p in t.model.parameters())
    assert t.weights_sha256 == weights_sha256(t.model.state_dict())
    assert t.num_params == sum(p.numel() for p in t.model.parameters())


class Wrapped(torch.nn.Module):
    """A resnet8 kept under ``self.model``: its keys start with ``model.`` (arch ``_teacher_helpers:Wrapped``)."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        from fpkit.models import resnet8

        self.model = resnet8(num_classes=num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)
