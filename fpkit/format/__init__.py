"""The fingerprint file format v1: writer, reader, verifier (normative text: formats/SPEC.md)."""

from .reader import FingerprintFile, LayerInfo, open_fingerprints, verify_fingerprints
from .spec import FORMAT_NAME, FORMAT_VERSION
from .writer import FingerprintWriter, LayerSpec, sample_digest

__all__ = ["FingerprintFile", "FingerprintWriter", "LayerInfo", "LayerSpec", "FORMAT_NAME",
           "FORMAT_VERSION", "open_fingerprints", "sample_digest", "verify_fingerprints"]
