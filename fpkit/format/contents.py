"""What goes into one fingerprint file, given to :class:`fpkit.format.FingerprintWriter` at once."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

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


__all__ = ["FileContents", "LayerSpec"]
