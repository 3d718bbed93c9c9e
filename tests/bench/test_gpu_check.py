"""bench/gpu_check.sh (the one GPU check) in its CPU fallback: it must run where CI runs.

Without CUDA the GPU-only parts say "no CUDA: skipped" and the rest runs at tiny sizes; the
figures mean nothing.  The GPU path itself (every part, with the CPU standing in for the GPU) is
``python -m bench.gpu_check --rehearse``, too slow for every CI run (about 30 s).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _support import ROOT, subprocess_env

SCRIPT = ROOT / "bench" / "gpu_check.sh"


def test_gpu_check_sh_is_valid_bash():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU fallback is what runs without CUDA")
def test_gpu_check_cpu_fallback(tmp_path: Path):
    env = subprocess_env()
    env["PYTHON"] = sys.executable
    env.pop("OUT", None)
    p = subprocess.run(
        ["bash", str(SCRIPT), "--out", str(tmp_path), "--skip", "speed"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "(a) CUDA-marked tests: no CUDA: skipped" in p.stdout
    assert "(d) student step ratios: no CUDA: skipped" in p.stdout
    assert "gpu_check summary on CPU (no CUDA)" in p.stdout
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["cuda"] is False and report["gpu"] is None
    for case in report["agree"]["cases"].values():
        for c in case.values():  # two CPU builds: the comparison code runs and finds them equal
            assert c["identity_equal"] and c["sample"]["bit_identical"] and c["views"]["min_cosine"] > 0.999999
