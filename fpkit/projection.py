"""The frozen random projection R, drawn from a generator fully specified by fpkit.

PyTorch and NumPy do not promise the same random stream across devices or releases, so a seed
alone does not pin a matrix drawn with ``torch.randn``.  fpkit therefore defines its own
generator, ``fpkit-splitmix64-boxmuller-v1``, exactly (formats/SPEC.md, "Projection"):

1. SplitMix64: the k-th 64-bit output (k = 1, 2, ...) is ``mix(seed + k * 0x9E3779B97F4A7C15)``
   modulo 2**64, with ``mix(z) = z3`` where ``z1 = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9``,
   ``z2 = (z1 ^ (z1 >> 27)) * 0x94D049BB133111EB``, ``z3 = z2 ^ (z2 >> 31)``.
2. Uniforms ``u_k = (out_k >> 11) * 2**-53`` in [0, 1).
3. Box-Muller on consecutive pairs (u_{2j+1}, u_{2j+2}): ``rho = sqrt(-2 ln(1 - u_{2j+1}))``,
   normals ``rho cos(2 pi u_{2j+2})`` then ``rho sin(2 pi u_{2j+2})``.
4. The first d*r normals fill R[d, r] in row-major order (float64); every column is divided by
   its Euclidean norm; the result is rounded to float32.

The file stores R itself (unless redacted) and always its SHA-256, so a reader never depends on
this code reproducing the last bit of ``log``/``cos`` on another platform.
"""

from __future__ import annotations

import numpy as np

from .errors import ConfigError
from .format.digests import projection_sha256  # re-exported: the digest is defined with the others (section 6)
from .format.spec import PROJECTION_GENERATOR as GENERATOR

__all__ = ["GENERATOR", "make_projection", "projection_sha256", "splitmix64_at", "standard_normals"]

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def splitmix64_at(seed: int, positions: np.ndarray) -> np.ndarray:
    """The SplitMix64 outputs number ``positions`` (1-based, uint64 array of any shape) of stream ``seed``."""
    with np.errstate(over="ignore"):
        z = np.uint64(seed) + np.asarray(positions, dtype=np.uint64) * _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        return z ^ (z >> np.uint64(31))


def _splitmix64(seed: int, count: int) -> np.ndarray:
    return splitmix64_at(seed, np.arange(1, count + 1, dtype=np.uint64))


def standard_normals(seed: int, count: int) -> np.ndarray:
    """Return ``count`` float64 standard normal draws of the fpkit generator for ``seed``.

    Raises:
        ConfigError: ``seed`` is outside [0, 2**64) or ``count`` is negative.
    """
    _check_seed(seed)
    if count < 0:
        raise ConfigError(f"count must be >= 0, got {count}")
    pairs = (count + 1) // 2
    u = (_splitmix64(seed, 2 * pairs) >> np.uint64(11)).astype(np.float64) * 2.0**-53
    rho = np.sqrt(-2.0 * np.log1p(-u[0::2]))
    theta = 2.0 * np.pi * u[1::2]
    out = np.empty(2 * pairs, dtype=np.float64)
    out[0::2] = rho * np.cos(theta)
    out[1::2] = rho * np.sin(theta)
    return out[:count]


def make_projection(d: int, r: int, seed: int) -> np.ndarray:
    """Return the frozen projection R as a float32 array of shape [d, r], columns of unit norm.

    Raises:
        ConfigError: ``d`` or ``r`` is not a positive integer, or ``seed`` is out of range.
    """
    if not isinstance(d, (int, np.integer)) or d <= 0:
        raise ConfigError(f"feature dimension d must be a positive integer, got {d!r}")
    if not isinstance(r, (int, np.integer)) or r <= 0:
        raise ConfigError(f"projection width r must be a positive integer, got {r!r}; pass e.g. --r 128")
    R = standard_normals(seed, int(d) * int(r)).reshape(int(d), int(r))
    R /= np.sqrt(np.sum(R * R, axis=0, keepdims=True))
    return R.astype(np.float32)


def _check_seed(seed: int) -> None:
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or not 0 <= int(seed) < 2**64:
        raise ConfigError(f"projection seed must be an integer in [0, 2**64), got {seed!r}")
