"""Constants of the fingerprint file format v1 (normative text: formats/SPEC.md)."""

from __future__ import annotations

FORMAT_NAME = "fpkit.fingerprints"
FORMAT_VERSION = "1.1"  # the version fpkit writes for files that need nothing of 1.2
LATEST_VERSION = "1.3"  # the newest version this fpkit reads and writes (1.2: view policies, 1.3: logits)
WRITABLE_VERSIONS = ("1.0", "1.1", "1.2", "1.3")  # 1.0 only for the golden files of 1.0
SUPPORTED_MAJOR = 1
DTYPES = ("float32", "float16", "int8")
CODECS = ("none", "gzip", "zstd")
DEFAULT_DTYPE = "float16"
DEFAULT_CODEC = "none"
DEFAULT_CHUNK_ROWS = 1024
ZSTD_FILTER_ID = 32015
ZSTD_LEVEL = 3
GZIP_LEVEL = 4
TABLE_KINDS = ("sample", "class", "views")
PROJECTION_GENERATOR = "fpkit-splitmix64-boxmuller-v1"
PROJECTION_COLUMN_NORM = "l2"

# root attributes
ATTR_FORMAT = "format"
ATTR_VERSION = "format_version"
ATTR_METADATA = "metadata"
ATTR_COMPLETE = "complete"

# fixed dataset paths
LABELS = "labels"
SAMPLE_DIGESTS = "sample_digests"
CLASS_COUNTS = "class_counts"
VIEW_PARAMS = "view_params"

# 1.1: the informative README dataset at the root (marked must_understand = false) and the
# descriptive attributes below the root (formats/SPEC.md, section 4a)
README = "README"
ATTR_DESCRIPTION = "description"
