"""experiments/efficacy.py: grids, selection on validation only, the priority queue and the report.

The students themselves are train.py's (tests/experiments/test_train.py); here fake logs stand in
for finished runs, so selection and statistics are checked against hand computations.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "experiments" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


eff = _load("efficacy")
train = _load("train")


@pytest.fixture
def regime(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return eff.REGIMES["b"]


def _finish(job, val: float, test: float = 50.0, forwards: int = 0, size: int = 0) -> None:
    job.out.mkdir(parents=True, exist_ok=True)
    record = {
        "final": True,
        "method": job.variant.method,
        "seed": job.seed,
        "val_top1": val,
        "test_top1": test,
        "teacher_forwards": forwards,
        "fingerprint_bytes": size,
    }
    (job.out / "log.jsonl").write_text(json.dumps({"epoch": 1}) + "\n" + json.dumps(record) + "\n")


def test_every_method_gets_the_issue_grid():
    kd = eff.BY_NAME["kd"].grid
    assert {(s["kd_T"], s["kd_weight"]) for s in kd} == {(t, w) for t in (1, 2, 4, 8) for w in (0.5, 0.9)}
    fp = eff.BY_NAME["fp-sample"].grid
    assert {(s["lambda"], s["warmup"]) for s in fp} == {(lam, wu) for lam in (0.1, 1, 3, 10, 30) for wu in (None, 0)}
    for v in eff.VARIANTS:
        assert len(v.grid) <= 10, v.name  # one budget of runs, at most 10 per method
        assert len({eff.tag(s) for s in v.grid}) == len(v.grid), f"{v.name}: two settings share a folder"
    names = [v.name for v in eff.VARIANTS]
    assert names[0] == "ce" and len(set(names)) == len(names)


def test_regime_c_runs_the_main_rows_on_an_equal_smaller_budget():
    c = eff.REGIMES["c"]
    rows = c.rows()
    assert [v.name for v in rows] == ["ce", "kd", "fp-sample", "fp-replay", "file-kd-mean", "file-kd-full"]
    tuned = [v for v in rows if len(v.grid) > 1]
    assert {len(v.grid) for v in tuned} == {4}  # one budget for every tuned method
    kd = {v.name: v for v in rows}["kd"]
    assert [(s["kd_T"], s["kd_weight"]) for s in kd.grid] == [(1, 0.9), (2, 0.9), (4, 0.9), (8, 0.9)]
    fp = {v.name: v for v in rows}["fp-sample"]
    assert [s["lambda"] for s in fp.grid] == [3, 10, 30, 100] and {s["warmup"] for s in fp.grid} == {None}
    assert eff.BY_NAME["kd"].grid == eff.KD_GRID  # the override does not leak into regime b
    assert set(c.files()) == {"fp", "fp-mean", "fp-replay-full"}  # no top-k build: no row reads it
    assert set(eff.REGIMES["b"].files()) == set(eff.FILES)
    assert c.subset == ".data/c10-1000" and c.out == Path("experiments/efficacy-runs/c")


def test_status_and_queue_follow_the_regime_rows(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    c = eff.REGIMES["c"]
    queue = eff.next_jobs(c, set())
    assert {j.variant.name for j in queue} == {"ce", "kd", "fp-sample", "fp-replay", "file-kd-mean", "file-kd-full"}
    assert len([j for j in queue if j.variant.name == "kd"]) == 4
    assert "relational" not in eff.status(c) and "jobs: {'todo': 25}" in eff.status(c)


@pytest.mark.skipif(not (ROOT / ".git").exists(), reason="not a git checkout")
def test_git_keeps_each_students_log_and_command_only():
    import subprocess

    base = "experiments/efficacy-runs/c"
    kept = [f"{base}/seeds/kd/s1/log.jsonl", f"{base}/tune/kd/T1-w0.9/cmd.txt", f"{base}/files/fp.json"]
    dropped = [f"{base}/seeds/kd/s1/student.pt", f"{base}/seeds/kd/s1/stderr.txt", f"{base}/files/fp.h5"]
    for path in kept + dropped:
        ignored = subprocess.run(["git", "-C", str(ROOT), "check-ignore", "-q", "--no-index", path]).returncode == 0
        assert ignored == (path in dropped), path


@pytest.mark.parametrize("name", sorted(eff.REGIMES))
def test_train_argv_is_a_valid_train_py_command(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    regime = eff.REGIMES[name]
    for v in regime.rows():
        for setting in v.grid:
            argv = eff.train_argv(regime, v, setting, 3, Path("x"))
            args = train.parse_args(argv[2:])  # argparse accepts it
            assert args.seed == 3 and args.val_per_class == regime.val_per_class and args.method == v.method
            if "kd_weight" in setting:
                assert args.kd_weight + args.kd_ce_weight == pytest.approx(1.0)
                assert args.kd_T == setting["kd_T"]
            if "lambda" in setting:
                assert args.lam == setting["lambda"]
                assert args.warmup == setting.get("warmup")


def test_selection_uses_validation_only_and_breaks_ties_by_grid_order(regime):
    v = eff.BY_NAME["kd"]
    jobs = eff.tuning_jobs(regime, v)
    assert eff.chosen_setting(regime, v) is None  # nothing finished
    for i, job in enumerate(jobs):
        # the test accuracy is highest where validation is lowest: selection must not look at it
        _finish(job, val=40.0 + (i in (2, 5)) * 5, test=90.0 - i)
    setting, tried = eff.chosen_setting(regime, v)
    assert setting == v.grid[2]  # 45.0 twice: the first in grid order
    assert [t[1] for t in tried] == [45.0 if i in (2, 5) else 40.0 for i in range(len(jobs))]


def test_queue_tunes_then_seeds_variant_by_variant(regime):
    first = eff.next_jobs(regime, set())
    assert [j.variant.name for j in first[: len(eff.SEEDS)]] == ["ce"] * len(eff.SEEDS)
    assert {j.seed for j in first if j.variant.name == "kd"} == {eff.TUNE_SEED}
    kd = eff.BY_NAME["kd"]
    for job in eff.tuning_jobs(regime, kd):
        _finish(job, val=50.0)
    queue = eff.next_jobs(regime, set())
    kd_seeds = [j for j in queue if j.variant.name == "kd"]
    assert [j.seed for j in kd_seeds] == list(eff.SEEDS) and all(j.setting == kd.grid[0] for j in kd_seeds)
    names = [j.variant.name for j in queue]
    assert names.index("kd") < names.index("fp-sample")  # kd's seeds come before the next variant
    busy = {kd_seeds[0].out}
    assert kd_seeds[0].out not in {j.out for j in eff.next_jobs(regime, busy)}


def test_a_recently_written_log_counts_as_running(regime):
    job = eff.seed_jobs(regime, eff.BY_NAME["ce"], {})[0]
    job.out.mkdir(parents=True)
    log = job.out / "log.jsonl"
    log.write_text('{"epoch": 1}\n')
    assert eff.state(job) == "running"
    old = time.time() - eff.LIVE_SECONDS - 5
    os.utime(log, (old, old))
    assert eff.state(job) == "todo"  # an abandoned run is started again
    _finish(job, 50.0)
    assert eff.state(job) == "done"


def test_report_pairs_by_seed_with_a_t_interval(regime):
    ce, kd = eff.BY_NAME["ce"], eff.BY_NAME["kd"]
    for job in eff.tuning_jobs(regime, kd):
        _finish(job, val=50.0)
    ce_acc = [50.0, 52.0, 49.0, 51.0, 48.0]
    kd_acc = [53.0, 53.5, 52.0, 55.0, 50.0]
    for job, a in zip(eff.seed_jobs(regime, ce, {}), ce_acc):
        _finish(job, val=0.0, test=a)
    for job, a in zip(eff.seed_jobs(regime, kd, kd.grid[0]), kd_acc):
        _finish(job, val=0.0, test=a, forwards=75_000)
    text = eff.report(regime)
    diffs = [k - c for k, c in zip(kd_acc, ce_acc)]
    half = 2.776 * statistics.stdev(diffs) / math.sqrt(5)  # t_{0.975, 4}
    m = statistics.mean(diffs)
    row = next(line for line in text.splitlines() if line.startswith("| kd |"))
    assert f"{m:+.2f} [{m - half:+.2f}, {m + half:+.2f}]" in row and "within noise" not in row
    assert f"{statistics.mean(kd_acc):.2f} ({statistics.stdev(kd_acc):.2f})" in row and "75,000" in row
    assert "**T1-w0.5 50.0**" in text  # the chosen setting, in bold
    assert "--kd-T 1 --kd-weight 0.5 --kd-ce-weight 0.5" in text  # the command of the cell
