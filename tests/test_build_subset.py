"""fpkit build --samples START:STOP / --limit N (issue 11, item 5): the part of the split, its
record in the file (format 1.1's dataset.subset), FingerprintDataset's pairing, --resume, and the
teacher forwards and time estimate said before and during the work."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
import torch
from _support import SYNTHETIC_DATA, build_options
from click.testing import CliRunner

from fpkit import FingerprintDataset
from fpkit.build import BuildInterrupted, BuildOptions, build, workstore
from fpkit.build.plan import BuildPlan
from fpkit.build.progress import Progress, forwards_line
from fpkit.build.subset import parse_samples, sample_range
from fpkit.cli import main
from fpkit.datasets import open_source
from fpkit.errors import ConfigError, MismatchError, OptionError
from fpkit.format import Subset, open_fingerprints

DATA = SYNTHETIC_DATA


def opts(tmp_path, teacher, **kw) -> BuildOptions:
    return build_options(tmp_path, teacher, **{"chunk_size": 4, **kw})


def test_a_range_is_the_same_rows_as_the_whole_split(tmp_path, tiny_teacher):
    full = open_fingerprints(build(opts(tmp_path, tiny_teacher, output=str(tmp_path / "all.h5")), quiet=True).path)
    lines: list[str] = []
    res = build(opts(tmp_path, tiny_teacher, samples="4:16"), log=lines.append)
    fp = open_fingerprints(res.path)
    assert fp.format_version == "1.1" and fp.num_samples == 12 and res.num_samples == 12
    assert fp.metadata.dataset.subset == Subset(4, 16, 24)
    assert np.array_equal(fp.labels, full.labels[4:16]) and np.array_equal(fp.sample_digests, full.sample_digests[4:16])
    assert "[fpkit build] 12 samples (4:16 of 24) x 3 views = 36 teacher forwards" in lines


def test_a_range_with_all_views_is_the_whole_splits_rows(tmp_path, tiny_teacher):
    """Random views are drawn by the sample's row in the file (SPEC section 5); with every view of
    the policy the rows are those of the whole split's build."""
    full = build(opts(tmp_path, tiny_teacher, output=str(tmp_path / "all.h5"), views="all", padding=1), quiet=True)
    part = build(opts(tmp_path, tiny_teacher, samples="4:16", views="all", padding=1), quiet=True)
    a, b = open_fingerprints(full.path), open_fingerprints(part.path)
    assert np.allclose(b.table(), a.table()[4:16], atol=1e-6)


def test_limit_and_whole_split(tmp_path, tiny_teacher):
    fp = open_fingerprints(build(opts(tmp_path, tiny_teacher, limit=10), quiet=True).path)
    assert fp.num_samples == 10 and fp.metadata.dataset.subset == Subset(0, 10, 24)
    # a limit beyond the split takes the split: a plain build, no subset recorded
    fp = open_fingerprints(build(opts(tmp_path, tiny_teacher, limit=100, force=True), quiet=True).path)
    assert fp.num_samples == 24 and fp.metadata.dataset.subset is None


def test_default_output_names_the_range(tmp_path, tiny_teacher, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = build(opts(tmp_path, tiny_teacher, output=None, samples=":8"), quiet=True)
    assert res.path.name == "teacher-24x10-train-0to8.h5"


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(samples="5"), "START:STOP"),
        (dict(samples="-1:4"), "START:STOP"),
        (dict(samples="8:4"), "larger than START"),
        (dict(samples=":"), "START:STOP"),
        (dict(samples="0:25"), r"does not fit synthetic.*24 samples.*--samples 0:24"),
        (dict(samples="30:"), "does not fit"),
        (dict(limit=0), "--limit must be an integer >= 1"),
        (dict(limit=5, samples="0:5"), "pass only one"),
    ],
)
def test_bad_ranges_are_usage_errors(tmp_path, tiny_teacher, kw, match):
    with pytest.raises(OptionError, match=match):
        build(opts(tmp_path, tiny_teacher, **kw), quiet=True)
    assert not list(tmp_path.glob("*.h5")) and not list(tmp_path.glob(".*partial"))


def test_parse_samples():
    assert parse_samples("0:5000") == (0, 5000) and parse_samples(":7") == (0, 7) and parse_samples("3:") == (3, None)
    assert sample_range(None, None, 10, "x") is None and sample_range("0:10", None, 10, "x") is None
    assert sample_range(None, 4, 10, "x") == (0, 4) and sample_range("2:", None, 10, "x") == (2, 10)
    with pytest.raises(ConfigError):
        parse_samples("a:b")


def test_resume_with_another_range_is_refused(tmp_path, tiny_teacher, monkeypatch):
    real = workstore.WorkStore.mark_done

    def mark(self, c, correct, count):
        real(self, c, correct, count)
        raise KeyboardInterrupt

    monkeypatch.setattr(workstore.WorkStore, "mark_done", mark)
    with pytest.raises(BuildInterrupted):
        build(opts(tmp_path, tiny_teacher, samples="0:12"), quiet=True)
    monkeypatch.undo()
    with pytest.raises(MismatchError, match=r"--samples/--limit was samples 0:12, now samples 4:16"):
        build(opts(tmp_path, tiny_teacher, samples="4:16", resume=True), quiet=True)
    with pytest.raises(MismatchError, match=r"--samples/--limit was samples 0:12, now the whole split"):
        build(opts(tmp_path, tiny_teacher, resume=True), quiet=True)
    res = build(opts(tmp_path, tiny_teacher, limit=12, resume=True), quiet=True)  # the same range: continues
    assert res.chunks_resumed == 1 and open_fingerprints(res.path).metadata.dataset.subset == Subset(0, 12, 24)


def test_plans_without_subset_still_load():
    plan = {
        "teacher_sha256": "0" * 64,
        "dataset": {"name": "x"},
        "num_samples": 3,
        "labels_sha256": "0" * 64,
        "layers": [],
        "views": dict(count=1, per_sample=1, seed=0, padding=4, flip=True, replay=False),
        "samples_per_step": 1,
        "chunk_size": 1,
        "autocast": None,
        "storage": {"dtype": "float16", "codec": "none", "tables": ["sample"]},
    }
    assert BuildPlan.from_json(plan).subset is None


def test_fingerprint_dataset_pairs_a_range(tmp_path, tiny_teacher):
    res = build(opts(tmp_path, tiny_teacher, samples="4:16"), quiet=True)
    full = open_source(DATA).torch_dataset()
    ds = FingerprintDataset(res.path, full, check_samples=12)  # the whole split: item i is sample 4 + i
    fp = open_fingerprints(res.path)
    assert len(ds) == 12 and ds.offset == 4
    img, label, target = ds[0]
    assert label == full[4][1] and np.array_equal(np.asarray(img), np.asarray(full[4][0]))
    assert np.array_equal(target.numpy(), fp.table()[0])
    with pytest.raises(IndexError):
        ds[12]
    cut = torch.utils.data.Subset(full, range(4, 16))  # exactly the samples: item i is cut[i]
    assert FingerprintDataset(res.path, cut, check_samples=12).offset == 0
    with pytest.raises(MismatchError, match=r"samples 4:16 of a split of 24.*wrap that whole split"):
        FingerprintDataset(res.path, torch.utils.data.Subset(full, range(20)))
    with pytest.raises(MismatchError, match="samples 4:16 of a split of 24.*pixels of sample|label of sample"):
        FingerprintDataset(res.path, torch.utils.data.Subset(full, range(0, 12)), check_samples=12)


def test_forwards_line_and_estimate(monkeypatch):
    assert forwards_line(500, 13_122) == "[fpkit build] 500 samples x 13,122 views = 6,561,000 teacher forwards"
    clock = iter([0.0, 1.0, 3.0, 4.0, 100.0])
    monkeypatch.setattr("fpkit.build.progress.time.perf_counter", lambda: next(clock))
    out = io.StringIO()
    p = Progress(500, quiet=False, stream=out)
    p.update(10, 8)  # at 1 s: too early to estimate
    p.update(10, 8)  # at 3 s: 20 samples took 3 s, 480 left: about 72 s
    p.update(10, 8)
    text = out.getvalue()
    assert text.count("estimate") == 1
    assert re.search(r"estimate: about 72 s left for the teacher loop \(the first 20 samples took 3.0 s\)", text)


def test_cli_samples_option(tmp_path, tiny_teacher):
    out = tmp_path / "fp.h5"
    args = ["build", str(tiny_teacher), DATA, "-o", str(out), "--views", "1", "--device", "cpu"]
    r = CliRunner().invoke(main, [*args, "--samples", "2:6"])
    assert r.exit_code == 0, r.output
    assert "4 samples (2:6 of 24) x 1 view = 4 teacher forwards" in r.output
    assert open_fingerprints(out).metadata.dataset.subset == Subset(2, 6, 24)
    r = CliRunner().invoke(main, [*args, "--samples", "2:99", "--force"])
    assert r.exit_code == 2 and "does not fit" in r.output
