"""Distillation losses: fingerprint cosine, batch-relational, Hinton KD, and the combined loss.

All losses check their inputs: shapes that must agree raise :class:`MismatchError` naming both
shapes, NaN or infinite values raise :class:`NonFiniteError` naming the batch rows.
Teacher fingerprints may be stored in a lower precision (fp16): they are promoted to the
student's dtype (at least float32) and moved to its device.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from fpkit import recommended
from fpkit.errors import ConfigError, MismatchError, NonFiniteError

KINDS = ("cosine", "relational")
_REDUCTIONS = ("mean", "sum", "none")


def _is_real(x: object) -> bool:
    """A finite real number that is not a bool."""
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x)


def _check_finite(name: str, x: torch.Tensor) -> None:
    bad = ~torch.isfinite(x.detach())
    if bool(bad.any()):
        rows = bad.reshape(x.shape[0], -1).any(dim=1).nonzero().flatten().tolist() if x.ndim else []
        shown = ", ".join(map(str, rows[:10])) + (", ..." if len(rows) > 10 else "")
        raise NonFiniteError(
            f"{name} holds NaN or infinite values in batch rows [{shown}]; check the inputs, "
            "lower the learning rate or clip gradients"
        )


def _check_2d(name: str, x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor):
        raise ConfigError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 2 or x.shape[0] < 1:
        raise MismatchError(
            f"{name} must be [B, r] with B >= 1, got shape {list(x.shape)}; pass a batch of row vectors"
        )


def _check_pair(a_name: str, a: torch.Tensor, b_name: str, b: torch.Tensor, hint: str) -> None:
    """Both [B, r] tensors of one shape and finite, else the error that says which and why."""
    _check_2d(a_name, a)
    _check_2d(b_name, b)
    if a.shape != b.shape:
        raise MismatchError(f"{a_name} has shape {list(a.shape)} but {b_name} has shape {list(b.shape)}; {hint}")
    _check_finite(a_name, a)
    _check_finite(b_name, b)


def _common(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Promote both to a shared floating dtype (>= float32) on ``a``'s device."""
    dtype = torch.promote_types(torch.promote_types(a.dtype, b.dtype), torch.float32)
    return a.to(dtype), b.to(device=a.device, dtype=dtype)


def fingerprint_loss(phi_s: torch.Tensor, phi_t: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """``1 - cosine_similarity(phi_s, phi_t, dim=1)`` per sample (``F.cosine_similarity``, eps 1e-8).

    Args:
        phi_s: student fingerprints ``[B, r]``.
        phi_t: teacher fingerprints ``[B, r]`` (any float dtype; promoted to ``phi_s``'s).
        reduction: ``"mean"`` (over the batch), ``"sum"`` or ``"none"`` (``[B]``).

    Returns:
        scalar, or ``[B]`` for ``"none"``; values lie in [0, 2].

    Raises:
        ConfigError: unknown reduction.  MismatchError: shapes differ or are not ``[B, r]``.
        NonFiniteError: NaN/inf in either input.
    """
    if reduction not in _REDUCTIONS:
        raise ConfigError(f"unknown reduction {reduction!r}; use one of: {', '.join(_REDUCTIONS)}")
    _check_pair(
        "phi_s",
        phi_s,
        "phi_t",
        phi_t,
        "project the student with the fingerprint file's R and pass the teacher rows of the same batch",
    )
    s, t = _common(phi_s, phi_t)
    loss = 1.0 - F.cosine_similarity(s, t, dim=1)
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


def _cosine_matrix(x: torch.Tensor) -> torch.Tensor:
    z = F.normalize(x, dim=1)
    return z @ z.T


def relational_loss(student_feats: torch.Tensor, teacher_fp: torch.Tensor) -> torch.Tensor:
    """Match the batch's pairwise cosine-similarity matrices (the CosPress idea); needs no R.

    ``C_s[i, j] = cos(s_i, s_j)`` for the student features flattened to ``[B, -1]`` (any width:
    pooled features or phi_S), ``C_t[i, j] = cos(t_i, t_j)`` for the teacher fingerprints.
    Rows are normalised with ``F.normalize`` (eps 1e-12; an all-zero row has cosine 0).

    Returns:
        scalar: mean of ``(C_s - C_t)^2`` over the ``B * (B - 1)`` off-diagonal entries; in [0, 4].

    Raises:
        ConfigError: B < 2.  MismatchError: batch sizes differ, or ``teacher_fp`` is not 2-D.
        NonFiniteError: NaN/inf in either input.
    """
    if not isinstance(student_feats, torch.Tensor):
        raise ConfigError(f"student_feats must be a torch.Tensor, got {type(student_feats).__name__}")
    if student_feats.ndim < 2:
        raise MismatchError(
            f"student_feats must be [B, *] with at least 2 dims, got shape {list(student_feats.shape)}; pass a batch"
        )
    _check_2d("teacher_fp", teacher_fp)
    if student_feats.shape[0] != teacher_fp.shape[0]:
        raise MismatchError(
            f"student_feats has shape {list(student_feats.shape)} but teacher_fp has shape "
            f"{list(teacher_fp.shape)}; batch sizes must match (pass the teacher rows of this batch)"
        )
    B = teacher_fp.shape[0]
    if B < 2:
        raise ConfigError(f"relational_loss needs a batch of at least 2 samples, got {B}; use a larger batch")
    _check_finite("student_feats", student_feats)
    _check_finite("teacher_fp", teacher_fp)
    s, t = _common(student_feats.reshape(B, -1), teacher_fp)
    diff = _cosine_matrix(s) - _cosine_matrix(t)
    off = ~torch.eye(B, dtype=torch.bool, device=diff.device)
    return diff[off].pow(2).mean()


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, T: float = 4.0) -> torch.Tensor:
    """Hinton KD: ``KL(softmax(t/T) || softmax(s/T)) * T^2``, summed over classes, mean over batch.

    Args:
        student_logits, teacher_logits: ``[B, K]``.
        T: temperature, > 0.

    Raises:
        ConfigError: T not a positive finite number.  MismatchError: shapes differ.
        NonFiniteError: NaN/inf in either input.
    """
    if not _is_real(T) or T <= 0:
        raise ConfigError(f"temperature T must be a positive number, got {T!r}; the usual value is 4")
    _check_pair(
        "student_logits",
        student_logits,
        "teacher_logits",
        teacher_logits,
        "both must be [B, classes] for the same batch",
    )
    s, t = _common(student_logits, teacher_logits)
    log_p_s = F.log_softmax(s / T, dim=1)
    log_p_t = F.log_softmax(t / T, dim=1)
    return F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True) * (T * T)


class TopKTarget(NamedTuple):
    """Stored top-k logits of the teacher (format 1.3 ``topk``): ``values`` [B, k], ``indices`` [B, k]."""

    values: torch.Tensor
    indices: torch.Tensor


class SampledTarget(NamedTuple):
    """Classes drawn from the teacher's softmax(z / temperature) (format 1.3 ``sample``):
    ``indices`` [B, k]; ``temperature`` the draws' temperature (a number, or a tensor of them
    after collation)."""

    indices: torch.Tensor
    temperature: float | torch.Tensor


def file_kd_loss(
    student_logits: torch.Tensor, target: torch.Tensor | TopKTarget | SampledTarget, T: float = 4.0
) -> torch.Tensor:
    """KD from the teacher's stored logits (format 1.3), times T^2, mean over the batch.

    * a tensor [B, C] (``mean`` or one view of ``full``): exactly :func:`kd_loss`.
    * :class:`TopKTarget`: the teacher's distribution renormalised over its top k classes,
      p_j = softmax(values / T)_j, the other C - k classes given zero mass; the loss is
      KL(p || softmax(s / T)) over those k classes.  Biased: the left-out mass (small for a
      confident teacher, large at high T) moves to the top k.
    * :class:`SampledTarget`: the mean over the k draws of -log softmax(s / T)[i]: an unbiased
      estimate of the cross-entropy H(p_T, q_T) whose gradient is an unbiased estimate of
      :func:`kd_loss`'s (the value is kd_loss plus T^2 H(p_T), which does not depend on the
      student).  T must be the draws' temperature (recorded in the file).

    Raises:
        ConfigError: T not positive, or not the sampled targets' temperature.
        MismatchError: shapes disagree.  NonFiniteError: NaN/inf inputs.
    """
    if not isinstance(target, (TopKTarget, SampledTarget)):
        return kd_loss(student_logits, target, T)
    if not _is_real(T) or T <= 0:
        raise ConfigError(f"temperature T must be a positive number, got {T!r}; the usual value is 4")
    _check_2d("student_logits", student_logits)
    _check_finite("student_logits", student_logits)
    idx = target.indices.to(student_logits.device).long()
    if idx.ndim != 2 or idx.shape[0] != student_logits.shape[0]:
        raise MismatchError(
            f"target indices have shape {list(idx.shape)}, student_logits {list(student_logits.shape)}; "
            "both must be for the same batch ([B, k] and [B, C])"
        )
    log_q = F.log_softmax(student_logits.float() / T, dim=1).gather(1, idx)
    if isinstance(target, SampledTarget):
        drawn = torch.as_tensor(target.temperature, dtype=torch.float64).reshape(-1)
        if drawn.numel() and not torch.allclose(drawn, torch.full_like(drawn, float(T))):
            raise ConfigError(
                f"these targets were drawn at temperature {float(drawn[0])}; pass T={float(drawn[0])} "
                "(the estimate is unbiased only at the draws' temperature), or rebuild with sample:K:T"
            )
        return -log_q.mean(dim=1).mean() * (T * T)
    values = target.values.to(student_logits.device).float()
    _check_finite("target values", values)
    log_p = F.log_softmax(values / T, dim=1)
    return (log_p.exp() * (log_p - log_q)).sum(dim=1).mean() * (T * T)


@dataclass(frozen=True)
class FileKD:
    """The KD term from stored logits (format 1.3) for :class:`~fpkit.FingerprintDistiller`:
    ``weight * file_kd_loss(logits, logits_t, T)`` is added to the loss (``DistillLoss``'s
    ``kd_weight`` and ``T``).  ``T`` defaults to :data:`fpkit.recommended.KD_T`, chosen on
    validation data (docs/RESULTS.md section 5)."""

    weight: float = 1.0
    T: float = recommended.KD_T


class LinearWarmup:
    """Linear warm-up of the distillation weight lambda.

    ``weight(epoch) = final * min(1, (epoch + 1) / warmup_epochs)`` for 0-based ``epoch``, and
    ``final`` for every epoch when ``warmup_epochs == 0``.  So epoch 0 already trains with
    ``final / warmup_epochs`` and epoch ``warmup_epochs - 1`` reaches ``final`` (the source's
    rule, e.g. final 0.1 over 40 epochs).  ``epoch`` may be fractional
    (``epoch + batch / batches_per_epoch``) for a per-step ramp.
    """

    def __init__(self, final: float = recommended.LAMBDA, warmup_epochs: int = 0):
        """
        Args:
            final: lambda after the warm-up; default :data:`fpkit.recommended.LAMBDA` (30), chosen
                on validation data (docs/RESULTS.md section 5; the writeup's 0.1 gained nothing).
            warmup_epochs: epochs of the linear ramp (0: constant); :meth:`for_run` picks the
                recommended fifth of a run.

        Raises:
            ConfigError: ``final`` negative or not finite, ``warmup_epochs`` not an int >= 0.
        """
        if not _is_real(final) or final < 0:
            raise ConfigError(f"lambda must be a finite number >= 0, got {final!r}; the source uses 0.1")
        integral = isinstance(warmup_epochs, numbers.Integral) and not isinstance(warmup_epochs, bool)
        if not integral or warmup_epochs < 0:
            raise ConfigError(f"warmup_epochs must be an int >= 0, got {warmup_epochs!r}; use 0 for a constant lambda")
        self.final = float(final)
        self.warmup_epochs = int(warmup_epochs)

    @classmethod
    def for_run(cls, epochs: int, final: float = recommended.LAMBDA) -> LinearWarmup:
        """The recommended schedule for a run of ``epochs`` epochs: ``final`` (default
        :data:`fpkit.recommended.LAMBDA`) reached after :func:`fpkit.recommended.warmup_epochs`
        (a fifth of the run), the setting chosen on validation data in docs/RESULTS.md section 5.

        Raises:
            ConfigError: ``epochs`` not an int >= 1, or a bad ``final``.
        """
        integral = isinstance(epochs, numbers.Integral) and not isinstance(epochs, bool)
        if not integral or epochs < 1:
            raise ConfigError(f"epochs must be an int >= 1 (the run's length), got {epochs!r}")
        return cls(final, recommended.warmup_epochs(int(epochs)))

    def __call__(self, epoch: float) -> float:
        """Lambda at (0-based, possibly fractional) ``epoch``.

        Raises:
            ConfigError: ``epoch`` negative or not finite.
        """
        if not _is_real(epoch) or epoch < 0:
            raise ConfigError(f"epoch must be a finite number >= 0, got {epoch!r}; epochs count from 0")
        if self.warmup_epochs == 0:
            return self.final
        return self.final * min(1.0, (float(epoch) + 1.0) / self.warmup_epochs)

    def __repr__(self) -> str:
        return f"LinearWarmup(final={self.final}, warmup_epochs={self.warmup_epochs})"


class DistillLoss(nn.Module):
    """CE + sum over layers of weight_l * lambda(epoch) * term_l.

    ``term_l`` is :func:`fingerprint_loss` (``kind="cosine"``, phi_S vs phi_T) or
    :func:`relational_loss` (``kind="relational"``; phi_s may then be any ``[B, *]`` student
    features).  The returned parts dict holds floats for logging: ``"ce"``, ``"lambda"``,
    ``"term/<layer>"`` (unweighted term), ``"weighted/<layer>"`` (what it adds to the total) and
    ``"total"``; ``ce + sum(weighted/*) == total``.  With ``kd_weight`` > 0 and a ``kd_target`` of
    stored logits (format 1.3), ``kd_weight * file_kd_loss(logits, kd_target, T)`` is added too
    (parts ``"kd"`` and ``"weighted/kd"``).
    """

    def __init__(
        self,
        layer_weights: Mapping[str, float],
        kind: str = "cosine",
        lam: float | LinearWarmup = recommended.LAMBDA,
        kd_weight: float = 0.0,
        T: float = recommended.KD_T,
    ):
        """
        Args:
            layer_weights: ``{layer name: weight}``, e.g. ``{"layer3": 1.0, "layer2": 0.2}``.
            kind: ``"cosine"`` or ``"relational"``.
            lam: a constant lambda, or a :class:`LinearWarmup` schedule; default
                :data:`fpkit.recommended.LAMBDA` (30, chosen on validation data, docs/RESULTS.md
                section 5; the writeup's 0.1 is :data:`fpkit.recommended.SOURCE_LAMBDA`).
            kd_weight: weight of the KD term from stored logits (:func:`file_kd_loss`); 0: none.
            T: the KD temperature; default :data:`fpkit.recommended.KD_T` (2).

        Raises:
            ConfigError: empty mapping, a weight that is negative or not finite, unknown kind,
                bad lambda.
        """
        super().__init__()
        if not isinstance(layer_weights, Mapping) or not layer_weights:
            raise ConfigError("layer_weights must be a non-empty {layer: weight} mapping, e.g. {'layer3': 1.0}")
        for name, w in layer_weights.items():
            if not isinstance(name, str) or not name:
                raise ConfigError(f"layer names must be non-empty strings, got {name!r}")
            if not _is_real(w) or w < 0:
                raise ConfigError(f"weight of layer {name!r} must be a finite number >= 0, got {w!r}")
        if kind not in KINDS:
            raise ConfigError(f"unknown loss kind {kind!r}; use one of: {', '.join(KINDS)}")
        self.layer_weights = {name: float(w) for name, w in layer_weights.items()}
        self.kind = kind
        self.schedule = lam if isinstance(lam, LinearWarmup) else LinearWarmup(lam, 0)
        if not _is_real(kd_weight) or kd_weight < 0 or not _is_real(T) or T <= 0:
            raise ConfigError(f"kd_weight must be >= 0 and T > 0, got kd_weight={kd_weight!r}, T={T!r}")
        self.kd_weight, self.T = float(kd_weight), float(T)

    def forward(
        self,
        logits: torch.Tensor,
        labels: torch.Tensor,
        phi_s: Mapping[str, torch.Tensor],
        phi_t: Mapping[str, torch.Tensor],
        epoch: float = 0.0,
        kd_target: torch.Tensor | TopKTarget | SampledTarget | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Total loss (scalar tensor with grad) and a dict of its parts as floats.

        Args:
            logits: ``[B, K]`` student logits.  labels: ``[B]`` class indices.
            phi_s, phi_t: per layer, student and teacher tensors (``[B, r]`` for cosine).
            epoch: 0-based, possibly fractional, for the lambda schedule.
            kd_target: the batch's stored logit targets (needed when ``kd_weight`` > 0).

        Raises:
            MismatchError: a layer missing from phi_s or phi_t, or shapes that disagree.
            NonFiniteError: NaN/inf logits or fingerprints.  ConfigError: bad epoch.
        """
        lam = self.schedule(epoch)
        _check_2d("logits", logits)
        if labels.ndim != 1 or labels.shape[0] != logits.shape[0]:
            raise MismatchError(
                f"logits has shape {list(logits.shape)} but labels has shape {list(labels.shape)}; "
                "labels must be [B] class indices for the same batch"
            )
        _check_finite("logits", logits)
        ce = F.cross_entropy(logits, labels)
        total = ce
        names, terms, weighted = [], [], []
        for name, w in self.layer_weights.items():
            for side, mapping in (("phi_s", phi_s), ("phi_t", phi_t)):
                if name not in mapping:
                    raise MismatchError(
                        f"{side} has no entry for layer {name!r} (has {sorted(mapping)}); "
                        "pass a tensor for every layer in layer_weights"
                    )
            s, t = phi_s[name], phi_t[name]
            if s.shape[0] != logits.shape[0]:
                raise MismatchError(
                    f"phi_s[{name!r}] has shape {list(s.shape)} but logits has shape "
                    f"{list(logits.shape)}; both must come from the same batch"
                )
            term = fingerprint_loss(s, t) if self.kind == "cosine" else relational_loss(s, t)
            part = term * (w * lam)
            total = total + part
            names.append(name)
            terms.append(term)
            weighted.append(part)
        kd = []
        if self.kd_weight > 0:
            if kd_target is None:
                raise MismatchError("kd_weight > 0 needs kd_target= (the batch's stored logits)")
            kd = [file_kd_loss(logits, kd_target, self.T)]
            kd.append(kd[0] * self.kd_weight)
            total = total + kd[1]
        # one device sync for all logged parts
        values = torch.stack([x.detach().double() for x in [ce, total, *terms, *weighted, *kd]]).tolist()
        n = len(names)
        parts: dict[str, float] = {"ce": values[0], "lambda": lam}
        for i, name in enumerate(names):
            parts[f"term/{name}"] = values[2 + i]
            parts[f"weighted/{name}"] = values[2 + n + i]
        if kd:
            parts["kd"], parts["weighted/kd"] = values[2 + 2 * n], values[3 + 2 * n]
        parts["total"] = values[1]
        return total, parts


__all__ = [
    "KINDS",
    "fingerprint_loss",
    "relational_loss",
    "kd_loss",
    "file_kd_loss",
    "TopKTarget",
    "SampledTarget",
    "LinearWarmup",
    "FileKD",
    "DistillLoss",
]
