"""bench.protocol_parts on a tiny archive in the real layout (train/<class>/NNNN.jpg, test/...)."""

from __future__ import annotations

import io
import shutil
import subprocess
import tarfile
from pathlib import Path

import numpy as np
import pytest
import zstandard
from _support import PYTHON, ROOT, subprocess_env
from PIL import Image


def _archive(path: Path, per_class: dict[str, int], classes: int = 3) -> Path:
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for split, n in per_class.items():
            for c in range(classes):
                for k in range(n):
                    img = io.BytesIO()
                    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(img, "JPEG", quality=75)
                    info = tarfile.TarInfo(f"{split}/class{c}/{k:04d}.jpg")
                    info.size = img.tell()
                    img.seek(0)
                    tar.addfile(info, img)
    path.write_bytes(zstandard.ZstdCompressor().compress(buf.getvalue()))
    return path


@pytest.mark.skipif(shutil.which("zstd") is None, reason="needs the zstd command, as experiments/gpu_protocol.sh")
def test_parts_are_timed_on_a_tiny_archive(tmp_path: Path):
    archive = _archive(tmp_path / "tiny.tar.zst", {"train": 6, "test": 2})
    args = ["--archive", str(archive), "--train-per-class", "4", "--val-per-class", "2"]
    proc = subprocess.run(
        [PYTHON, "-m", "bench.protocol_parts", *args],
        cwd=ROOT,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert "decode the 12 training images" in out and "decode the 6 test images" in out
    assert "choose 6 validation images" in out and "fixed CPU cost:" in out


def test_missing_archive_is_a_clear_error(tmp_path: Path):
    proc = subprocess.run(
        [PYTHON, "-m", "bench.protocol_parts", "--archive", str(tmp_path / "nope.tar.zst")],
        cwd=ROOT,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1 and "not found" in proc.stderr and "Traceback" not in proc.stderr
