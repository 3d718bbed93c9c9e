"""``python -m bench.real_images`` runs end to end with tiny settings (not a measurement).

It makes its varied-size JPEG folder from the CIFAR-10 JPEGs under .data/cifar10-jpeg and is
skipped without them.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from _support import PYTHON, ROOT, subprocess_env

CIFAR10_JPEG = ROOT / ".data" / "cifar10-jpeg"
TINY = [
    "--n", "10", "--views", "1", "--image-size", "64", "--max-size", "96", "--reps", "1",
    "--workers", "0", "--loader-reps", "1", "--threads", "1",
]  # fmt: skip


def test_real_images_bench_runs(tmp_path: Path):
    if not (CIFAR10_JPEG / "train").is_dir():
        pytest.skip(f"bench.real_images needs the CIFAR-10 JPEG images in {CIFAR10_JPEG} (see /work/shared/data)")
    out = tmp_path / "real_images.json"
    p = subprocess.run(
        [PYTHON, "-m", "bench.real_images", *TINY, "--out", str(out)],
        cwd=ROOT,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    titles = ("test data: 10 JPEGs", "Build, torchvision:resnet18", "share of build: decode", "DataLoader throughput")
    for title in titles:
        assert title in p.stdout, f"{title!r} missing from the output:\n{p.stdout}"
    raw = json.loads(out.read_text())
    assert raw["benchmark"] == "real_images"
    assert raw["machine"]["argv"].startswith("python -m bench.real_images ")
    assert raw["results"]["build"]["shares"]["decode"] > 0
    assert raw["results"]["loader"]["rows"][0][0] == 0


def test_real_images_bench_without_data_says_how_to_unpack(tmp_path: Path):
    p = subprocess.run(
        [PYTHON, "-m", "bench.real_images", "--data", str(tmp_path / "absent")],
        cwd=ROOT,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 1
    assert "zstd -dc" in p.stderr and "tar x" in p.stderr
