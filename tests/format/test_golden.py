"""Golden files (formats/golden/): exact values, independent recomputation, byte reproducibility."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import subprocess
import sys

import _helpers as H
import h5py
import numpy as np
import pytest
from _helpers import bits_equal, ref_class_means, ref_decoded

from fpkit.format import Accuracy, open_fingerprints, verify_fingerprints
from fpkit.projection import make_projection, projection_sha256

EXPECTED = json.loads((H.GOLDEN / "expected.json").read_text(encoding="utf-8"))
NAMES = sorted(EXPECTED["files"])


def _make_golden():
    spec = importlib.util.spec_from_file_location("make_golden", H.REPO / "formats" / "make_golden.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


MG = _make_golden()


def test_the_golden_files_are_there_and_small():
    assert NAMES == sorted(MG.FILES)
    for name in NAMES:
        assert (H.GOLDEN / name).stat().st_size < 48_000


@pytest.mark.parametrize("name", NAMES)
def test_values_equal_expected_json(name):
    exp = EXPECTED["files"][name]
    fp = open_fingerprints(H.GOLDEN / name)
    assert verify_fingerprints(H.GOLDEN / name) == []
    want = {**dict.fromkeys(MG.FILES_1_0, "1.0"), **dict.fromkeys(MG.FILES_1_1, "1.1")}.get(name)
    want = want or ("1.2" if name in MG.FILES_1_2 else "1.3")
    assert fp.format_version == exp["format_version"] == want
    assert (None if fp.metadata.dataset.subset is None else fp.metadata.dataset.subset.to_json()) == exp["subset"]
    assert fp.metadata.storage.to_json() == exp["storage"]
    assert fp.labels.tolist() == exp["labels"]
    assert [int(x) for x in fp.sample_digests] == exp["sample_digests"]
    assert fp.class_counts.tolist() == exp["class_counts"]
    assert (None if fp.view_params is None else fp.view_params.tolist()) == exp["view_params"]
    assert fp.metadata.dataset.labels_sha256 == exp["labels_sha256"]
    assert fp.metadata.dataset.order_sha256 == exp["order_sha256"]
    assert fp.layer_names == list(exp["layers"])
    for lname, lexp in exp["layers"].items():
        lay = fp.layer(lname)
        assert (lay.d, lay.r, lay.seed) == (lexp["d"], lexp["r"], lexp["seed"])
        assert lay.projection_sha256 == lexp["projection_sha256"]
        assert lay.projection_stored == lexp["projection_stored"]
        assert lay.fidelity == lexp["fidelity_min_cos"]
        assert set(lay.tables) == set(lexp["tables"])
        for kind, values in lexp["tables"].items():
            assert bits_equal(fp.table(kind, lname), np.array(values, dtype=np.float32)), (lname, kind)
        if lay.projection_stored:
            R = np.array(lexp["projection"], dtype=np.float32)
            assert bits_equal(fp.projection(lname), R)
            assert projection_sha256(R) == lay.projection_sha256
    assert (fp.logits_info is not None) == ("logits" in exp) == (name in MG.FILES_1_3)
    if "logits" in exp:
        assert {k: v for k, v in fp.metadata.extras["logits"].items() if k != "datasets"} == exp["logits"]["spec"]
        got = fp.logit_targets()
        for a, b in zip(
            got if isinstance(got, tuple) else (got,),
            exp["logits"]["targets"] if isinstance(got, tuple) else (exp["logits"]["targets"],),
        ):
            assert np.array_equal(a, np.array(b, dtype=a.dtype)), name


def test_values_match_an_independent_recomputation():
    # file 1: float16 of the inputs; class = float64 mean of the inputs; R = the generator's
    fp = open_fingerprints(H.GOLDEN / MG.FILES[0])
    labels = np.arange(12) % 3
    for lname, seed, vseed in (("layer2", 1, 11), ("layer3", 0, 12)):
        R = make_projection(4, 8, seed)
        assert bits_equal(fp.projection(lname), R)
        rows = MG.mean_views(MG.view_fingerprints(R, 8, vseed))
        assert bits_equal(fp.table("sample", lname), rows.astype(np.float16).astype(np.float32))
        assert bits_equal(fp.table("class", lname), ref_decoded(ref_class_means(rows, labels, 3), "float16"))
    # file 2: int8 per-row quantisation; class 2 is empty
    fp = open_fingerprints(H.GOLDEN / MG.FILES[1])
    R = make_projection(4, 8, 2**63 + 5)
    rows = MG.mean_views(MG.view_fingerprints(R, 8, 13))
    rows[3] = 0
    assert bits_equal(fp.table(), ref_decoded(rows, "int8"))
    assert fp.arrays["layers/0/sample_scale"][3] == 0 and not fp.arrays["layers/0/sample"][3].any()
    assert not fp.table("class")[2].any() and fp.class_counts.tolist() == [6, 6, 0]
    assert bits_equal(fp.table("class"), ref_decoded(ref_class_means(rows, fp.labels, 3), "int8"))
    # file 3: float32 views kept exactly; redacted: no R, no seed, but R's digest
    fp = open_fingerprints(H.GOLDEN / MG.FILES[2])
    R = make_projection(4, 8, 3)
    v = MG.view_fingerprints(R, 2, 14)
    assert bits_equal(fp.table("views"), v)
    assert bits_equal(fp.table("class"), ref_class_means(MG.mean_views(v), fp.labels, 3))
    lay = fp.layer()
    assert lay.seed is None and not lay.projection_stored and lay.projection_sha256 == projection_sha256(R)
    with h5py.File(H.GOLDEN / MG.FILES[2], "r") as f:
        assert "projection" not in f["layers/0"]


def test_metadata_highlights():
    fp = open_fingerprints(H.GOLDEN / MG.FILES[0])
    m = fp.metadata
    assert m.created == MG.CREATED and m.libraries == MG.LIBRARIES and m.fpkit_version == MG.FPKIT_VERSION
    assert m.provenance == MG.PROVENANCE
    assert m.teacher.accuracy == Accuracy(top1=0.75, measured_on="views", count=96)
    assert m.layers[0].projection.generator == "fpkit-splitmix64-boxmuller-v1"
    with h5py.File(H.GOLDEN / MG.FILES[0], "r") as f:
        assert set(f.attrs) == {"format", "format_version", "metadata", "complete"}
        assert f.attrs["complete"] == hashlib.sha256(f.attrs["metadata"].encode()).hexdigest()
        assert f.attrs["format"] == "fpkit.fingerprints"


def test_regenerated_files_are_byte_identical(tmp_path):
    if h5py.version.hdf5_version != EXPECTED["hdf5_version"]:
        pytest.skip(
            f"golden files were written with HDF5 {EXPECTED['hdf5_version']}, this is "
            f"{h5py.version.hdf5_version}: HDF5 may lay the bytes out differently"
        )
    # a fresh interpreter: a zstd filter registered in this process (hdf5plugin, imported by other
    # tests) would put its name into the pipeline message of zstd datasets (formats/SPEC.md, 9)
    subprocess.run(
        [sys.executable, str(H.REPO / "formats" / "make_golden.py"), str(tmp_path)],
        check=True,
        capture_output=True,
        cwd=H.REPO,
    )
    assert json.loads((tmp_path / "expected.json").read_text()) == EXPECTED
    for name in NAMES:
        got = (tmp_path / name).read_bytes()
        assert hashlib.sha256(got).hexdigest() == EXPECTED["files"][name]["sha256"], name
        assert got == (H.GOLDEN / name).read_bytes(), name


def test_zstd_filter_name_is_the_only_difference_a_registered_plugin_makes(tmp_path):
    hdf5plugin = pytest.importorskip("hdf5plugin")
    assert hdf5plugin.ZSTD_ID == 32015
    MG.make_all(tmp_path)  # in this process, where hdf5plugin has registered filter 32015
    name = "v1-int8-zstd.h5"
    fp, ref = open_fingerprints(tmp_path / name), open_fingerprints(H.GOLDEN / name)
    assert fp == ref.__class__(**{**ref.__dict__, "path": fp.path})
    with h5py.File(tmp_path / name, "r") as a, h5py.File(H.GOLDEN / name, "r") as b:
        pa, pb = (f["layers/0/sample"].id.get_create_plist() for f in (a, b))
        fa = [pa.get_filter(i)[:3] for i in range(pa.get_nfilters())]
        assert fa == [pb.get_filter(i)[:3] for i in range(pb.get_nfilters())]
        assert fa == [(2, 1, (1,)), (32015, 1, (3,))]  # shuffle, zstd level 3; both optional


# ---------------------------------------------------------------------------- format 1.1
def test_1_0_files_have_none_of_1_1(tmp_path):
    for name in MG.FILES_1_0:
        with h5py.File(H.GOLDEN / name, "r") as f:
            assert "README" not in f and "description" not in f["labels"].attrs
            assert f.attrs["format_version"] == "1.0" and "subset" not in f.attrs["metadata"]


@pytest.mark.parametrize("name", MG.FILES_1_1)
def test_1_1_files_explain_themselves_to_plain_h5py(name):
    with h5py.File(H.GOLDEN / name, "r") as f:
        assert set(f.attrs) == {"format", "format_version", "metadata", "complete"}  # the root set stays closed
        readme = f["README"][()].decode()
        assert "'complete' is the lowercase hex SHA-256" in readme and "unfinished" in readme
        assert f["README"].attrs["must_understand"] is np.False_  # marked: a 1.0 reader ignores it
        meta = json.loads(f.attrs["metadata"])
        assert "README" not in meta["datasets"]  # not a dataset of section 4
        for i, lay in enumerate(meta["layers"]):
            g = f[f"layers/{i}"]
            assert (g.attrs["name"], g.attrs["pooling"]) == (lay["name"], lay["pooling"])
            assert (int(g.attrs["d"]), int(g.attrs["r"])) == (lay["d"], lay["projection"]["r"])
        for path in meta["datasets"]:
            text = f[path].attrs["description"]
            assert isinstance(text, str) and text
        if meta["storage"]["dtype"] == "int8":
            assert "multiply each row by layers/0/sample_scale" in f["layers/0/sample"].attrs["description"]
        assert "layer 'layer3'" in f["layers/0/sample"].attrs["description"] or name == MG.FILES_1_1[0]


def test_1_1_subset_golden():
    fp = open_fingerprints(H.GOLDEN / MG.FILES_1_1[1])
    s = fp.metadata.dataset.subset
    assert (s.start, s.stop, s.source_num_samples) == (20, 32, 50) and fp.num_samples == 12
    assert s.to_json() == {"start": 20, "stop": 32, "source_num_samples": 50, "must_understand": False}
    assert open_fingerprints(H.GOLDEN / MG.FILES_1_1[0]).metadata.dataset.subset is None


@pytest.mark.parametrize("name", MG.FILES_1_1)
def test_a_1_0_reader_reads_1_1_files(name):
    """What 1.1 adds is ignorable by 1.0's rules: the metadata validates against the schema of
    1.0 (no ``subset``: an unknown field marked must_understand = false), every new HDF5 object is
    marked, and the new attributes are below the root (ignored, errata 5)."""
    from fpkit.format._validate import load_schema, validate
    from fpkit.format.checks import marked_ignorable

    schema_1_0 = json.loads(json.dumps(load_schema()))
    del schema_1_0["properties"]["dataset"]["properties"]["subset"]
    with h5py.File(H.GOLDEN / name, "r") as f:
        validate(json.loads(f.attrs["metadata"]), schema_1_0)
        old = {n for n in EXPECTED_1_0_OBJECTS}
        new = [k for k in f.keys() if k not in old]
        assert new == ["README"] and marked_ignorable(f["README"])


EXPECTED_1_0_OBJECTS = ("labels", "sample_digests", "class_counts", "view_params", "layers")


@pytest.mark.parametrize("name", MG.FILES_1_2)
def test_1_2_view_params_follow_the_policy(name):
    """1.2: view_params is int32 [N, K, 5], the spec's sampler for images of SIZES, seed 7."""
    from fpkit.views import policy_from_dict, views_for

    fp = open_fingerprints(H.GOLDEN / name)
    m = fp.metadata
    assert m.dataset.image_shape == (None, None, 3)
    assert fp.view_params.dtype == np.int32 and fp.view_params.shape == (MG.N, m.views.per_sample, 5)
    images = [np.zeros((3, h, w), dtype=np.uint8) for h, w in MG.SIZES]
    want = views_for(policy_from_dict(m.views.policy), np.arange(MG.N), m.views.count, 7, images)
    assert np.array_equal(fp.view_params, want)


# ---------------------------------------------------------------------------- format 1.3
@pytest.mark.parametrize("name", MG.FILES_1_3)
def test_a_1_2_reader_reads_1_3_files(name):
    """What 1.3 adds is ignorable by the rules of section 2: the metadata validates against the
    schema of 1.2 (no ``logits``: a marked unknown field), the one new HDF5 object is the marked
    group ``logits``, its datasets are not in ``datasets``, and the 1.2 checks pass."""
    from fpkit.format._validate import load_schema, validate
    from fpkit.format.checker import FileChecker
    from fpkit.format.checks import marked_ignorable

    schema_1_2 = json.loads(json.dumps(load_schema()))
    del schema_1_2["properties"]["logits"]
    with h5py.File(H.GOLDEN / name, "r") as f:
        meta = json.loads(f.attrs["metadata"])
        validate(meta, schema_1_2)
        new = [k for k in f.keys() if k not in EXPECTED_1_0_OBJECTS]
        assert sorted(new) == ["README", "logits"] and marked_ignorable(f["logits"])
        assert not any(p.startswith("logits") for p in meta["datasets"])
    r = FileChecker(H.GOLDEN / name)  # the checks of 1.2, without the logits module
    try:
        r.structure(max_bytes=None)
        r.load(verify=True, load_views=True, problems=None)
        assert not any(p.startswith("logits") for p in r.arrays)
    finally:
        r.close()


def test_1_3_logits_are_the_recorded_encodings():
    from fpkit.format.logits import sample_draws, topk

    z = MG.golden_logits(2, 19)
    mean = open_fingerprints(H.GOLDEN / MG.FILES_1_3[0]).logit_targets()
    assert bits_equal(mean, MG.mean_views(MG.golden_logits(8, 19)).astype(np.float16).astype(np.float32))
    assert bits_equal(open_fingerprints(H.GOLDEN / MG.FILES_1_3[1]).logit_targets(), z)
    values, idx = open_fingerprints(H.GOLDEN / MG.FILES_1_3[2]).logit_targets()
    want_v, want_i = topk(z, 2)
    assert np.array_equal(idx, want_i) and bits_equal(values, want_v.astype(np.float16).astype(np.float32))
    assert (np.diff(values, axis=-1) <= 0).all()
    fp = open_fingerprints(H.GOLDEN / MG.FILES_1_3[3])
    assert fp.metadata.extras["logits"]["temperature"] == 2.0 and fp.metadata.extras["logits"]["seed"] == 9
    assert np.array_equal(fp.logit_targets(), sample_draws(z, 4, 2.0, 9, 0))
