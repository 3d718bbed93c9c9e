"""experiments/gpu_protocol.sh --smoke: the whole GPU protocol on a tiny JPEG folder, on the CPU, in seconds."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

import fpkit
from fpkit.datasets import synthetic_images

ROOT = Path(__file__).resolve().parents[2]
FPKIT = Path(sys.executable).with_name("fpkit")


def _folder(root: Path, train: int, test: int, classes: int = 4) -> Path:
    for split, n, seed in (("train", train, 0), ("test", test, 1)):
        images, labels = synthetic_images(n * classes, classes, seed=seed)
        counts = [0] * classes
        for img, y in zip(images, labels):
            d = root / split / f"c{y}"
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(d / f"{counts[y]:04d}.jpg", quality=75)
            counts[y] += 1
    return root


@pytest.mark.skipif(shutil.which("bash") is None or not FPKIT.exists(), reason="needs bash and the fpkit CLI")
def test_smoke_run_writes_results(tmp_path: Path):
    src = _folder(tmp_path / "src", train=20, test=5)
    out = tmp_path / "out"
    env = {
        **os.environ,
        "OUT": str(out),
        "SRC": str(src),
        "PY": sys.executable,
        "FPKIT": str(FPKIT),
        "SEEDS": "0",
        "METHODS": "ce fp-sample file-kd",  # the other methods run in tests/experiments/test_train.py
        "OMP_NUM_THREADS": "1",
    }
    proc = subprocess.run(
        ["bash", "experiments/gpu_protocol.sh", "--smoke"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    phases = [json.loads(line)["phase"] for line in (out / "phases.jsonl").read_text().splitlines()]
    assert phases == ["data", "teacher", "build", "students", "collect", "done"]
    for m in ("ce", "fp-sample", "file-kd"):
        final = json.loads((out / "s0" / m / "log.jsonl").read_text().splitlines()[-1])
        assert final["final"] and final["val_images"] == 16 and "test_top1" in final and final["epochs"] == 1
    # file-kd reads each recorded view's logits (the variant that matched live KD on the CPU regimes)
    fp = fpkit.open_fingerprints(out / "fp.h5")
    assert fp.logits_kind == "full" and fp.view_params is not None
    results = (out / "results.md").read_text()
    assert "| fp-sample |" in results and "selected setting" in results
