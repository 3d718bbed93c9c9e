"""experiments/collect_results.py: paired t-intervals and selection by validation accuracy, on made-up logs."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load():
    spec = importlib.util.spec_from_file_location(
        "fpkit_experiments_collect", ROOT / "experiments" / "collect_results.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


cr = _load()


def test_t_interval_by_hand():
    # diffs 1, 2, 3: mean 2, sd 1, t_{0.975, 2} = 4.303 -> half width 4.303 / sqrt(3) = 2.48434
    m, lo, hi = cr.t_interval([1.0, 2.0, 3.0])
    assert m == 2.0 and lo == pytest.approx(2 - 4.303 / math.sqrt(3)) and hi == pytest.approx(2 + 2.484342, abs=1e-5)
    # five seeds: diffs 0.5, 1.5, 1.0, 2.0, 1.0 -> mean 1.2, sd sqrt(0.325), t_{0.975, 4} = 2.776
    m, lo, hi = cr.t_interval([0.5, 1.5, 1.0, 2.0, 1.0])
    half = 2.776 * math.sqrt(0.325) / math.sqrt(5)
    assert m == pytest.approx(1.2) and (lo, hi) == pytest.approx((1.2 - half, 1.2 + half))
    assert cr.t_interval([4.0]) == (4.0, 4.0, 4.0)
    # beyond the table: the expansion against known quantiles (t_{0.975, 40} = 2.0211, 120: 1.9799)
    assert cr.t975(40) == pytest.approx(2.0211, abs=1e-3) and cr.t975(120) == pytest.approx(1.9799, abs=1e-3)


def test_within_noise_flag():
    assert cr.describe_difference([1.0, 2.0, 3.0]) == "+2.00 [-0.48, +4.48] within noise"
    assert cr.describe_difference([2.0, 3.0, 4.0]) == "+3.00 [+0.52, +5.48]"
    assert "no interval" in cr.describe_difference([1.0])


def _final(method, seed, test, val=None, **hp):
    rec = {"final": True, "method": method, "seed": seed, "test_top1": test, "teacher_forwards": 0, "hparams": hp}
    if val is not None:
        rec["val_top1"] = val
    return rec


def test_paired_differences_use_the_same_seed():
    ce = [_final("ce", 0, 50.0), _final("ce", 1, 60.0)]
    kd = [_final("kd", 1, 61.0), _final("kd", 0, 52.0), _final("kd", 2, 99.0)]
    assert cr.paired_differences(kd, ce) == [1.0, 2.0]


def test_selection_looks_at_validation_only(tmp_path: Path):
    records = [
        # T=1 has the better test accuracy but the worse validation accuracy: T=4 must win
        *[_final("kd", s, 80.0, val=60.0, kd_T=1.0) for s in (0, 1)],
        *[_final("kd", s, 70.0 + s, val=65.0, kd_T=4.0) for s in (0, 1)],
        *[_final("ce", s, 68.0, val=64.0) for s in (0, 1)],
        _final("fp-sample", 0, 90.0, val=None, lam=10.0),  # no validation: never selected
    ]
    chosen = cr.select_settings(records)
    assert set(chosen) == {"kd", "ce"}
    key, rs, tried = chosen["kd"]
    assert json.loads(key) == {"kd_T": 4.0} and len(tried) == 2 and [r["test_top1"] for r in rs] == [70.0, 71.0]
    # the same through log files and the --select table
    for i, r in enumerate(records):
        d = tmp_path / f"s{r['seed']}" / f"{r['method']}-{i}"
        d.mkdir(parents=True)
        (d / "log.jsonl").write_text(json.dumps({"epoch": 1}) + "\n" + json.dumps(r) + "\n")
    table = cr.selected_table([tmp_path])
    kd_row = next(line for line in table.splitlines() if line.startswith("| kd "))
    assert '{"kd_T": 4.0}' in kd_row and "| 70.50 |" in kd_row and "+2.50 [" in kd_row
