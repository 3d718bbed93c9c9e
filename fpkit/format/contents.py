"""What goes into one fingerprint file, given to :class:`fpkit.format.FingerprintWriter` at once."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import ConfigError, MismatchError
from .logits import LogitsSpec
from .metadata import ComputeInfo, DatasetInfo, Provenance, StorageInfo, TeacherInfo, ViewsInfo


@dataclass(frozen=True)
class LayerSpec:
    """One tapped layer: its module name, pooling rule, feature dimension d and projection.

    ``R`` is the float32 [d, r] projection; ``redacted=True`` leaves R and its seed out of the file
    (the digest of R is still recorded).
    """

    name: str
    pooling: str
    d: int
    R: np.ndarray
    seed: int
    redacted: bool = False

    @property
    def r(self) -> int:
        return int(self.R.shape[1])


@dataclass(frozen=True, eq=False)
class FileContents:
    """Everything a fingerprint file records except the fingerprint rows themselves.

    Attributes:
        layers: the tapped layers, in the order they are stored.
        labels: int [N] class index of every sample, in file order.
        sample_digests: uint64 [N] per-sample digests (:func:`fpkit.format.digests.sample_digest`).
        classes: the C class names (index = label).
        teacher, dataset, views, compute: metadata sections (formats/SPEC.md, section 3); the writer
            fills ``dataset.num_samples/num_classes/classes/labels_sha256/order_sha256`` itself.
        tables: which of "sample", "class" to store (at least one).
        views_per_sample: K, to store per-view tables [N, K, r] and ``view_params`` (replay); then
            ``views.replay`` must be true and ``views.per_sample`` equal K.
        storage: dtype, codec and chunk rows of the tables.
        provenance: fpkit version, creation time and library versions; None means
            :meth:`Provenance.now` (golden files pass fixed values).
        extra: top-level extension fields, each an object marked ``{"must_understand": false}``.
        logits: the teacher's logit table to store (format 1.3, :mod:`fpkit.format.logits`); the
            writer's ``append`` then takes ``logits=`` with every batch.
    """

    layers: Sequence[LayerSpec]
    labels: np.ndarray
    sample_digests: np.ndarray
    classes: Sequence[str]
    teacher: TeacherInfo
    dataset: DatasetInfo
    views: ViewsInfo
    compute: ComputeInfo
    tables: Sequence[str] = ("sample", "class")
    views_per_sample: int | None = None
    storage: StorageInfo = field(default_factory=StorageInfo)
    provenance: Provenance | None = None
    extra: Mapping[str, Any] | None = None
    logits: LogitsSpec | None = None


def check_contents(contents: FileContents) -> None:
    """Refuse contents no file can hold (ConfigError, MismatchError), before anything is written."""
    layers, labels, classes, tables = contents.layers, contents.labels, contents.classes, contents.tables
    chunk_rows = contents.storage.chunk_rows
    if not layers:
        raise ConfigError("at least one layer is needed")
    names = [sp.name for sp in layers]
    if len(set(names)) != len(names):
        raise ConfigError(f"layer names must be unique, got {names}")
    for sp in layers:
        if sp.R.ndim != 2 or sp.R.shape[0] != sp.d or sp.R.shape[1] < 1:
            raise ConfigError(f"layer {sp.name}: projection must have shape [d={sp.d}, r], got {list(sp.R.shape)}")
    n = len(labels)
    if n < 1:
        raise ConfigError("a fingerprint file needs at least one sample")
    if len(contents.sample_digests) != n:
        raise MismatchError(f"{len(contents.sample_digests)} sample digests for {n} labels")
    lab = np.asarray(labels)
    if lab.min() < 0 or lab.max() >= len(classes):
        raise ConfigError(f"labels must lie in [0, {len(classes)}), got range [{lab.min()}, {lab.max()}]")
    if not set(tables) & {"sample", "class"} or set(tables) - {"sample", "class"}:
        raise ConfigError(f"tables must be a non-empty subset of sample,class; got {','.join(tables)}")
    if chunk_rows < 1:
        raise ConfigError(f"chunk_rows must be >= 1, got {chunk_rows}")
    if "logits" in (contents.extra or {}):
        raise ConfigError("the extension name 'logits' is format 1.3's logit table; give contents.logits instead")


__all__ = ["FileContents", "LayerSpec", "check_contents"]
