"""Tests for fpkit.losses against independent numpy computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fpkit.errors import ConfigError, MismatchError, NonFiniteError
from fpkit.losses import (
    DistillLoss,
    LinearWarmup,
    fingerprint_loss,
    kd_loss,
    relational_loss,
)


def _np_cos_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.sqrt((a * a).sum(1)) * np.sqrt((b * b).sum(1)))


def _np_cos_matrix(x: np.ndarray) -> np.ndarray:
    B = x.shape[0]
    out = np.empty((B, B))
    for i in range(B):
        for j in range(B):
            out[i, j] = x[i] @ x[j] / (math.sqrt(x[i] @ x[i]) * math.sqrt(x[j] @ x[j]))
    return out


# --- fingerprint_loss ---------------------------------------------------------------------


def test_fingerprint_loss_values():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(6, 9)), rng.normal(size=(6, 9))
    per = 1.0 - _np_cos_rows(a, b)
    s, t = torch.tensor(a, dtype=torch.float32), torch.tensor(b, dtype=torch.float32)
    assert fingerprint_loss(s, t).item() == pytest.approx(per.mean(), abs=1e-6)
    assert fingerprint_loss(s, t, reduction="sum").item() == pytest.approx(per.sum(), abs=1e-5)
    np.testing.assert_allclose(fingerprint_loss(s, t, reduction="none").numpy(), per, atol=1e-6)
    assert fingerprint_loss(s, s).item() == pytest.approx(0.0, abs=1e-6)
    assert fingerprint_loss(s, -s).item() == pytest.approx(2.0, abs=1e-6)
    assert fingerprint_loss(s, 3.0 * s).item() == pytest.approx(0.0, abs=1e-6)  # scale-free


def test_fingerprint_loss_accepts_fp16_teacher():
    torch.manual_seed(0)
    s, t = torch.randn(4, 8), torch.randn(4, 8)
    out = fingerprint_loss(s, t.half())
    assert out.dtype == torch.float32
    assert out.item() == pytest.approx(fingerprint_loss(s, t.half().float()).item(), abs=0)


def test_fingerprint_loss_gradcheck_float64():
    torch.manual_seed(0)
    s = torch.randn(5, 7, dtype=torch.float64, requires_grad=True)
    t = torch.randn(5, 7, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda x: fingerprint_loss(x, t), (s,))
    assert torch.autograd.gradcheck(lambda x: fingerprint_loss(x, t, reduction="none"), (s,))


def test_fingerprint_loss_gradient_matches_formula():
    # d/ds (1 - s.t/(|s||t|)) = -(t/(|s||t|) - (s.t) s/(|s|^3 |t|)), divided by B for the mean
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
    s = torch.tensor(a, requires_grad=True)
    fingerprint_loss(s, torch.tensor(b)).backward()
    ns, nt = np.linalg.norm(a, axis=1, keepdims=True), np.linalg.norm(b, axis=1, keepdims=True)
    dot = (a * b).sum(1, keepdims=True)
    grad = -(b / (ns * nt) - dot * a / (ns**3 * nt)) / 3
    np.testing.assert_allclose(s.grad.numpy(), grad, rtol=1e-10, atol=1e-12)


def test_fingerprint_loss_shape_errors():
    with pytest.raises(MismatchError) as err:
        fingerprint_loss(torch.randn(4, 8), torch.randn(4, 16))
    assert "[4, 8]" in str(err.value) and "[4, 16]" in str(err.value)
    with pytest.raises(MismatchError):
        fingerprint_loss(torch.randn(8), torch.randn(8))
    with pytest.raises(MismatchError):
        fingerprint_loss(torch.randn(0, 8), torch.randn(0, 8))
    with pytest.raises(ConfigError):
        fingerprint_loss(torch.randn(2, 3), torch.randn(2, 3), reduction="max")


def test_fingerprint_loss_non_finite_names_rows():
    s = torch.randn(6, 4)
    s[2, 1] = float("nan")
    s[5, 0] = float("inf")
    with pytest.raises(NonFiniteError, match=r"phi_s.*\[2, 5\]"):
        fingerprint_loss(s, torch.randn(6, 4))
    t = torch.randn(6, 4)
    t[0, 0] = float("-inf")
    with pytest.raises(NonFiniteError, match=r"phi_t.*\[0\]"):
        fingerprint_loss(torch.randn(6, 4), t)


@settings(max_examples=40, deadline=None)
@given(
    arrays(np.float64, (5, 6), elements=st.floats(-10, 10)),
    arrays(np.float64, (5, 6), elements=st.floats(-10, 10)),
)
def test_fingerprint_loss_range_property(a, b):
    out = fingerprint_loss(torch.tensor(a), torch.tensor(b), reduction="none")
    assert torch.all(out >= -1e-12) and torch.all(out <= 2 + 1e-12)


# --- relational_loss ----------------------------------------------------------------------


def test_relational_loss_matches_numpy():
    rng = np.random.default_rng(2)
    feats = rng.normal(size=(5, 3, 2, 2))  # any width: flattened to [5, 12]
    fp = rng.normal(size=(5, 7))
    cs, ct = _np_cos_matrix(feats.reshape(5, -1)), _np_cos_matrix(fp)
    off = ~np.eye(5, dtype=bool)
    expect = ((cs - ct) ** 2)[off].mean()
    got = relational_loss(torch.tensor(feats, dtype=torch.float32), torch.tensor(fp, dtype=torch.float32))
    assert got.item() == pytest.approx(expect, rel=1e-5, abs=1e-7)
    got64 = relational_loss(torch.tensor(feats), torch.tensor(fp))
    assert got64.item() == pytest.approx(expect, rel=1e-12, abs=1e-14)


def test_relational_loss_invariances_and_grad():
    torch.manual_seed(0)
    x = torch.randn(6, 10)
    assert relational_loss(x, x).item() == pytest.approx(0.0, abs=1e-6)
    scaled = x * torch.rand(6, 1).add(0.5)  # per-row scaling keeps cosines
    assert relational_loss(scaled, x).item() == pytest.approx(0.0, abs=1e-6)
    s = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    t = torch.randn(4, 3, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda z: relational_loss(z, t), (s,))


def test_relational_loss_errors():
    with pytest.raises(ConfigError, match="at least 2"):
        relational_loss(torch.randn(1, 4), torch.randn(1, 8))
    with pytest.raises(MismatchError) as err:
        relational_loss(torch.randn(3, 4), torch.randn(4, 8))
    assert "[3, 4]" in str(err.value) and "[4, 8]" in str(err.value)
    with pytest.raises(MismatchError):
        relational_loss(torch.randn(3, 4), torch.randn(3, 2, 2))
    bad = torch.randn(3, 4)
    bad[1, 1] = float("nan")
    with pytest.raises(NonFiniteError, match=r"\[1\]"):
        relational_loss(bad, torch.randn(3, 8))


# --- kd_loss ------------------------------------------------------------------------------


def _np_log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


@pytest.mark.parametrize("T", [1.0, 4.0, 0.5])
def test_kd_loss_matches_manual_kl(T):
    rng = np.random.default_rng(3)
    s, t = rng.normal(size=(8, 10)) * 3, rng.normal(size=(8, 10)) * 3
    log_ps, log_pt = _np_log_softmax(s / T), _np_log_softmax(t / T)
    expect = (np.exp(log_pt) * (log_pt - log_ps)).sum() / 8 * T * T
    got = kd_loss(torch.tensor(s, dtype=torch.float32), torch.tensor(t, dtype=torch.float32), T=T)
    assert got.item() == pytest.approx(expect, rel=1e-5)
    assert kd_loss(torch.tensor(t), torch.tensor(t), T=T).item() == pytest.approx(0.0, abs=1e-12)


def test_kd_loss_errors():
    with pytest.raises(ConfigError):
        kd_loss(torch.randn(2, 3), torch.randn(2, 3), T=0)
    with pytest.raises(MismatchError, match=r"\[2, 3\].*\[2, 4\]"):
        kd_loss(torch.randn(2, 3), torch.randn(2, 4))
    with pytest.raises(NonFiniteError):
        kd_loss(torch.full((2, 3), float("nan")), torch.randn(2, 3))


# --- LinearWarmup -------------------------------------------------------------------------


def test_linear_warmup_values():
    w = LinearWarmup(0.1, 40)
    assert w(0) == pytest.approx(0.1 / 40)
    assert w(0.5) == pytest.approx(0.1 * 1.5 / 40)
    assert w(19) == pytest.approx(0.05)
    assert w(38) == pytest.approx(0.1 * 39 / 40)
    assert w(39) == pytest.approx(0.1)
    assert w(40) == pytest.approx(0.1)
    assert w(199) == pytest.approx(0.1)
    const = LinearWarmup(0.3, 0)
    assert [const(e) for e in (0, 1, 7.5, 500)] == [0.3] * 4
    assert LinearWarmup(1.0, 1)(0) == 1.0


@pytest.mark.parametrize("final,warmup", [(-0.1, 5), (float("nan"), 5), (0.1, -1), (0.1, 2.5)])
def test_linear_warmup_bad_arguments(final, warmup):
    with pytest.raises(ConfigError):
        LinearWarmup(final, warmup)


def test_linear_warmup_bad_epoch():
    with pytest.raises(ConfigError):
        LinearWarmup(0.1, 4)(-1)


# --- DistillLoss --------------------------------------------------------------------------


def _batch(B=6, K=5, r=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, K, generator=g, requires_grad=True)
    labels = torch.randint(0, K, (B,), generator=g)
    phi_s = {
        "layer3": torch.randn(B, r, generator=g, requires_grad=True),
        "layer2": torch.randn(B, r, generator=g, requires_grad=True),
    }
    phi_t = {"layer3": torch.randn(B, r, generator=g), "layer2": torch.randn(B, r, generator=g).half()}
    return logits, labels, phi_s, phi_t


def test_distill_loss_parts_sum_to_total():
    logits, labels, phi_s, phi_t = _batch()
    loss = DistillLoss({"layer3": 1.0, "layer2": 0.2}, lam=LinearWarmup(0.1, 40))
    total, parts = loss(logits, labels, phi_s, phi_t, epoch=9)
    lam = 0.1 * 10 / 40
    ce = F.cross_entropy(logits, labels).item()
    t3 = fingerprint_loss(phi_s["layer3"], phi_t["layer3"]).item()
    t2 = fingerprint_loss(phi_s["layer2"], phi_t["layer2"]).item()
    assert parts["lambda"] == pytest.approx(lam)
    assert parts["ce"] == pytest.approx(ce, rel=1e-6)
    assert parts["term/layer3"] == pytest.approx(t3, rel=1e-6)
    assert parts["term/layer2"] == pytest.approx(t2, rel=1e-6)
    assert parts["weighted/layer3"] == pytest.approx(1.0 * lam * t3, rel=1e-6)
    assert parts["weighted/layer2"] == pytest.approx(0.2 * lam * t2, rel=1e-6)
    assert total.item() == pytest.approx(ce + lam * (t3 + 0.2 * t2), rel=1e-6)
    assert parts["total"] == pytest.approx(parts["ce"] + parts["weighted/layer3"] + parts["weighted/layer2"], rel=1e-6)
    assert all(isinstance(v, float) for v in parts.values())
    total.backward()
    assert logits.grad is not None and phi_s["layer3"].grad is not None


def test_distill_loss_constant_lambda_and_relational():
    logits, labels, phi_s, phi_t = _batch()
    total, parts = DistillLoss({"layer3": 1.0}, kind="relational", lam=0.5)(
        logits, labels, {"layer3": torch.randn(6, 4, 3, 3)}, phi_t, epoch=123.0
    )
    assert parts["lambda"] == 0.5
    assert "term/layer2" not in parts
    assert total.item() == pytest.approx(parts["ce"] + 0.5 * parts["term/layer3"], rel=1e-6)


def test_distill_loss_zero_lambda_is_ce():
    logits, labels, phi_s, phi_t = _batch()
    total, _ = DistillLoss({"layer3": 1.0}, lam=0.0)(logits, labels, phi_s, phi_t)
    assert total.item() == pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-7)


def test_distill_loss_input_errors():
    logits, labels, phi_s, phi_t = _batch()
    loss = DistillLoss({"layer3": 1.0, "layer1": 0.5})
    with pytest.raises(MismatchError, match="layer1"):
        loss(logits, labels, phi_s, phi_t)
    loss = DistillLoss({"layer3": 1.0})
    with pytest.raises(MismatchError, match=r"\[6, 8\].*\[6, 4\]"):
        loss(logits, labels, phi_s, {"layer3": torch.randn(6, 4)})
    with pytest.raises(MismatchError):
        loss(logits, labels[:3], phi_s, phi_t)
    bad = logits.detach().clone()
    bad[4, 0] = float("inf")
    with pytest.raises(NonFiniteError, match=r"logits.*\[4\]"):
        loss(bad, labels, phi_s, phi_t)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"layer_weights": {}},
        {"layer_weights": {"layer3": -1.0}},
        {"layer_weights": {"layer3": 1.0}, "kind": "mse"},
        {"layer_weights": {"layer3": 1.0}, "lam": -0.1},
    ],
)
def test_distill_loss_bad_config(kwargs):
    with pytest.raises(ConfigError):
        DistillLoss(**kwargs)


def test_defaults_are_the_validation_selected_values():
    from fpkit import recommended

    assert (recommended.LAMBDA, recommended.WARMUP_FRACTION, recommended.KD_T) == (30.0, 0.2, 2.0)
    assert DistillLoss({"layer3": 1.0}).schedule.final == 30.0 and DistillLoss({"layer3": 1.0}).T == 2.0
    assert LinearWarmup()(0) == 30.0  # constant by default
    ramp = LinearWarmup.for_run(15)  # the protocol's 15 epochs: 3 of warm-up, as experiments/train.py scales it
    assert ramp.warmup_epochs == 3 and ramp(0) == pytest.approx(10.0) and ramp(2) == 30.0
    assert LinearWarmup.for_run(200, final=0.1).warmup_epochs == 40  # the writeup's 40 of 200 epochs
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ConfigError, match="epochs"):
            LinearWarmup.for_run(bad)
