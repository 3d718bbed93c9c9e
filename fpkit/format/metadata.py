"""The metadata document of a fingerprint file (formats/SPEC.md, section 3), as frozen classes.

Each class mirrors one JSON object of the document: :meth:`to_json` gives the object fpkit writes
(keys sorted) and ``from_json`` reads one back, so ``X.from_json(x.to_json()) == x`` and
``X.from_json(d).to_json() == d`` for every object ``d`` the schema accepts.  Values are kept as
given (a JSON integer stays an int, a float a float), so the text written is the same as from
plain dicts; JSON arrays become tuples.

Fields of a minor version that a reader does not know, each marked ``{"must_understand": false}``
(SPEC section 2), are kept in ``extras`` of the object that holds them, so a file read and
written back loses nothing.  The objects the format closes (``dataset.normalize``,
``views.policy``, ``layers[].tables``, the ``datasets`` entries) have no ``extras``.

Schema validation is not done here: the writer validates :meth:`Metadata.to_json` before it
writes, the reader validates the parsed text before :meth:`Metadata.from_json`.
"""

from __future__ import annotations

import copy
import datetime as _dt
import platform
from dataclasses import dataclass, field, fields
from typing import Any, Mapping, TypeVar

from .spec import DEFAULT_CHUNK_ROWS, DEFAULT_CODEC, DEFAULT_DTYPE

Json = dict[str, Any]
_T = TypeVar("_T", bound="_JsonObject")


def _extras() -> Any:
    return field(default_factory=dict)


class _JsonObject:
    """Base of the classes that mirror one JSON object open to extension fields (``extras``).

    Subclasses are frozen dataclasses whose fields, but the last one ``extras``, are the keys of
    the object; they override :meth:`_values` and :meth:`_decode` for values that are objects.
    """

    extras: Mapping[str, Any]

    @classmethod
    def _keys(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls) if f.name != "extras")  # type: ignore[arg-type]

    def __post_init__(self) -> None:
        clash = sorted(set(self.extras) & set(self._keys()))
        if clash:
            raise ValueError(f"{type(self).__name__}: extension fields {clash} are fields of the format")

    def _values(self) -> Json:
        """The known keys with their JSON values (override to encode nested objects)."""
        return {k: getattr(self, k) for k in self._keys()}

    @classmethod
    def _decode(cls, known: Json) -> Json:
        """The constructor arguments for the known keys of a JSON object (override to decode)."""
        return known

    def to_json(self) -> Json:
        """This object as fpkit writes it: keys sorted, extension fields included (copied)."""
        out = self._values()
        out.update(copy.deepcopy(dict(self.extras)))
        return dict(sorted(out.items()))

    @classmethod
    def from_json(cls: type[_T], d: Mapping[str, Any]) -> _T:
        """Read the object ``d`` (one the schema accepts); unknown keys go to ``extras``."""
        keys = cls._keys()
        known = {k: d[k] for k in keys if k in d}
        return cls(**cls._decode(known), extras={k: v for k, v in d.items() if k not in keys})


# ----------------------------------------------------------------------------- teacher


@dataclass(frozen=True)
class Accuracy(_JsonObject):
    """The teacher's top-1 accuracy (a fraction in [0, 1]) over ``count`` (sample, view)
    predictions of the build's own views (``measured_on = "views"``)."""

    top1: float
    measured_on: str
    count: int
    extras: Mapping[str, Any] = _extras()


@dataclass(frozen=True)
class TeacherInfo(_JsonObject):
    """The model whose features the file holds: ``weights_sha256`` is SPEC section 6's digest,
    ``source_kind`` how the weights were loaded, ``trusted_code`` whether loading ran user-trusted
    code, ``accuracy`` None when not measured."""

    arch: str
    weights_sha256: str
    num_params: int
    source_kind: str
    trusted_code: bool
    accuracy: Accuracy | None
    extras: Mapping[str, Any] = _extras()

    def _values(self) -> Json:
        return {**super()._values(), "accuracy": None if self.accuracy is None else self.accuracy.to_json()}

    @classmethod
    def _decode(cls, known: Json) -> Json:
        acc = known["accuracy"]
        return {**known, "accuracy": None if acc is None else Accuracy.from_json(acc)}


# ----------------------------------------------------------------------------- dataset


@dataclass(frozen=True)
class Normalization:
    """Per-channel constants applied to the images as ``(x / 255 - mean) / std``."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def to_json(self) -> Json:
        return {"mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Normalization:
        return cls(mean=tuple(d["mean"]), std=tuple(d["std"]))


@dataclass(frozen=True)
class Subset(_JsonObject):
    """Format 1.1: the file holds samples ``start`` .. ``stop - 1`` (a Python range) of a source
    split of ``source_num_samples`` samples, so ``num_samples = stop - start``.  Written with
    ``"must_understand": false`` (a 1.0 reader ignores it; SPEC section 3)."""

    start: int
    stop: int
    source_num_samples: int
    extras: Mapping[str, Any] = _extras()

    def _values(self) -> Json:
        return {**super()._values(), "must_understand": False}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Subset:
        return super().from_json({k: v for k, v in d.items() if k != "must_understand"})


@dataclass(frozen=True)
class DatasetInfo(_JsonObject):
    """The samples, in file order.  ``image_shape`` is [H, W, channels] (always three numbers,
    1 channel for grayscale).  The last five fields are filled by the writer from the labels,
    digests and class names it is given; None leaves them out of :meth:`to_json`.  ``subset``
    (format 1.1) is the range of the source split the file holds, None for the whole split or
    when it is not known."""

    name: str
    split: str
    image_shape: tuple[int | None, int | None, int]  # H, W null: images of varied sizes (1.2)
    normalize: Normalization
    num_samples: int | None = None
    num_classes: int | None = None
    classes: tuple[str, ...] | None = None
    labels_sha256: str | None = None
    order_sha256: str | None = None
    subset: Subset | None = None
    extras: Mapping[str, Any] = _extras()

    def _values(self) -> Json:
        out = {k: v for k, v in super()._values().items() if v is not None}
        out.update(image_shape=list(self.image_shape), normalize=self.normalize.to_json())
        if self.subset is not None:
            out["subset"] = self.subset.to_json()
        if self.classes is not None:
            out["classes"] = list(self.classes)
        return out

    @classmethod
    def _decode(cls, known: Json) -> Json:
        out = {
            **known,
            "image_shape": tuple(known["image_shape"]),
            "normalize": Normalization.from_json(known["normalize"]),
        }
        if known.get("classes") is not None:
            out["classes"] = tuple(known["classes"])
        if known.get("subset") is not None:
            out["subset"] = Subset.from_json(known["subset"])
        return out


# ----------------------------------------------------------------------------- views, compute, storage


@dataclass(frozen=True)
class ViewsInfo(_JsonObject):
    """The augmentation: ``policy`` as the policy's ``to_dict()`` gives it (``{"name":
    "pad_crop_flip", "padding", "fill", "flip"}``; format 1.2: ``resized_crop_flip`` with size,
    scale, ratio, flip, or ``center`` with size, resize: see :mod:`fpkit.views`), ``count`` an integer or ``"all"``,
    ``per_sample`` K, ``seed`` the view sampler's seed, ``replay`` whether per-view tables and
    ``view_params`` are stored."""

    policy: Mapping[str, Any]
    count: int | str
    per_sample: int
    seed: int
    replay: bool
    extras: Mapping[str, Any] = _extras()

    def _values(self) -> Json:
        return {**super()._values(), "policy": dict(sorted(self.policy.items()))}

    @classmethod
    def _decode(cls, known: Json) -> Json:
        return {**known, "policy": dict(known["policy"])}


@dataclass(frozen=True)
class ComputeInfo(_JsonObject):
    """Where the fingerprints were computed (provenance only): the torch device of rank 0, the
    autocast dtype or None, view images per forward, and the number of processes."""

    device: str
    autocast: str | None
    batch_size: int
    world_size: int
    extras: Mapping[str, Any] = _extras()


@dataclass(frozen=True)
class StorageInfo(_JsonObject):
    """How the tables are stored: dtype (float32, float16, int8), codec (none, gzip, zstd) and
    rows per chunk (SPEC sections 8 and 9)."""

    dtype: str = DEFAULT_DTYPE
    codec: str = DEFAULT_CODEC
    chunk_rows: int = DEFAULT_CHUNK_ROWS
    extras: Mapping[str, Any] = _extras()


@dataclass(frozen=True)
class Provenance:
    """Who wrote the file and when: fpkit's version, the UTC time ``YYYY-MM-DDTHH:MM:SSZ`` and the
    versions of the libraries that influence the content.  Three top-level fields of the document."""

    fpkit_version: str
    created: str
    libraries: Mapping[str, str]

    @classmethod
    def now(cls) -> Provenance:
        """This process's fpkit and library versions, and the current UTC time (imports torch)."""
        from .._version import __version__

        return cls(fpkit_version=__version__, created=utc_now(), libraries=library_versions())

    def to_json(self) -> Json:
        return {"fpkit_version": self.fpkit_version, "created": self.created, "libraries": dict(self.libraries)}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Provenance:
        return cls(fpkit_version=d["fpkit_version"], created=d["created"], libraries=dict(d["libraries"]))


def library_versions() -> dict[str, str]:
    """Versions of the libraries that influence a file's content, for provenance (imports torch)."""
    import h5py
    import numpy as np
    import torch
    import torchvision

    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "h5py": h5py.__version__,
        "hdf5": h5py.version.hdf5_version,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
    }


def utc_now() -> str:
    """The current UTC time as ``YYYY-MM-DDTHH:MM:SSZ``."""
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# ----------------------------------------------------------------------------- layers and datasets


@dataclass(frozen=True)
class ProjectionRecord(_JsonObject):
    """A layer's projection R [d, r]: its seed (None when redacted), generator, column norm,
    SHA-256 (section 6, always recorded) and whether R is stored."""

    r: int
    seed: int | None
    generator: str
    column_norm: str
    sha256: str
    stored: bool
    extras: Mapping[str, Any] = _extras()


@dataclass(frozen=True)
class TableRecord(_JsonObject):
    """One stored table of a layer: its dataset path, its int8 scale dataset (None otherwise) and
    the smallest row cosine between decoded and original values (section 8)."""

    dataset: str
    scale: str | None
    fidelity_min_cos: float
    extras: Mapping[str, Any] = _extras()


@dataclass(frozen=True)
class LayerRecord(_JsonObject):
    """Entry i of ``layers``: the tapped module's name, pooling, feature width d, its group
    ``layers/<i>``, its projection and its tables by kind (in the order the document lists them)."""

    name: str
    pooling: str
    d: int
    group: str
    projection: ProjectionRecord
    tables: Mapping[str, TableRecord]
    extras: Mapping[str, Any] = _extras()

    def _values(self) -> Json:
        tables = {k: t.to_json() for k, t in sorted(self.tables.items())}
        return {**super()._values(), "projection": self.projection.to_json(), "tables": tables}

    @classmethod
    def _decode(cls, known: Json) -> Json:
        tables = {k: TableRecord.from_json(t) for k, t in known["tables"].items()}
        return {**known, "projection": ProjectionRecord.from_json(known["projection"]), "tables": tables}


@dataclass(frozen=True)
class DatasetEntry:
    """An entry of ``datasets``: a stored dataset's numpy dtype name, shape and SHA-256 (section 6)."""

    dtype: str
    shape: tuple[int, ...]
    sha256: str

    def to_json(self) -> Json:
        return {"dtype": self.dtype, "shape": list(self.shape), "sha256": self.sha256}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> DatasetEntry:
        return cls(dtype=d["dtype"], shape=tuple(d["shape"]), sha256=d["sha256"])


# ----------------------------------------------------------------------------- the document

_SECTIONS = {
    "teacher": TeacherInfo,
    "dataset": DatasetInfo,
    "views": ViewsInfo,
    "compute": ComputeInfo,
    "storage": StorageInfo,
}


@dataclass(frozen=True)
class Metadata(_JsonObject):
    """The whole metadata document of a file (root attribute ``metadata``).

    ``provenance`` gives the top-level ``fpkit_version``, ``created`` and ``libraries`` (also
    properties here); ``datasets`` maps each stored dataset's path to its entry; ``extras`` holds
    the top-level extension fields.
    """

    provenance: Provenance
    teacher: TeacherInfo
    dataset: DatasetInfo
    views: ViewsInfo
    compute: ComputeInfo
    storage: StorageInfo
    layers: tuple[LayerRecord, ...]
    datasets: Mapping[str, DatasetEntry]
    extras: Mapping[str, Any] = _extras()

    @classmethod
    def _keys(cls) -> tuple[str, ...]:
        return ("fpkit_version", "created", "libraries", *_SECTIONS, "layers", "datasets")

    @property
    def fpkit_version(self) -> str:
        return self.provenance.fpkit_version

    @property
    def created(self) -> str:
        return self.provenance.created

    @property
    def libraries(self) -> Mapping[str, str]:
        return self.provenance.libraries

    def _values(self) -> Json:
        out = self.provenance.to_json()
        out.update((key, getattr(self, key).to_json()) for key in _SECTIONS)
        out["layers"] = [lay.to_json() for lay in self.layers]
        out["datasets"] = {path: e.to_json() for path, e in sorted(self.datasets.items())}
        return out

    @classmethod
    def _decode(cls, known: Json) -> Json:
        out: Json = {key: kind.from_json(known[key]) for key, kind in _SECTIONS.items()}
        out["provenance"] = Provenance.from_json(known)
        out["layers"] = tuple(LayerRecord.from_json(lay) for lay in known["layers"])
        out["datasets"] = {path: DatasetEntry.from_json(e) for path, e in known["datasets"].items()}
        return out


__all__ = [
    "Accuracy",
    "ComputeInfo",
    "DatasetEntry",
    "DatasetInfo",
    "LayerRecord",
    "Metadata",
    "Normalization",
    "ProjectionRecord",
    "Provenance",
    "StorageInfo",
    "Subset",
    "TableRecord",
    "TeacherInfo",
    "ViewsInfo",
    "library_versions",
    "utc_now",
]
