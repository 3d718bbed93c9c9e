"""`fpkit audit`: what a fingerprint file reveals, measured on the file or estimated by simulation."""

from __future__ import annotations

import json
import signal

import _trust_helpers as H
import numpy as np
import pytest
from click.testing import CliRunner

from fpkit.audit import audit_file, format_audit
from fpkit.cli import main
from fpkit.format import Accuracy, open_fingerprints

SECRET_SEED = 0x5DEECE66D_1234  # far beyond the audit's seed search


def cli(*args):
    old = signal.getsignal(signal.SIGTERM)
    try:
        return CliRunner().invoke(main, [str(a) for a in args], prog_name="fpkit")
    finally:
        signal.signal(signal.SIGTERM, old)


def _table(report, kind="sample", layer=0):
    return next(t for t in report["layers"][layer]["tables"] if t["kind"] == kind)


def test_exact_reconstruction_r_ge_d(tmp_path):
    path = H.write_file(tmp_path / "fp.h5", n=60, d=64, r=128, dtype="float32", seeds=[7])
    rep = audit_file(path)
    lay = rep["layers"][0]
    assert (lay["d"], lay["r"], lay["r_ge_d"]) == (64, 128, True)
    assert lay["projection"]["status"] == "stored" and lay["projection"]["sha256_ok"]
    assert lay["projection"]["derivable_from_seed"] is True
    t = _table(rep)
    assert t["reconstruction"]["kind"] == "exact"
    assert t["reconstruction"]["max_rel_error"] < 1e-5
    assert "feature directions recoverable exactly up to the view-averaging" in t["finding"]
    assert t["verdict"].startswith("EXPOSED")
    assert "class means" in _table(rep, "class")["finding"]
    # the claim holds: the true features come back from the file alone
    fp = open_fingerprints(path)
    f_hat = fp.table("sample").astype(np.float64) @ np.linalg.pinv(fp.projection().astype(np.float64))
    truth = H.relu_features(60, 64, 0)
    assert np.allclose(f_hat, truth, atol=1e-5)
    text = format_audit(rep)
    assert "EXPOSED" in text and "private" not in text.lower()


def test_float16_and_int8_files_are_exact_up_to_rounding(tmp_path):
    for dtype, bound in (("float16", 5e-3), ("int8", 5e-2)):
        rep = audit_file(
            H.write_file(tmp_path / f"{dtype}.h5", d=16, r=32, dtype=dtype, codec="zstd" if dtype == "int8" else "none")
        )
        t = _table(rep)
        assert t["reconstruction"]["kind"] == "exact" and t["reconstruction"]["max_rel_error"] < bound
        assert "storage rounding" in t["finding"]


def test_r_lt_d_is_an_estimate(tmp_path):
    path = H.write_file(tmp_path / "fp.h5", n=30, d=64, r=16, dtype="float16")
    rep = audit_file(path)
    t = _table(rep)
    rec = t["reconstruction"]
    assert rec["kind"] == "estimate"
    assert 0.3 < rec["estimated_mean_cosine"] < 0.95
    assert "ESTIMATED" in t["finding"] and "published attacks do better" in t["finding"]
    assert t["verdict"].startswith("LEAKS")
    # the estimate is about right for this file's own features (known here, not to the audit)
    fp = open_fingerprints(path)
    f_hat = fp.table("sample").astype(np.float64) @ np.linalg.pinv(fp.projection().astype(np.float64))
    truth = H.relu_features(30, 64, 0)
    cos = np.sum(f_hat * truth, 1) / np.linalg.norm(f_hat, axis=1) / np.linalg.norm(truth, axis=1)
    assert abs(cos.mean() - rec["estimated_mean_cosine"]) < 0.1


def test_redacted_with_secret_seed(tmp_path):
    path = H.write_file(tmp_path / "fp.h5", d=64, r=128, redacted=True, seeds=[SECRET_SEED], k=2)
    rep = audit_file(path)
    lay = rep["layers"][0]
    assert lay["projection"]["status"] == "redacted" and lay["projection"]["stored"] is False
    for kind in ("sample", "class", "views"):
        t = _table(rep, kind)
        assert t["reconstruction"]["kind"] == "none"
        assert "R not stored" in t["finding"] and "not a privacy guarantee" in t["finding"]
        assert "relational loss is the only use" in t["verdict"]
    assert rep["metadata"]["view_params_stored"] is True


def test_redacted_with_guessable_seed_is_recovered(tmp_path):
    """--redact drops R and the seed but keeps SHA-256(R): a small seed is found by trying."""
    path = H.write_file(tmp_path / "fp.h5", d=32, r=64, redacted=True, seeds=[5], dtype="float32")
    rep = audit_file(path)
    p = rep["layers"][0]["projection"]
    assert p["status"] == "recovered" and p["recovered_seed"] == 5
    assert "redaction gives no protection" in p["how"]
    assert _table(rep)["reconstruction"]["kind"] == "exact"


def test_build_redact_seed_is_secret_unless_given(tiny_teacher, tmp_path):
    out = tmp_path / "fp.h5"
    res = cli("build", tiny_teacher, "synthetic:12x10", "--redact", "--views", "1", "--device", "cpu", "-o", out, "-q")
    assert res.exit_code == 0, res.output
    rep = audit_file(out)
    assert rep["layers"][0]["projection"]["status"] == "redacted"  # a secret random seed, not 0
    out0 = tmp_path / "fp0.h5"
    res = cli(
        "build",
        tiny_teacher,
        "synthetic:12x10",
        "--redact",
        "--seed",
        "0",
        "--views",
        "1",
        "--device",
        "cpu",
        "-o",
        out0,
        "-q",
    )
    assert res.exit_code == 0, res.output
    assert audit_file(out0)["layers"][0]["projection"]["status"] == "recovered"  # a guessable seed is found
    out2 = tmp_path / "fp2.h5"
    res = cli(
        "build",
        tiny_teacher,
        "synthetic:12x10",
        "--redact",
        "--seed",
        SECRET_SEED,
        "--views",
        "1",
        "--device",
        "cpu",
        "-o",
        out2,
        "-q",
    )
    assert res.exit_code == 0, res.output
    rep = audit_file(out2)
    assert rep["layers"][0]["projection"]["status"] == "redacted"
    assert "relational loss" in _table(rep)["verdict"]


def test_cli_audit_json_and_text(tmp_path):
    path = H.write_file(tmp_path / "fp.h5", d=16, r=8, layers=2, accuracy=Accuracy(0.5, "views", 40 * 8))
    res = cli("audit", path, "--json")
    assert res.exit_code == 0, res.output
    rep = json.loads(res.stdout)
    assert [lay["r_ge_d"] for lay in rep["layers"]] == [False, False]
    assert rep["metadata"]["teacher"]["accuracy"]["top1"] == 0.5
    res = cli("audit", path)
    assert res.exit_code == 0
    assert res.stdout.count("verdict:") == 4 and "private" not in res.stdout.lower()
    assert "membership" in res.stdout


def test_cli_audit_of_damaged_file(tmp_path):
    path = H.write_file(tmp_path / "fp.h5")
    data = bytearray(path.read_bytes())
    off, n, _ = H.data_regions(path)[-1]
    data[off] ^= 1
    path.write_bytes(bytes(data))
    res = cli("audit", path)
    assert res.exit_code == 1 and res.stderr.startswith("fpkit: error:") and "Traceback" not in res.output


@pytest.mark.parametrize("d,r", [(64, 16), (64, 32), (64, 48)])
def test_simulation_matches_notes(d, r):
    """NOTES: minimum-norm reconstruction cosine ~0.5 to 0.9 at r = 16..48 for d = 64."""
    from fpkit.audit import simulate_min_norm
    from fpkit.projection import make_projection

    cos = simulate_min_norm(make_projection(d, r, 0))["mean_cosine"]
    assert 0.45 < cos < 0.92
