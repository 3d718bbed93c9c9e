"""fpkit: teacher-once knowledge distillation with shareable fingerprint files."""

from ._version import __version__
from .errors import *  # noqa: F401,F403
from .errors import __all__ as _errors_all
from .format import FingerprintFile, FingerprintWriter, open_fingerprints, verify_fingerprints

__all__ = ["__version__", "FingerprintFile", "FingerprintWriter", "open_fingerprints",
           "verify_fingerprints", *_errors_all]
