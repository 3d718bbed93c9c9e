"""The fingerprint file format v1: writer, reader, verifier (normative text: formats/SPEC.md).

Module map: :mod:`.spec` (constants), :mod:`.metadata` (the typed metadata document),
:mod:`.layout` (the datasets of a file), :mod:`.digests` (every digest of section 6),
:mod:`.contents` and :mod:`.writer` (writing), :mod:`.checker` and :mod:`.reader` (reading),
:mod:`.codecs` and :mod:`.quantize` (storage), :mod:`._validate` (the JSON Schema check).
"""

from .contents import FileContents, LayerSpec
from .digests import labels_sha256, order_sha256, projection_sha256, sample_digest
from .metadata import (
    Accuracy,
    ComputeInfo,
    DatasetEntry,
    DatasetInfo,
    LayerRecord,
    Metadata,
    Normalization,
    ProjectionRecord,
    Provenance,
    StorageInfo,
    Subset,
    TableRecord,
    TeacherInfo,
    ViewsInfo,
)
from .reader import FingerprintFile, LayerInfo, open_fingerprints, verify_fingerprints
from .spec import FORMAT_NAME, FORMAT_VERSION
from .writer import FingerprintWriter

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "Accuracy",
    "ComputeInfo",
    "DatasetEntry",
    "DatasetInfo",
    "FileContents",
    "FingerprintFile",
    "FingerprintWriter",
    "LayerInfo",
    "LayerRecord",
    "LayerSpec",
    "Metadata",
    "Normalization",
    "ProjectionRecord",
    "Provenance",
    "StorageInfo",
    "Subset",
    "TableRecord",
    "TeacherInfo",
    "ViewsInfo",
    "labels_sha256",
    "open_fingerprints",
    "order_sha256",
    "projection_sha256",
    "sample_digest",
    "verify_fingerprints",
]
