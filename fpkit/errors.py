"""The fpkit error hierarchy.

Every error fpkit raises on purpose derives from :class:`FpkitError`, and each class also
inherits the builtin exception a caller would naturally catch (``ValueError``,
``FileNotFoundError``, ``PermissionError``...), so ``except ValueError`` keeps working for code
that does not know about fpkit.  Messages name the problem and, where there is one, the fix.
"""

from __future__ import annotations


class FpkitError(Exception):
    """Root of every error fpkit raises on purpose."""


class FormatError(FpkitError, ValueError):
    """The file is not a fingerprint file, or breaks the format's rules (schema, shapes, dtypes)."""


class UnsupportedVersionError(FormatError):
    """The file's format major version is unknown to this fpkit."""


class UnknownFieldError(FormatError):
    """The file holds a field this reader does not understand and that is not marked ignorable."""


class CorruptFileError(FpkitError, OSError):
    """Stored bytes do not match their checksum or digest, or HDF5 could not read them."""


class IncompleteFileError(FpkitError, OSError):
    """The file was never finished (no completion marker): an interrupted or crashed write."""


class MismatchError(FpkitError, ValueError):
    """Two things that must agree do not (a dataset and the file that describes it, a resume and
    its earlier run, a checkpoint and its architecture)."""


class FpkitFileNotFoundError(FpkitError, FileNotFoundError):
    """A file or folder fpkit needs does not exist."""


class FpkitPermissionError(FpkitError, PermissionError):
    """A file or folder cannot be read or written for lack of permission."""


class UntrustedCodeError(FpkitError, PermissionError):
    """Loading this object would execute code, and the caller did not opt in to trusting it."""


class ConfigError(FpkitError, ValueError):
    """An argument or option is invalid (bad layer name, r <= 0, unknown dataset...)."""


class OptionError(ConfigError):
    """An option's value is invalid in itself (``--r 0``, a malformed ``--normalize``): a usage error,
    on which the command line exits 2 as it does for the values it rejects while parsing."""


class NonFiniteError(FpkitError, ArithmeticError):
    """A model produced NaN or infinite values; the message names the sample indices."""


__all__ = [
    "FpkitError",
    "FormatError",
    "UnsupportedVersionError",
    "UnknownFieldError",
    "CorruptFileError",
    "IncompleteFileError",
    "MismatchError",
    "FpkitFileNotFoundError",
    "FpkitPermissionError",
    "UntrustedCodeError",
    "ConfigError",
    "OptionError",
    "NonFiniteError",
]


class OutputExistsError(FpkitError, FileExistsError):
    """The output file exists already and neither overwrite (--force) nor resume was asked for."""


class StorageError(FpkitError, OSError):
    """Writing failed at the operating-system level (disk full, I/O error)."""


class RedactedError(FpkitError, LookupError):
    """The file was built redacted: the projection R (and its seed) are not in it."""


__all__ += ["OutputExistsError", "StorageError", "RedactedError"]
