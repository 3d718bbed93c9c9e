"""The datasets a v1 file holds (formats/SPEC.md, sections 4 and 9): path, shape, dtype, chunking.

The writer creates exactly these datasets, in this order; the reader derives the same list from
the metadata and checks the file against it.  Paths of the per-layer datasets, the number of
views of ``count = "all"`` and the per-view chunking rule live here and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from .spec import CLASS_COUNTS, FORMAT_VERSION, LABELS, SAMPLE_DIGESTS, VIEW_PARAMS

LAYERS_GROUP = "layers"


def layer_group(i: int) -> str:
    """The HDF5 group of layer ``i``: ``layers/<i>``."""
    return f"{LAYERS_GROUP}/{i}"


def projection_path(i: int) -> str:
    """The dataset of layer ``i``'s projection R [d, r] (absent when redacted)."""
    return f"{layer_group(i)}/projection"


def table_path(i: int, kind: str) -> str:
    """The dataset of layer ``i``'s table of ``kind`` (sample, class or views)."""
    return f"{layer_group(i)}/{kind}"


def scale_path(i: int, kind: str, dtype: str) -> str | None:
    """The per-row scale dataset of that table: present for int8 storage only, else None."""
    return f"{layer_group(i)}/{kind}_scale" if dtype == "int8" else None


def policy_view_count(padding: int, flip: bool) -> int:
    """Number of distinct views of the pad-crop-flip policy: (2p+1)^2, times 2 with flips (section 5)."""
    return (2 * padding + 1) ** 2 * (2 if flip else 1)


def views_per_sample(policy: Mapping[str, Any], count: int | str) -> int:
    """K for a views section: ``count`` itself, or the policy's number of views for ``"all"``
    (1 for ``center``; 0, which no K equals, for ``resized_crop_flip``, which has no finite set)."""
    if count != "all":
        return count
    name = policy.get("name")
    if name == "pad_crop_flip":
        return policy_view_count(policy["padding"], policy["flip"])
    return 1 if name == "center" else 0


VIEW_PARAMS_LAYOUT = {
    "pad_crop_flip": (("top", "left", "flip"), "int16"),
    "resized_crop_flip": (("top", "left", "height", "width", "flip"), "int32"),
    "center": (("top", "left", "resized_height", "resized_width", "flip"), "int32"),
}
"""Per view policy: the fields of the last axis of ``view_params`` and its dtype (section 4)."""

POLICY_VERSION = {"pad_crop_flip": "1.0", "resized_crop_flip": "1.2", "center": "1.2"}
"""The first format version that defines each view policy (section 2)."""


def version_tuple(version: str) -> tuple[int, int]:
    """``"1.10"`` -> (1, 10), for comparing versions."""
    major, minor = version.split(".")
    return int(major), int(minor)


LOGITS_VERSION = "1.3"
"""The first format version that defines the logit tables (section 4b, :mod:`fpkit.format.logits`)."""


def lowest_version(policy_name: str, logits: bool = False) -> str:
    """The version fpkit writes for a file of this view policy: the lowest that describes it,
    FORMAT_VERSION (1.1) unless the policy is newer, or 1.3 when it holds logits (section 2)."""
    need = POLICY_VERSION.get(policy_name, FORMAT_VERSION)
    return max(need, FORMAT_VERSION, LOGITS_VERSION if logits else "1.0", key=version_tuple)


def view_params_fields(policy_name: str) -> tuple[tuple[str, ...], str]:
    """(field names, dtype) of ``view_params`` for a policy (pad_crop_flip for unknown names)."""
    return VIEW_PARAMS_LAYOUT.get(policy_name, VIEW_PARAMS_LAYOUT["pad_crop_flip"])


@dataclass(frozen=True)
class FileShape:
    """The sizes every dataset's shape derives from: N samples, C classes, K stored views per
    sample (None without replay), the tables' storage dtype and the view policy's name."""

    n: int
    c: int
    k: int | None
    dtype: str
    policy: str = "pad_crop_flip"  # views.policy.name: the shape and dtype of view_params


@dataclass(frozen=True)
class DatasetLayout:
    """One dataset: its path, shape, numpy dtype name, and whether it holds one row per
    (sample, view), which section 9 chunks by ``chunk_rows // K``."""

    path: str
    shape: tuple[int, ...]
    dtype: str
    per_view: bool = False

    def chunk_rows(self, chunk_rows: int, k: int | None) -> int:
        """Rows per chunk for ``storage.chunk_rows`` (before clipping to the dataset's rows)."""
        return max(1, chunk_rows // k) if self.per_view and k else chunk_rows

    def chunks(self, chunk_rows: int, k: int | None) -> tuple[int, ...]:
        """The HDF5 chunk shape: ``(max(1, min(rows, shape[0])),) + shape[1:]``."""
        return (max(1, min(self.chunk_rows(chunk_rows, k), self.shape[0])),) + self.shape[1:]

    @property
    def nbytes(self) -> int:
        """Bytes of the values (shape times item size)."""
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize


def fixed_datasets(fs: FileShape) -> list[DatasetLayout]:
    """The datasets every file holds (labels, sample digests, class counts), and ``view_params``
    with replay."""
    out = [
        DatasetLayout(LABELS, (fs.n,), "int64"),
        DatasetLayout(SAMPLE_DIGESTS, (fs.n,), "uint64"),
        DatasetLayout(CLASS_COUNTS, (fs.c,), "int64"),
    ]
    if fs.k:
        fields, dtype = view_params_fields(fs.policy)
        out.append(DatasetLayout(VIEW_PARAMS, (fs.n, fs.k, len(fields)), dtype, per_view=True))
    return out


def projection_dataset(i: int, d: int, r: int) -> DatasetLayout:
    """Layer ``i``'s stored projection, float32 [d, r]."""
    return DatasetLayout(projection_path(i), (d, r), "float32")


def table_datasets(i: int, kind: str, r: int, fs: FileShape) -> list[DatasetLayout]:
    """Layer ``i``'s table of ``kind`` ([N, r], [C, r] or [N, K, r] in the storage dtype), then
    its float32 scale (the table's shape without the last axis) for int8 storage."""
    rows = {"sample": (fs.n,), "class": (fs.c,), "views": (fs.n, fs.k or 0)}[kind]
    per_view = kind == "views"
    out = [DatasetLayout(table_path(i, kind), rows + (r,), fs.dtype, per_view)]
    scale = scale_path(i, kind, fs.dtype)
    if scale is not None:
        out.append(DatasetLayout(scale, rows, "float32", per_view))
    return out


def layer_datasets(i: int, d: int, r: int, stored: bool, kinds: Sequence[str], fs: FileShape) -> list[DatasetLayout]:
    """Layer ``i``'s datasets in the order the writer creates them: the projection (when
    ``stored``), then each table of ``kinds`` followed by its scale."""
    out = [projection_dataset(i, d, r)] if stored else []
    for kind in kinds:
        out += table_datasets(i, kind, r, fs)
    return out


__all__ = [
    "DatasetLayout",
    "FileShape",
    "LAYERS_GROUP",
    "POLICY_VERSION",
    "VIEW_PARAMS_LAYOUT",
    "fixed_datasets",
    "layer_datasets",
    "layer_group",
    "lowest_version",
    "policy_view_count",
    "projection_dataset",
    "projection_path",
    "scale_path",
    "table_datasets",
    "table_path",
    "view_params_fields",
    "version_tuple",
    "views_per_sample",
]
