"""The student side as one unit: tap the student, project its features, and compute the loss.

:class:`FingerprintDistiller` owns what a student's training loop otherwise wires by hand: a
:class:`~fpkit.features.LayerTap` on the student, one :class:`~fpkit.student.FingerprintHead` per
distilled layer (the file's frozen R; widths probed once with a forward pass) and a
:class:`~fpkit.losses.DistillLoss`.  Inside an epoch loop::

    distiller = fpkit.FingerprintDistiller(student, data, lam=10.0)
    opt = torch.optim.SGD(distiller.parameters(), lr=0.1, momentum=0.9)   # student + adapters
    for epoch in range(epochs):
        for images, labels, phi_t in loader:
            loss, parts = distiller(images, labels, phi_t, epoch=epoch)
            opt.zero_grad(); loss.backward(); opt.step()

The epoch is a required keyword argument, so a lambda warm-up cannot silently stay at its first
value; an epoch that never advances over two passes through the data while lambda is still
warming up is reported with a warning.
"""

from __future__ import annotations

import math
import random
import warnings
from collections.abc import Mapping
from typing import Any, NamedTuple

import torch
from torch import nn

from .errors import ConfigError, MismatchError, RedactedError
from .features import LayerTap, pool_features, resolve_pooling
from .fingerprint_dataset import FingerprintDataset
from .losses import KINDS, DistillLoss, FileKD, LinearWarmup, SampledTarget, TopKTarget
from .student import FingerprintHead

_STUCK_PASSES = 2
"""Passes over the data with one unchanged epoch (during the warm-up) before the warning."""


class DistillOutput(NamedTuple):
    """Everything one :meth:`FingerprintDistiller.compute` call produced.

    ``loss``: scalar tensor with grad (CE + the weighted fingerprint terms).  ``parts``: floats
    for logging (``ce``, ``lambda``, ``term/<layer>``, ``weighted/<layer>``, ``total``; see
    :class:`~fpkit.losses.DistillLoss`).  ``logits``: the student's output ``[B, K]``, with grad.
    ``phi_s``: per file layer, the student side of the term (``[B, r]`` fingerprints for
    ``kind="cosine"``, pooled features ``[B, d]`` for ``kind="relational"``).
    """

    loss: torch.Tensor
    parts: dict[str, float]
    logits: torch.Tensor
    phi_s: dict[str, torch.Tensor]


def student_pooling(file_pooling: str, ndim: int) -> str:
    """How to pool a student output of rank ``ndim`` for a layer the file pooled with ``file_pooling``.

    The file's pooling when it fits the rank (the usual case: a student of the teacher's family);
    otherwise the ``"auto"`` pooling of the rank (e.g. ``token_mean`` for a ``[B, T, D]`` student
    output distilled from a CNN teacher's ``avg``-pooled layer).

    Raises:
        ConfigError: ``ndim`` is not 2, 3 or 4.
    """
    try:
        return resolve_pooling(ndim, file_pooling)
    except ConfigError:
        return resolve_pooling(ndim, "auto")


def _module_device(module: nn.Module) -> torch.device:
    for tensor in [*module.parameters(), *module.buffers()]:
        return tensor.device
    return torch.device("cpu")


def _example_batch(fingerprints: FingerprintDataset) -> torch.Tensor:
    """Item 0's image as a batch of one, drawn without touching the global RNG streams."""
    state = random.getstate()
    try:
        with torch.random.fork_rng(devices=[]):
            image = fingerprints[0][0]
    finally:
        random.setstate(state)
    if not isinstance(image, torch.Tensor):
        raise ConfigError(
            f"the dataset yields {type(image).__name__} images, not tensors, so the student's layer widths "
            "cannot be probed; give FingerprintDataset a transform ending in ToTensor() (and Normalize), "
            "or pass example_input=<a batch of student inputs>"
        )
    return image.unsqueeze(0)


def _check_weights(fingerprints: FingerprintDataset, layer_weights: Mapping[str, float] | None) -> dict[str, float]:
    if layer_weights is None:
        return {name: 1.0 for name in fingerprints.layers}
    if not isinstance(layer_weights, Mapping) or not layer_weights:
        raise ConfigError("layer_weights must be a non-empty {layer: weight} mapping (or None for every layer)")
    for name in layer_weights:
        if name not in fingerprints.layers:
            where = "the file" if name not in fingerprints.fp.layer_names else "the dataset's targets"
            raise ConfigError(
                f"layer {name!r} is not in {where}: the dataset yields {fingerprints.layers} of "
                f"{fingerprints.fp.layer_names}; use one of those, or FingerprintDataset(..., layer='all') "
                "for every layer of the file"
            )
    return dict(layer_weights)


class FingerprintDistiller(nn.Module):
    """CE + lambda(epoch) * sum_l w_l * (1 - cos(phi_S_l, phi_T_l)) for a student, in one call.

    The student is a submodule: :meth:`parameters` yields the student's parameters and then those
    of the heads' adapters (present only where a student layer is narrower or wider than the
    teacher's d), so ``torch.optim.SGD(distiller.parameters(), ...)`` trains both; ``.to(device)``,
    ``.train()`` and ``.eval()`` reach the student.  Evaluate with ``student(x)`` as usual: the tap
    captures only inside the distiller's own calls.  :meth:`close` removes the tap's hooks.

    Attributes:
        layers: the file layers distilled (the keys of the weights), in order.
        student_layers: ``{file layer: student module name}`` that is tapped for it.
        poolings: ``{file layer: pooling}`` applied to the student's output (``kind="cosine"``;
            see :func:`student_pooling`).
        kind: ``"cosine"`` or ``"relational"``.  table: the dataset's table kind.
        loss: the :class:`~fpkit.losses.DistillLoss`.
    """

    def __init__(
        self,
        student: nn.Module,
        fingerprints: FingerprintDataset,
        *,
        lam: float | LinearWarmup,
        layer_weights: Mapping[str, float] | None = None,
        kind: str = "cosine",
        student_layers: Mapping[str, str] | None = None,
        example_input: torch.Tensor | None = None,
        kd: FileKD | None = None,
    ):
        """
        Args:
            student: the model being trained, returning logits ``[B, K]``; put it on its device
                first (the heads follow it there).
            fingerprints: the :class:`~fpkit.FingerprintDataset` the loader reads: its layers,
                its table kind, the file's R and poolings.
            lam: the final weight lambda of the fingerprint term, constant or a
                :class:`~fpkit.LinearWarmup`; required, because a warm-up depends on the run's
                length: ``fpkit.LinearWarmup.for_run(epochs)`` is the validation-selected setting
                (lambda 30 over the first fifth of the run, :mod:`fpkit.recommended`,
                docs/RESULTS.md section 5; the writeup's 0.1 gained nothing measurable).
            layer_weights: ``{file layer: weight}``; None means weight 1.0 for every layer the
                dataset yields (``layer="all"`` yields every layer of the file).
            kind: ``"cosine"`` (phi_S = head(features) against the file's rows; needs R) or
                ``"relational"`` (:func:`fpkit.relational_loss` of pooled features; needs no R).
            student_layers: ``{file layer: student module}`` where the student's names differ
                from the teacher's; by default the student module of the same name is tapped.
            example_input: a batch of student inputs for probing the tapped widths (cosine only;
                run once, in eval mode, without gradients); default: item 0 of ``fingerprints``,
                drawn without moving the global RNG.
            kd: a :class:`~fpkit.losses.FileKD` adds the KD term from the file's stored logits
                (format 1.3; pass each batch's ``logits_t=``); None: no KD term.

        Raises:
            ConfigError: not a FingerprintDataset, a layer the dataset does not yield, unknown
                kind, bad lambda or weights, a student module that does not exist or cannot be
                tapped, images that are not tensors and no ``example_input``.
            RedactedError: ``kind="cosine"`` on a file built with ``--redact`` (no R).
        """
        super().__init__()
        if not isinstance(fingerprints, FingerprintDataset):
            raise ConfigError(
                f"fingerprints must be a fpkit.FingerprintDataset, got {type(fingerprints).__name__}; wrap the "
                "plain dataset: FingerprintDataset(path, dataset, transform=...)"
            )
        if kind not in KINDS:
            raise ConfigError(f"unknown loss kind {kind!r}; use one of: {', '.join(KINDS)}")
        weights = _check_weights(fingerprints, layer_weights)
        if kd is not None and not isinstance(kd, FileKD):
            raise ConfigError(f"kd must be a fpkit.losses.FileKD(weight, T), got {type(kd).__name__}")
        kd_args = {} if kd is None else {"kd_weight": kd.weight, "T": kd.T}
        self.loss = DistillLoss(weights, kind=kind, lam=lam, **kd_args)
        self.kd = kd
        self.layers: tuple[str, ...] = tuple(weights)
        self.kind = kind
        self.table = fingerprints.table_kind
        self.student = student
        mapping = dict(student_layers or {})
        for name in mapping:
            if name not in weights:
                raise ConfigError(f"student_layers names {name!r}, which is not distilled (layers: {list(weights)})")
        self.student_layers = {name: mapping.get(name, name) for name in self.layers}
        self.file_poolings = {name: fingerprints.fp.layer(name).pooling for name in self.layers}
        device = _module_device(student)
        self.heads = nn.ModuleList()
        self.poolings: dict[str, str] = {}
        if kind == "cosine":  # everything that may refuse comes before the hooks are registered
            projections = {name: self._projection(fingerprints, name) for name in self.layers}
            x = _example_batch(fingerprints) if example_input is None else example_input
        self.tap = LayerTap(student, [self.student_layers[name] for name in self.layers])
        if kind == "cosine":
            try:
                probed = self._probe(x.to(device))
            except BaseException:
                self.tap.close()
                raise
            for name, (pooling, width) in probed.items():
                self.poolings[name] = pooling
                self.heads.append(FingerprintHead(projections[name], in_dim=width, pooling=pooling).to(device))
        self._index_tables = self.table == "index"
        if self._index_tables:
            for i, name in enumerate(self.layers):
                self.register_buffer(f"_table_{i}", fingerprints.target_table(device, name), persistent=False)
        self._samples_per_pass = len(fingerprints)
        self._last_epoch: float | None = None
        self._samples_at_epoch = 0
        self._warned = False

    # ------------------------------------------------------------------ construction helpers
    @staticmethod
    def _projection(fingerprints: FingerprintDataset, name: str) -> torch.Tensor:
        try:
            return fingerprints.projection(name)
        except RedactedError as e:
            raise RedactedError(
                f"{fingerprints.fp.path} was built redacted: layer {name} has no projection R, so the cosine "
                "loss cannot project the student; use kind='relational' (fpkit.relational_loss, which needs no R)"
            ) from e

    def _probe(self, x: torch.Tensor) -> dict[str, tuple[str, int]]:
        """``{file layer: (pooling, pooled width)}`` from one eval-mode forward without gradients."""
        modes = [(m, m.training) for m in self.student.modules()]
        self.student.eval()
        try:
            with torch.no_grad():
                _, feats = self.tap(x)
        finally:
            for m, training in modes:
                m.training = training
        out = {}
        for name in self.layers:
            f = feats[self.student_layers[name]]
            pooling = student_pooling(self.file_poolings[name], f.ndim)
            out[name] = (pooling, int(pool_features(f, pooling).shape[1]))
        return out

    # ------------------------------------------------------------------ training
    def head(self, layer: str) -> FingerprintHead:
        """The :class:`FingerprintHead` of a file layer (``kind="cosine"``).

        Raises:
            ConfigError: a layer that is not distilled, or ``kind="relational"`` (no heads).
        """
        if self.kind != "cosine" or layer not in self.layers:
            raise ConfigError(f"no head for {layer!r}: heads exist for kind='cosine' and layers {list(self.layers)}")
        return self.heads[self.layers.index(layer)]

    def targets(self, phi_t: torch.Tensor | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The teacher side ``{file layer: [B, r]}`` of a batch's third element.

        ``phi_t`` is what the loader yields: one tensor (a dataset of one layer), a
        ``{layer: tensor}`` dict (``layer="all"``), or, with ``table="index"``, sample indices,
        which are looked up in the file's sample table kept on the student's device.

        Raises:
            MismatchError: one tensor for several distilled layers, or a layer missing.
        """
        if isinstance(phi_t, Mapping):
            missing = [name for name in self.layers if name not in phi_t]
            if missing:
                raise MismatchError(
                    f"phi_t has no entry for layer(s) {missing} (has {sorted(phi_t)}); build the dataset with "
                    "layer='all' or distil only the layers it yields"
                )
            targets = {name: phi_t[name] for name in self.layers}
        elif len(self.layers) == 1:
            targets = {self.layers[0]: phi_t}
        else:
            raise MismatchError(
                f"phi_t is one tensor but the distiller distils layers {list(self.layers)}; pass the "
                "{layer: tensor} dict that FingerprintDataset(..., layer='all') yields"
            )
        if self._index_tables:
            for i, name in enumerate(self.layers):
                table = getattr(self, f"_table_{i}")
                targets[name] = table[torch.as_tensor(targets[name]).to(table.device, torch.long)]
        return targets

    def compute(
        self,
        images: Any,
        labels: torch.Tensor,
        phi_t: torch.Tensor | Mapping[str, torch.Tensor],
        *,
        epoch: float,
        logits_t: torch.Tensor | TopKTarget | SampledTarget | None = None,
    ) -> DistillOutput:
        """Forward the student once and return the loss, its parts, the logits and phi_S.

        Args:
            images: the student's input batch (on the student's device).
            labels: ``[B]`` class indices, on the logits' device.
            phi_t: the batch's teacher targets as the loader yields them (see :meth:`targets`).
            epoch: 0-based epoch of the lambda schedule, possibly fractional
                (``epoch + batch / batches_per_epoch``); required, so it cannot be forgotten.
            logits_t: the batch's stored logit targets (``FingerprintDataset(targets=("fingerprint",
                "logits"))``), for the KD term of ``kd=``.

        Raises:
            ConfigError: a bad epoch, a tapped layer that did not run, or ``logits_t`` without ``kd=``.
            MismatchError: targets that do not fit the batch or the layers.
            NonFiniteError: NaN/inf logits or fingerprints.
        """
        targets = self.targets(phi_t)
        if logits_t is not None and self.kd is None:
            raise ConfigError("logits_t= was given but the distiller has no KD term; pass kd=fpkit.losses.FileKD(...)")
        lam = self.loss.schedule(epoch)  # ConfigError for a bad epoch, before any work
        logits, feats = self.tap(images)
        phi_s = {}
        for i, name in enumerate(self.layers):
            f = feats[self.student_layers[name]]
            if self.kind == "cosine":
                phi_s[name] = self.heads[i](f)
            else:
                phi_s[name] = pool_features(f, student_pooling(self.file_poolings[name], f.ndim))
        loss, parts = self.loss(logits, labels, phi_s, targets, epoch=epoch, kd_target=logits_t)
        self._watch_epoch(epoch, lam, int(logits.shape[0]))
        return DistillOutput(loss, parts, logits, phi_s)

    def forward(
        self,
        images: Any,
        labels: torch.Tensor,
        phi_t: torch.Tensor | Mapping[str, torch.Tensor],
        *,
        epoch: float,
        logits_t: torch.Tensor | TopKTarget | SampledTarget | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """``(loss, parts)`` of a batch: :meth:`compute` without the logits and phi_S."""
        out = self.compute(images, labels, phi_t, epoch=epoch, logits_t=logits_t)
        return out.loss, out.parts

    def _watch_epoch(self, epoch: float, lam: float, batch: int) -> None:
        """Warn once when lambda is still warming up after two passes over the data at one epoch."""
        if epoch != self._last_epoch:
            self._last_epoch, self._samples_at_epoch = epoch, 0
        self._samples_at_epoch += batch
        final = self.loss.schedule.final
        stuck = self._samples_at_epoch > _STUCK_PASSES * self._samples_per_pass
        if stuck and not self._warned and lam < final and not math.isclose(lam, final):
            self._warned = True
            warnings.warn(
                f"FingerprintDistiller has been called with epoch={epoch} for {self._samples_at_epoch} samples "
                f"({_STUCK_PASSES}+ passes over the {self._samples_per_pass} of the data), so lambda stays at "
                f"{lam:.4g} instead of warming up to {final:.4g}: pass the epoch of your loop "
                "(distiller(images, labels, phi_t, epoch=epoch))",
                stacklevel=2,
            )

    # ------------------------------------------------------------------ lifetime
    def close(self) -> None:
        """Remove the tap's hooks from the student (idempotent); the distiller cannot be called after."""
        self.tap.close()

    def __enter__(self) -> FingerprintDistiller:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def extra_repr(self) -> str:
        taps = ", ".join(f"{n}<-{s}" if n != s else n for n, s in self.student_layers.items())
        return f"kind={self.kind!r}, layers=[{taps}], table={self.table!r}, lam={self.loss.schedule!r}"


__all__ = ["DistillOutput", "FingerprintDistiller", "student_pooling"]
