"""Every benchmark runs end to end as ``python -m bench.X`` with its tiniest settings.

Not a measurement: the figures of such tiny runs mean nothing.  It checks that each module
starts, prints its tables and writes its raw JSON (with the machine description).  bench.build
and bench.read need the CIFAR-10 JPEG images under .data/cifar10-jpeg and are skipped without them.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from _support import PYTHON, ROOT, subprocess_env

CIFAR10_JPEG = ROOT / ".data" / "cifar10-jpeg"

# module -> (tiniest arguments, titles its output must contain, needs the CIFAR-10 JPEGs)
CASES = {
    "build": (
        [
            "--n",
            "20",
            "--pil-n",
            "2",
            "--views",
            "2",
            "--reps",
            "1",
            "--arch",
            "resnet8",
            "--batch-size",
            "64",
            "--mem-n",
            "20",
        ],
        ["Throughput, teacher resnet8", "fpkit end-to-end / bare forward", "Peak memory of one build"],
        True,
    ),
    "read": (
        [
            "--n",
            "20",
            "--workers",
            "0",
            "--reps",
            "1",
            "--batch-size",
            "8",
            "--lookups",
            "100",
            "--file-n",
            "500",
            "--file-reps",
            "1",
        ],
        ["DataLoader throughput, N=20", "Per-call cost", "Open + load a 500 x 128", "FingerprintDataset / plain"],
        True,
    ),
    "train_step": (
        [
            "--batch-size",
            "4",
            "--reps",
            "1",
            "--steps",
            "1",
            "--warmup",
            "1",
            "--table-rows",
            "100",
            "--student-arch",
            "resnet8",
            "--teacher-arch",
            "resnet8",
        ],
        ["Training step, student resnet8", "FP / CE (target <= 1.05)", "live KD / CE"],
        False,
    ),
    "storage": (
        ["--n", "1000", "--synthetic-n", "1000", "--real-views", "1", "--rs", "64,128", "--privacy-rs", "16"],
        [
            "Storage at ImageNet scale: N = 1,281,167",
            "Table sizes",
            "Fidelity: minimum row cosine",
            "Codecs on float16",
            "Privacy, synthetic features",
        ],
        False,
    ),
    "soft_labels": (
        ["--n", "24", "--views", "2", "--seeds", "2"],
        ["Storage of the logit tables", "Bias against float32 full logits", "sample:16"],
        False,
    ),
    "codecs": (
        ["--n", "1000", "--views", "1", "--repeat", "1"],
        ["# fpkit codec benchmark: N=1000", "| codec | dtype | file bytes", "| zstd | int8 |"],
        False,
    ),
}


@pytest.mark.parametrize("module", list(CASES))
def test_bench_module_runs(module: str, tmp_path: Path):
    args, titles, needs_data = CASES[module]
    if needs_data and not (CIFAR10_JPEG / "train").is_dir():
        pytest.skip(f"bench.{module} needs the CIFAR-10 JPEG images in {CIFAR10_JPEG} (see /work/shared/data)")
    out = tmp_path / f"{module}.json"
    p = subprocess.run(
        [PYTHON, "-m", f"bench.{module}", *args, "--threads", "1", "--out", str(out)],
        cwd=ROOT,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    for title in titles:
        assert title in p.stdout, f"{title!r} missing from the output of bench.{module}:\n{p.stdout}"
    assert f"saved {out}" in p.stdout
    raw = json.loads(out.read_text())
    assert raw["benchmark"] == module
    assert raw["machine"]["cpu"] and raw["machine"]["libraries"]["numpy"]
    assert raw["machine"]["argv"].startswith(f"python -m bench.{module} ")
    assert raw["args"]["out"] == str(out)
    assert raw["results"]


def test_stdlib_codecs_is_not_shadowed_from_the_bench_folder():
    """bench/codecs.py never stands in for the standard library's codecs, even run from bench/."""
    p = subprocess.run(
        [PYTHON, "-c", "import codecs, json; print(codecs.__file__)"],
        cwd=ROOT / "bench",
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 0, p.stderr
    assert Path(p.stdout.strip()).parent != ROOT / "bench"


def test_build_sweep_runs_and_records_the_real_batches(tmp_path: Path):
    """`bench.build --build-sweep` times whole builds at each batch and at fpkit's default, and
    records each build's real batch from the file (the CPU default for the default run)."""
    from fpkit.build.job import default_batch_size

    if not (CIFAR10_JPEG / "train").is_dir():
        pytest.skip(f"bench.build needs the CIFAR-10 JPEG images in {CIFAR10_JPEG} (see /work/shared/data)")
    out = tmp_path / "sweep.json"
    args = ["--n", "20", "--views", "2", "--reps", "1", "--arch", "resnet8", "--build-sweep", "8,16"]
    p = subprocess.run(
        [PYTHON, "-m", "bench.build", *args, "--device", "cpu", "--threads", "1", "--out", str(out)],
        cwd=ROOT,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    assert "Batch sweep, teacher resnet8" in p.stdout and "default / best >= 0.95" in p.stdout, p.stdout
    res = json.loads(out.read_text())["results"]
    assert res["real_batch"] == {
        "fpkit build, default batch": default_batch_size("cpu") // 2 * 2,
        "fpkit build, batch 8": 8,
        "fpkit build, batch 16": 16,
    }
    assert 0 < res["headline"]["default_over_best"] <= 1


@pytest.mark.skipif(not Path("/proc/self/smaps_rollup").exists(), reason="reads /proc/<pid>/smaps_rollup (Linux)")
def test_read_scale_runs_and_workers_add_no_copy(tmp_path: Path):
    """`bench.read --scale` (bench/read_scale.py) at a tiny size: it measures, and shared tables
    add no copy per worker."""
    out = tmp_path / "scale.json"
    args = ["--scale", "--n", "100000", "--workers", "2", "--batches", "4", "--lookups", "200", "--private"]
    p = subprocess.run(
        [PYTHON, "-m", "bench.read", *args, "--threads", "1", "--out", str(out)],
        cwd=ROOT,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    assert "DataLoader memory, N=100,000" in p.stdout and "Random-row reads" in p.stdout, p.stdout
    res = json.loads(out.read_text())["results"]
    assert max(res["shared"]["extra_worker_mib"]) < 0.5 * res["held_mib"] < min(res["private"]["extra_worker_mib"])
