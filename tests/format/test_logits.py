"""Format 1.3's logit tables (fpkit/format/logits.py, formats/SPEC.md section 4b)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace

import h5py
import numpy as np
import pytest

from fpkit.errors import (
    ConfigError,
    CorruptFileError,
    FormatError,
    MismatchError,
    NonFiniteError,
    UnknownFieldError,
)
from fpkit.format import FingerprintWriter, open_fingerprints, verify_fingerprints
from fpkit.format.logits import LogitsSpec, sample_draws, topk
from fpkit.testing import (
    example_contents,
    example_layers,
    example_rows,
    example_view_params,
    write_logit_file,
    write_rows,
)

N, C, K = 10, 5, 3


def _write(path, spec, z=None, *, replay=True):
    labels = np.arange(N) % C
    con = replace(
        example_contents(example_layers(1), labels, num_classes=C, views_per_sample=K if replay else None), logits=spec
    )
    shape = (N, K, C) if spec.per_view else (N, C)
    z = np.random.default_rng(0).standard_normal(shape).astype(np.float32) * 3 if z is None else z
    kw = dict(views={"layer1": example_rows(N, 8, 1, K)}, view_params=example_view_params(N, K, 0)) if replay else {}
    write_logit_file(path, con, {"layer1": example_rows(N, 8, 0)}, z, **kw)
    return z


@pytest.mark.parametrize(
    "spec",
    [
        LogitsSpec("mean"),
        LogitsSpec("full", dtype="float32"),
        LogitsSpec("topk", 2),
        LogitsSpec("sample", 4, "float16", 2.0, 3),
    ],
    ids=lambda s: s.kind,
)
def test_round_trip(tmp_path, spec):
    z = _write(tmp_path / "fp.h5", spec, replay=spec.per_view)
    fp = open_fingerprints(tmp_path / "fp.h5")
    assert fp.format_version == "1.3" and fp.logits_kind == spec.kind
    assert verify_fingerprints(tmp_path / "fp.h5") == []
    got = fp.logit_targets()
    if spec.kind == "mean":
        assert np.array_equal(got, z.astype(np.float16).astype(np.float32))
    elif spec.kind == "full":
        assert np.array_equal(got, z)
    elif spec.kind == "topk":
        values, idx = got
        assert np.array_equal(idx, np.argsort(-z, axis=-1, kind="stable")[..., :2])
        assert np.array_equal(values, np.take_along_axis(z, idx, -1).astype(np.float16).astype(np.float32))
    else:
        assert got.shape == (N, K, 4) and np.array_equal(got, sample_draws(z, 4, 2.0, 3, 0))
    # what a 1.2 reader sees: the group is marked, the digests are not in `datasets`
    with h5py.File(tmp_path / "fp.h5", "r") as f:
        meta = json.loads(f.attrs["metadata"])
        assert meta["logits"]["must_understand"] is False and f["logits"].attrs["must_understand"] is np.False_
        assert not [p for p in meta["datasets"] if p.startswith("logits")]


def test_files_without_logits_stay_as_they_were(tmp_path):
    labels = np.arange(N) % C
    write_rows(
        tmp_path / "a.h5", example_contents(example_layers(1), labels, num_classes=C), {"layer1": example_rows(N, 8, 0)}
    )
    fp = open_fingerprints(tmp_path / "a.h5")
    assert fp.format_version == "1.1" and fp.logits_info is None and "logits" not in fp.metadata.extras
    with pytest.raises(ConfigError, match="--logits"):
        fp.logit_targets()


def test_sample_draws_are_unbiased_and_batch_independent():
    z = np.random.default_rng(1).standard_normal((4, 2, 6)).astype(np.float32) * 2
    a = sample_draws(z, 20000, 2.0, 5, 10)
    assert np.array_equal(a[2:], sample_draws(z[2:], 20000, 2.0, 5, 12))  # any batching, same draws
    p = np.exp(z / 2.0) / np.exp(z / 2.0).sum(-1, keepdims=True)
    freq = np.stack([(a == c).mean(-1) for c in range(6)], -1)
    assert np.abs(freq - p).max() < 0.015
    v, i = topk(np.array([[1.0, 3.0, 3.0, 0.0]], dtype=np.float32), 2)
    assert i.tolist() == [[1, 2]] and v.tolist() == [[3.0, 3.0]]  # ties: the lower index first


@pytest.mark.parametrize(
    "text, want",
    [
        ("none", None),
        ("mean", LogitsSpec("mean")),
        ("full", LogitsSpec("full")),
        ("topk:5", LogitsSpec("topk", 5)),
        ("sample:32", LogitsSpec("sample", 32, temperature=1.0, seed=0)),
        ("sample:32:4", LogitsSpec("sample", 32, temperature=4.0, seed=0)),
    ],
)
def test_parse(text, want):
    assert LogitsSpec.parse(text) == want


@pytest.mark.parametrize("text", ["topk", "topk:x", "sample", "mean:3", "all", "sample:1:2:3"])
def test_parse_refuses(text):
    with pytest.raises(ConfigError, match="topk:K"):
        LogitsSpec.parse(text)


def test_writer_refusals(tmp_path):
    labels = np.arange(N) % C
    base = example_contents(example_layers(1), labels, num_classes=C)
    with pytest.raises(ConfigError, match="replay"):
        FingerprintWriter(tmp_path / "a.h5", replace(base, logits=LogitsSpec("full")))
    replay = example_contents(example_layers(1), labels, num_classes=C, views_per_sample=K)
    with pytest.raises(ConfigError, match=r"k in \[1, 5\]"):
        FingerprintWriter(tmp_path / "a.h5", replace(replay, logits=LogitsSpec("topk", 6)))
    with pytest.raises(ConfigError, match="give contents.logits"):
        FingerprintWriter(tmp_path / "a.h5", replace(base, extra={"logits": {"must_understand": False}}))
    with pytest.raises(ConfigError, match="need format 1.3"):
        FingerprintWriter(tmp_path / "a.h5", replace(base, logits=LogitsSpec("mean")), version="1.2")
    with FingerprintWriter(tmp_path / "a.h5", replace(base, logits=LogitsSpec("mean"))) as w:
        rows = {"layer1": example_rows(2, 8, 0)}
        with pytest.raises(MismatchError, match="pass logits="):
            w.append(rows)
        with pytest.raises(MismatchError, match=r"\[2, 5\]"):
            w.append(rows, logits=np.zeros((2, 4), np.float32))
        bad = np.zeros((2, 5), np.float32)
        bad[1, 0] = 1e6
        with pytest.raises(NonFiniteError, match=r"samples \[1\].*float32"):
            w.append(rows, logits=bad)
        w.abort()
    assert not (tmp_path / "a.h5").exists()


def _rehash(f, meta):
    text = json.dumps(meta, sort_keys=True, separators=(",", ":"))
    f.attrs["metadata"] = text
    f.attrs["complete"] = hashlib.sha256(text.encode()).hexdigest()


def test_reader_refusals(tmp_path):
    p = tmp_path / "fp.h5"
    _write(p, LogitsSpec("topk", 2))
    with h5py.File(p, "r+") as f:  # a file that says 1.2 but holds logits does not follow its version
        f.attrs["format_version"] = "1.2"
    with pytest.raises(FormatError, match="needs format 1.3"):
        open_fingerprints(p)
    _write(p, LogitsSpec("topk", 2))
    with h5py.File(p, "r+") as f:  # the group's marker gone: an unknown object
        f["logits"].attrs["must_understand"] = 0
    with pytest.raises(UnknownFieldError):
        open_fingerprints(p)
    _write(p, LogitsSpec("topk", 2))
    with h5py.File(p, "r+") as f:
        f["logits/extra"] = np.zeros(3)
    with pytest.raises(UnknownFieldError, match="logits/extra"):
        open_fingerprints(p)
    _write(p, LogitsSpec("topk", 2))
    with h5py.File(p, "r+") as f:  # the field without its group
        meta = json.loads(f.attrs["metadata"])
        del f["logits"]
    with pytest.raises(FormatError, match="no marked group"):
        open_fingerprints(p)
    _write(p, LogitsSpec("topk", 2))
    with h5py.File(p, "r+") as f:  # the group without its field
        meta = json.loads(f.attrs["metadata"])
        del meta["logits"]
        _rehash(f, meta)
    with pytest.raises(FormatError, match="without the metadata field"):
        open_fingerprints(p)
    _write(p, LogitsSpec("topk", 2))
    with h5py.File(p, "r+") as f:  # indices edited, digest kept: refused by the SHA-256
        d = f["logits/topk_indices"]
        d[0, 0, 0] = (d[0, 0, 0] + 1) % C
    with pytest.raises(CorruptFileError, match="topk_indices"):
        open_fingerprints(p)
    assert any("topk_indices" in x for x in verify_fingerprints(p))


def test_per_view_logits_are_left_out_with_load_views_false(tmp_path):
    _write(tmp_path / "fp.h5", LogitsSpec("full"))
    fp = open_fingerprints(tmp_path / "fp.h5", load_views=False)
    assert fp.logits_kind == "full" and not [k for k in fp.arrays if k.startswith("logits")]
    with pytest.raises(ConfigError, match="load_views=True"):
        fp.logit_targets()
    _write(tmp_path / "m.h5", LogitsSpec("mean"), replay=False)
    assert open_fingerprints(tmp_path / "m.h5", load_views=False).logits_kind == "mean"


def test_audit_says_what_a_logit_table_exposes(tmp_path):
    from fpkit.audit import audit_file, format_audit

    _write(tmp_path / "fp.h5", LogitsSpec("topk", 2))
    rep = audit_file(tmp_path / "fp.h5")
    assert rep["logits"]["kind"] == "topk" and "model-extraction" in rep["logits"]["finding"]
    assert "--redact does not hide" in rep["logits"]["redact"]
    assert "logits (topk, float16)" in format_audit(rep)
    _write(tmp_path / "m.h5", LogitsSpec("mean"), replay=False)
    labels = np.arange(N) % C
    write_rows(
        tmp_path / "a.h5", example_contents(example_layers(1), labels, num_classes=C), {"layer1": example_rows(N, 8, 0)}
    )
    assert audit_file(tmp_path / "a.h5")["logits"] is None


def test_inspect_shows_the_logit_table(tmp_path):
    from fpkit.summary import format_summary, summarize

    _write(tmp_path / "fp.h5", LogitsSpec("sample", 4, "float16", 2.0, 3))
    s = summarize(open_fingerprints(tmp_path / "fp.h5"))
    assert (
        s["logits"]["kind"] == "sample" and s["logits"]["datasets"]["logits/sample_indices"]["bytes"] == N * K * 4 * 4
    )
    assert "logits      sample (float16, k 4, temperature 2.0, seed 3)" in format_summary(s)
