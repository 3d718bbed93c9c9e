"""fpkit: teacher-once knowledge distillation with shareable fingerprint files.

The public surface (imported lazily, so ``fpkit inspect`` does not pay for torch):

* building: :func:`build`, :class:`BuildOptions`, :class:`BuildResult`, :func:`open_source`
* files: :func:`open_fingerprints`, :func:`verify_fingerprints`, :class:`FingerprintFile`,
  :class:`FingerprintWriter`
* training: :class:`FingerprintDataset`, :class:`FingerprintDistiller` (tap + heads + loss in one
  unit), :class:`FingerprintHead`, :class:`DistillLoss`, :class:`LinearWarmup`,
  :func:`fingerprint_loss`, :func:`relational_loss`, :func:`kd_loss`, :func:`file_kd_loss` (KD from
  a file's stored logits, format 1.3); :mod:`fpkit.recommended` holds the loss defaults chosen
  on validation data (lambda 30, warm-up a fifth of the run, KD T 2; docs/RESULTS.md section 5)
* errors: :class:`FpkitError` and its subclasses (fpkit.errors)
"""

from __future__ import annotations

import importlib
from typing import Any

from ._version import __version__
from .errors import *  # noqa: F401,F403
from .errors import __all__ as _errors_all

_LAZY = {
    "build": "build",
    "BuildOptions": "build",
    "BuildResult": "build",
    "open_source": "datasets",
    "FingerprintDataset": "fingerprint_dataset",
    "FingerprintFile": "format",
    "FingerprintWriter": "format",
    "open_fingerprints": "format",
    "verify_fingerprints": "format",
    "DistillLoss": "losses",
    "LinearWarmup": "losses",
    "fingerprint_loss": "losses",
    "kd_loss": "losses",
    "file_kd_loss": "losses",
    "relational_loss": "losses",
    "FingerprintHead": "student",
    "FingerprintDistiller": "distiller",
}

__all__ = ["__version__", *_LAZY, *_errors_all]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'fpkit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
