"""The projection generator fpkit-splitmix64-boxmuller-v1 against an independent pure-Python
implementation of its definition (formats/SPEC.md, "Projection")."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest

from fpkit.errors import ConfigError
from fpkit.projection import GENERATOR, make_projection, projection_sha256, standard_normals

MASK = 2**64 - 1
SEEDS = [0, 1, 2**63 + 5]


def py_splitmix64(seed: int, count: int) -> list[int]:
    out = []
    for k in range(1, count + 1):
        z = (seed + k * 0x9E3779B97F4A7C15) & MASK
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        out.append(z ^ (z >> 31))
    return out


def py_normals(seed: int, count: int) -> list[float]:
    words = py_splitmix64(seed, count + count % 2)
    u = [(w >> 11) * 2.0**-53 for w in words]
    out = []
    for j in range(0, len(u), 2):
        rho = math.sqrt(-2.0 * math.log(1.0 - u[j]))
        theta = 2.0 * math.pi * u[j + 1]
        out += [rho * math.cos(theta), rho * math.sin(theta)]
    return out[:count]


def py_projection(d: int, r: int, seed: int) -> np.ndarray:
    z = py_normals(seed, d * r)
    rows = [z[i * r : (i + 1) * r] for i in range(d)]  # row-major fill
    norms = [math.sqrt(math.fsum(rows[i][j] ** 2 for i in range(d))) for j in range(r)]
    return np.array([[rows[i][j] / norms[j] for j in range(r)] for i in range(d)]).astype(np.float32)


def test_splitmix64_known_answers():
    # SplitMix64 seeded with 0 (Steele, Lea & Flood 2014; Vigna's reference splitmix64.c)
    assert py_splitmix64(0, 3) == [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F]


@pytest.mark.parametrize("seed", SEEDS)
def test_integer_stream_is_exact(seed):
    from fpkit.projection import _splitmix64

    assert [int(x) for x in _splitmix64(seed, 37)] == py_splitmix64(seed, 37)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("count", [0, 1, 2, 7, 64])
def test_normals_match_the_definition(seed, count):
    got = standard_normals(seed, count)
    want = py_normals(seed, count)
    assert got.dtype == np.float64 and got.shape == (count,)
    assert np.allclose(got, want, rtol=1e-13, atol=1e-15)  # libm vs numpy: last bits only
    assert np.array_equal(standard_normals(seed, count + 3)[:count], got)  # a prefix of one stream


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("d, r", [(1, 1), (3, 5), (4, 8), (7, 2), (16, 9)])
def test_make_projection_matches_the_definition(seed, d, r):
    R = make_projection(d, r, seed)
    want = py_projection(d, r, seed)
    assert R.dtype == np.float32 and R.shape == (d, r) and R.flags.c_contiguous
    # float32 rounding hides the last-bit differences of log/cos/sin between libm and numpy;
    # a value lying exactly on a float32 rounding boundary may still differ by one unit
    ulps = np.abs(R.view(np.int32).astype(np.int64) - want.view(np.int32).astype(np.int64))
    assert ulps.max() <= 1 and (ulps == 0).mean() >= 0.95
    assert np.allclose(np.linalg.norm(R.astype(np.float64), axis=0), 1.0, atol=1e-6)
    assert np.array_equal(make_projection(d, r, seed), R)


def test_different_seeds_differ_and_d_r_are_a_row_major_fill():
    assert not np.array_equal(make_projection(4, 8, 0), make_projection(4, 8, 1))
    # R[d, r] is filled row-major from one stream, then columns normalised
    z = standard_normals(0, 12).reshape(3, 4)
    assert np.array_equal(make_projection(3, 4, 0), (z / np.sqrt((z * z).sum(axis=0))).astype(np.float32))


def test_sha256_is_over_little_endian_float32_row_major_bytes():
    import torch

    R = make_projection(4, 8, 0)
    digest = projection_sha256(R)
    assert digest == hashlib.sha256(R.astype("<f4").tobytes()).hexdigest()
    assert digest == projection_sha256(R.astype(">f4")) == projection_sha256(np.asfortranarray(R))
    assert digest == projection_sha256(torch.from_numpy(R))
    assert digest == projection_sha256(make_projection(4, 8, 0))
    flipped = R.copy()
    flipped.view(np.uint32)[1, 2] ^= 1
    assert projection_sha256(flipped) != digest
    assert len(digest) == 64 and GENERATOR == "fpkit-splitmix64-boxmuller-v1"


@pytest.mark.parametrize("seed", [-1, 2**64, 1.5, True, "3", None])
def test_bad_seed(seed):
    with pytest.raises(ConfigError, match="seed"):
        make_projection(4, 8, seed)
    with pytest.raises(ConfigError):
        standard_normals(seed, 4)


@pytest.mark.parametrize("d, r", [(0, 8), (-1, 8), (4, 0), (4, -2), (2.0, 8), (4, 1.5), ("4", 8), (None, 8)])
def test_bad_shape(d, r):
    with pytest.raises(ConfigError):
        make_projection(d, r, 0)


def test_negative_count():
    with pytest.raises(ConfigError):
        standard_normals(0, -1)


def test_numpy_integer_arguments():
    assert np.array_equal(
        make_projection(np.int64(4), np.int32(8), np.uint64(2**63 + 5)), make_projection(4, 8, 2**63 + 5)
    )
