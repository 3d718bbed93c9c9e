"""Damaged chunk sizes in the chunk index are refused before libhdf5 decodes them.

A bit flipped in a gzip file's chunk index (fuzz seed 20261206, case 7887) turned a 19-byte chunk
into a 3-byte one, and libhdf5's fletcher32 check then crashed the process (SIGSEGV).  The reader
checks every chunk's extent first (fpkit/format/checks.py ``chunk_extent_problem``).  Each case
opens the file in a subprocess, so a crash fails the test instead of ending the run.
"""

from __future__ import annotations

import struct
import subprocess

import _trust_helpers as H
import pytest

OPEN = "from fpkit.format import open_fingerprints, verify_fingerprints\nimport sys\n"


def _damage_chunk_size(path, rows: int, chunk_rows: int, new_size: int) -> None:
    """Rewrite the size of the `labels` chunk that starts at row ``rows - rows % chunk_rows`` in
    the v1 B-tree key (size uint32, filter mask uint32, offsets uint64 per dimension + 1)."""
    data = bytearray(path.read_bytes())
    start = (rows - 1) // chunk_rows * chunk_rows
    for size in range(1, 200):
        key = struct.pack("<IIQQ", size, 0, start, 0)
        at = data.find(key)
        if at >= 0:
            data[at : at + 4] = struct.pack("<I", new_size)
            path.write_bytes(bytes(data))
            return
    pytest.skip("chunk key not found in this HDF5 version's layout")


@pytest.mark.parametrize("new_size", [0, 3, 10**6])
def test_a_damaged_chunk_size_is_an_error_not_a_crash(tmp_path, new_size):
    path = H.write_file(tmp_path / "fp.h5", **H.FUZZ_FILES["f32-gzip-replay-redacted"])
    _damage_chunk_size(path, rows=24, chunk_rows=5, new_size=new_size)
    code = OPEN + (
        f"try:\n    open_fingerprints({str(path)!r}, verify=False)\n"
        "except Exception as e:\n    print(type(e).__name__, e)\n"
        f"print(verify_fingerprints({str(path)!r}))\n"
    )
    p = subprocess.run([H.PYTHON, "-c", code], env=H.subprocess_env(), capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, f"crashed or failed: rc {p.returncode}\n{p.stderr[-2000:]}"
    first, second = p.stdout.splitlines()[:2]
    assert first.startswith("CorruptFileError") and "dataset labels has chunk 4" in first, first
    assert "labels" in second, second
