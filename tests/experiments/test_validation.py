"""experiments/train.py's validation split and --time-budget, on tiny synthetic data (1 epoch, CPU).

``synthetic:64x4`` is the first 64 images of ``synthetic:160x4`` (same generator, same seed), so
validating on the latter's train split must skip exactly those 64.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fpkit.datasets import open_source
from fpkit.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--data", "synthetic:64x4", "--epochs", "1", "--batch-size", "16", "--device", "cpu", "-q"]
VAL = ["--val-data", "synthetic:160x4", "--val-per-class", "5"]


def _load_script():
    spec = importlib.util.spec_from_file_location("fpkit_experiments_train_val", ROOT / "experiments" / "train.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


train = _load_script()


def _sources():
    kw = dict(download=False, normalize=None)
    return open_source("synthetic:64x4", "data", "train", **kw), open_source("synthetic:160x4", "data", "train", **kw)


def test_split_is_disjoint_deterministic_and_balanced():
    small, big = _sources()
    train_images = small.load_all()
    assert torch.equal(big.get_batch(range(64)), train_images)  # the premise of these tests
    a = train.select_validation(big, train_images, 5, seed=0)
    b = train.select_validation(big, train_images, 5, seed=0)
    c = train.select_validation(big, train_images, 5, seed=1)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    for idx in (a, c):
        assert len(idx) == 20 and len(set(idx.tolist())) == 20
        assert idx.min() >= 64  # never one of the training images
        assert np.bincount(big.labels[idx], minlength=4).tolist() == [5, 5, 5, 5]


def test_too_few_images_outside_the_training_set():
    small, big = _sources()
    with pytest.raises(ConfigError, match="outside the training set"):
        train.select_validation(big, small.load_all(), 25, seed=0)  # 96 spare images = 24 per class
    with pytest.raises(ConfigError, match="outside the training set"):
        train.select_validation(small, small.load_all(), 1, seed=0)  # the training split itself


def test_log_records_val_every_epoch_and_test_once(tmp_path: Path):
    torch.set_num_threads(1)
    out = tmp_path / "ce"
    argv = ["student", "--method", "ce", "--arch", "resnet8", "--out", str(out), *TINY, *VAL]
    assert train.main(argv) == 0
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    epoch, final = records[0], records[-1]
    assert "val_top1" in epoch and "test_top1" not in epoch
    assert final["final"] and 0 <= final["val_top1"] <= 100 and 0 <= final["test_top1"] <= 100
    assert final["best_val_top1"] == final["val_top1"] and final["best_val_epoch"] == 1
    assert final["val_images"] == 20 and final["val_data"] == "synthetic:160x4" and final["val_seed"] == 0
    assert final["hparams"] == {}
    # the same draw in a second run; another --val-seed gives another
    again = tmp_path / "ce2"
    assert train.main(["student", "--method", "ce", "--arch", "resnet8", "--out", str(again), *TINY, *VAL]) == 0
    second = json.loads((again / "log.jsonl").read_text().splitlines()[-1])
    assert second["val_indices_sha256"] == final["val_indices_sha256"]


def test_without_validation_the_log_is_unchanged(tmp_path: Path):
    torch.set_num_threads(1)
    out = tmp_path / "ce"
    assert train.main(["student", "--method", "ce", "--arch", "resnet8", "--out", str(out), *TINY]) == 0
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert "test_top1" in records[0] and "val_top1" not in records[0] and "val_top1" not in records[-1]


def test_time_budget_derives_the_epochs(tmp_path: Path):
    torch.set_num_threads(1)
    out = tmp_path / "tb"
    argv = ["student", "--method", "ce", "--arch", "resnet8", "--out", str(out), *TINY, "--time-budget", "0.01"]
    argv[argv.index("--epochs") + 1] = "50"
    assert train.main(argv) == 0
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert records[0]["budget_epochs"] == 1 and records[-1]["epochs"] == 1 and len(records) == 2


def test_kd_options_are_recorded():
    args = train.parse_args(["student", "--method", "kd", "--teacher", "t.pt", "--kd-T", "2", "--kd-weight", "0.5"])
    assert train.hparams(args) == {"kd_T": 2.0, "kd_weight": 0.5, "kd_ce_weight": 0.1}
    args = train.parse_args(
        ["student", "--method", "fp-sample", "--fingerprints", "f.h5", "--lambda", "3", "--warmup", "0"]
    )
    assert train.hparams(args) == {"lambda": 3.0, "warmup": 0}
