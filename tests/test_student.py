"""Tests for fpkit.student.FingerprintHead, including a small learning test."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fpkit.errors import ConfigError, MismatchError
from fpkit.features import LayerTap, pool_features
from fpkit.losses import fingerprint_loss
from fpkit.student import FingerprintHead


def _R(d: int, r: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(d, r, generator=g), dim=0)


def test_matches_teacher_formula_bitwise():
    torch.manual_seed(0)
    R = _R(16, 8)
    feats = torch.randn(4, 16, 5, 5)
    head = FingerprintHead(R)
    phi = head(feats)
    teacher = F.normalize(feats.float().mean(dim=(2, 3)), dim=1) @ R  # the teacher-side formula
    assert phi.dtype == torch.float32 and phi.shape == (4, 8)
    assert torch.equal(phi, teacher)


def test_matches_numpy_float64():
    torch.manual_seed(1)
    R = _R(6, 3)
    feats = torch.randn(5, 7, 6)  # tokens [B, T, D]
    phi = FingerprintHead(R, pooling="token_mean")(feats).numpy()
    f = feats.numpy().astype(np.float64).mean(axis=1)
    f /= np.linalg.norm(f, axis=1, keepdims=True)
    np.testing.assert_allclose(phi, f @ R.numpy().astype(np.float64), rtol=1e-5, atol=1e-6)


def test_R_is_frozen_buffer_and_gets_no_grad():
    R = _R(16, 8)
    head = FingerprintHead(R, in_dim=16)
    assert head.adapter is None
    assert list(head.parameters()) == []
    assert "R" in head.state_dict() and "R" in dict(head.named_buffers())
    assert not head.R.requires_grad
    feats = torch.randn(3, 16, 4, 4, requires_grad=True)
    fingerprint_loss(head(feats), torch.randn(3, 8)).backward()
    assert head.R.grad is None
    assert feats.grad is not None
    assert torch.equal(head.R, R)  # unchanged, and a copy
    assert head.R.data_ptr() != R.data_ptr()


def test_adapter_is_trained_when_widths_differ():
    torch.manual_seed(0)
    head = FingerprintHead(_R(16, 8), in_dim=32)
    assert isinstance(head.adapter, nn.Linear)
    assert head.adapter.weight.shape == (16, 32) and head.adapter.bias is None
    assert "adapter.weight" in head.state_dict()
    phi = head(torch.randn(4, 32, 3, 3))
    assert phi.shape == (4, 8)
    fingerprint_loss(phi, torch.randn(4, 8)).backward()
    assert head.adapter.weight.grad is not None
    assert head.R.grad is None
    pooled = torch.randn(4, 32)
    expect = F.normalize(head.adapter(pooled), dim=1) @ head.R
    assert torch.allclose(head(pooled), expect)


def test_state_dict_round_trip():
    torch.manual_seed(0)
    a = FingerprintHead(_R(8, 4), in_dim=12)
    b = FingerprintHead(torch.zeros(8, 4), in_dim=12)
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 12)
    assert torch.equal(a(x), b(x))


def test_autocast_output_is_float32():
    head = FingerprintHead(_R(8, 4), in_dim=6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        phi = head(torch.randn(3, 6, 2, 2).to(torch.bfloat16))
    assert phi.dtype == torch.float32


def test_width_mismatch_names_shapes():
    head = FingerprintHead(_R(16, 8))
    with pytest.raises(MismatchError, match=r"\[2, 12\].*in_dim=12"):
        head(torch.randn(2, 12, 3, 3))


@pytest.mark.parametrize(
    "R,kwargs",
    [
        (torch.randn(8), {}),
        (torch.zeros(0, 4), {}),
        (torch.ones(4, 4, dtype=torch.int64), {}),
        (torch.full((4, 4), float("nan")), {}),
        (torch.randn(4, 4), {"in_dim": 0}),
        (torch.randn(4, 4), {"pooling": "max"}),
    ],
)
def test_bad_arguments(R, kwargs):
    with pytest.raises(ConfigError):
        FingerprintHead(R, **kwargs)


def test_pooling_misfit_raises():
    head = FingerprintHead(_R(8, 4), pooling="avg")
    with pytest.raises(ConfigError):
        head(torch.randn(2, 5, 8))


class _Student(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(10, 64), nn.Tanh(), nn.Linear(64, 24))
        self.fc = nn.Linear(24, 3)

    def forward(self, x):
        return self.fc(torch.relu(self.body(x)))


def test_learning_fingerprint_loss_falls():
    """A tiny student trained only on the fingerprint loss moves towards fixed random targets."""
    torch.manual_seed(0)
    x = torch.randn(64, 10)
    phi_t = torch.randn(64, 16)  # fixed random teacher fingerprints
    student = _Student()
    head = FingerprintHead(_R(24, 16, seed=3))
    params = list(student.parameters()) + list(head.parameters())
    velocity = [torch.zeros_like(p) for p in params]
    losses = []
    with LayerTap(student, ["body"]) as tap:
        for _ in range(300):
            _, feats = tap(x)
            loss = fingerprint_loss(head(pool_features(feats["body"])), phi_t)
            for p in params:
                p.grad = None
            loss.backward()
            with torch.no_grad():  # plain SGD with momentum 0.9 (torch.optim imports dynamo: slow)
                for p, v in zip(params, velocity):
                    if p.grad is not None:
                        v.mul_(0.9).add_(p.grad)
                        p.sub_(0.5 * v)
            losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], (losses[0], losses[-1])
