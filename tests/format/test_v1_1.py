"""Format 1.1 (formats/SPEC.md, sections 2, 3 and 4a): the informative README dataset and
description attributes, ``dataset.subset``, and reading 1.0 and 1.1 files alike."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import _helpers as H
import h5py
import numpy as np
import pytest
from test_reader import expect

from fpkit.errors import ConfigError, FormatError, UnknownFieldError
from fpkit.format import FORMAT_VERSION, Metadata, Subset, open_fingerprints, verify_fingerprints
from fpkit.format.metadata import DatasetInfo
from fpkit.testing import ExampleFile, example_contents, example_layers, example_rows, write_example_file, write_rows

V11 = H.GOLDEN / "v1.1-float16-none.h5"
V11_SUBSET = H.GOLDEN / "v1.1-int8-gzip-subset.h5"


def copy(src: Path, tmp_path: Path) -> Path:
    return Path(shutil.copy(src, tmp_path / "fp.h5"))


def test_fpkit_writes_1_1_and_reads_both():
    assert FORMAT_VERSION == "1.1"
    assert open_fingerprints(V11).format_version == "1.1"
    assert open_fingerprints(H.GOLDEN / "v1-float16-none.h5").format_version == "1.0"
    # the same rows, whichever version holds them
    a, b = open_fingerprints(V11), open_fingerprints(H.GOLDEN / "v1-float16-none.h5")
    for name in a.layer_names:
        assert np.array_equal(a.table("sample", name), b.table("sample", name))


GARBAGE = [
    np.int64(7),
    np.array([1.0, 2.0]),
    b"\xff\xfe\x1b[31m",
    np.void(b"\x00\x01"),
    h5py.Empty("f"),
    "\x1b]0;owned\x07 line\nbreak",
]


@pytest.mark.parametrize("value", GARBAGE, ids=range(len(GARBAGE)))
@pytest.mark.parametrize("where", ["layers/0/sample", "layers/0", "labels", "layers", "README"])
def test_garbage_descriptive_attributes_are_ignored(tmp_path, where, value):
    p = copy(V11_SUBSET, tmp_path)
    with h5py.File(p, "r+") as f:
        for name in ("description", "name", "d", "pooling"):
            f[where].attrs[name] = value
    fp = open_fingerprints(p)  # informative only: never read
    assert fp.layer_names == ["layer3"] and verify_fingerprints(p) == []


def test_description_attributes_may_be_absent(tmp_path):
    p = copy(V11, tmp_path)
    with h5py.File(p, "r+") as f:
        for path in ("labels", "layers/0/sample", "layers/1"):
            for name in list(f[path].attrs):
                del f[path].attrs[name]
        del f["README"]  # informative and marked: a 1.1 file without it is still readable
    assert open_fingerprints(p).format_version == "1.1"


def test_an_unmarked_readme_is_unknown(tmp_path):
    p = copy(V11, tmp_path)
    with h5py.File(p, "r+") as f:
        del f["README"].attrs["must_understand"]
    assert "README" in str(expect(p, UnknownFieldError))


def test_a_root_attribute_is_still_refused_in_1_1(tmp_path):
    p = copy(V11, tmp_path)
    with h5py.File(p, "r+") as f:
        f.attrs["complete_means"] = "SHA-256 of metadata"
    assert "complete_means" in str(expect(p, UnknownFieldError))


@pytest.mark.parametrize(
    "subset, why",
    [
        ({"start": 20, "stop": 51, "source_num_samples": 50}, "stop <= source_num_samples"),
        ({"start": 32, "stop": 20, "source_num_samples": 50}, "start < stop"),
        ({"start": 0, "stop": 13, "source_num_samples": 50}, "holds 13 samples but dataset.num_samples is 12"),
    ],
)
def test_a_subset_that_does_not_fit_is_refused(tmp_path, subset, why):
    p = copy(V11_SUBSET, tmp_path)
    meta = H.get_metadata(p)
    meta["dataset"]["subset"] = {**subset, "must_understand": False}
    H.set_metadata(p, meta)
    assert why in str(expect(p, FormatError))


@pytest.mark.parametrize(
    "subset",
    [
        {"start": 20, "stop": 32, "source_num_samples": 50},  # not marked: a 1.0 reader could not skip it
        {"start": -1, "stop": 11, "source_num_samples": 50, "must_understand": False},
        {"start": 20.0, "stop": 32, "source_num_samples": 50, "must_understand": False},
        None,
    ],
)
def test_a_malformed_subset_is_refused(tmp_path, subset):
    p = copy(V11_SUBSET, tmp_path)
    meta = H.get_metadata(p)
    meta["dataset"]["subset"] = subset
    H.set_metadata(p, meta)
    expect(p, FormatError)


def test_subset_round_trip_and_extension_fields():
    s = Subset(start=3, stop=9, source_num_samples=10, extras={"x_note": {"must_understand": False}})
    d = s.to_json()
    assert d == {"start": 3, "stop": 9, "source_num_samples": 10, "must_understand": False, "x_note": d["x_note"]}
    assert Subset.from_json(d) == s
    meta = open_fingerprints(V11_SUBSET).metadata
    assert Metadata.from_json(meta.to_json()) == meta
    assert DatasetInfo.from_json(meta.dataset.to_json()).subset == meta.dataset.subset


def _contents(n=6, subset=None):
    contents = example_contents(example_layers(1), np.arange(n) % 3)
    return replace(contents, dataset=replace(contents.dataset, subset=subset))


def test_writer_refuses_a_subset_that_does_not_fit(tmp_path):
    rows = {"layer1": example_rows(6, 8, 0)}
    with pytest.raises(ConfigError, match="stop <= source_num_samples"):
        write_rows(tmp_path / "a.h5", _contents(subset=Subset(4, 10, 8)), rows)
    with pytest.raises(ConfigError, match="holds 5 samples"):
        write_rows(tmp_path / "a.h5", _contents(subset=Subset(0, 5, 8)), rows)
    with pytest.raises(ConfigError, match="needs format 1.1"):
        write_rows(tmp_path / "a.h5", _contents(subset=Subset(2, 8, 8)), rows, version="1.0")
    with pytest.raises(ConfigError, match="cannot be written"):
        write_rows(tmp_path / "a.h5", _contents(), rows, version="1.4")
    assert not list(tmp_path.iterdir())
    p = write_rows(tmp_path / "a.h5", _contents(subset=Subset(2, 8, 8)), rows)
    assert open_fingerprints(p).metadata.dataset.subset == Subset(2, 8, 8)


def test_writer_1_0_writes_what_1_0_had(tmp_path):
    p = write_rows(tmp_path / "a.h5", _contents(), {"layer1": example_rows(6, 8, 0)}, version="1.0")
    with h5py.File(p, "r") as f:
        assert f.attrs["format_version"] == "1.0" and "README" not in f
        assert not f["layers/0"].attrs and not f["layers/0/sample"].attrs
    assert open_fingerprints(p).format_version == "1.0"


@pytest.mark.parametrize("dtype", ["float32", "float16", "int8"])
def test_descriptions_name_the_layer_dtype_and_scale(tmp_path, dtype):
    data = write_example_file(tmp_path / "fp.h5", ExampleFile(dtype=dtype, replay=2))
    with h5py.File(data.path, "r") as f:
        g = f["layers/0"]
        assert (g.attrs["name"], g.attrs["pooling"], int(g.attrs["d"]), int(g.attrs["r"])) == ("layer1", "avg", 6, 8)
        text = f["layers/0/sample"].attrs["description"]
        assert "layer 'layer1'" in text and "mean over 2 views" in text
        assert ("multiply each row by layers/0/sample_scale" in text) == (dtype == "int8")
        assert f"{dtype} values" in text or dtype == "int8"
        assert "(N, K, r)" in f["layers/0/views"].attrs["description"]
