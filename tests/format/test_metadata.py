"""The typed metadata document, the layout and the example files of fpkit.testing."""

from __future__ import annotations

import copy
import json
from dataclasses import replace

import _helpers as H
import h5py
import pytest

from fpkit.format import (
    Accuracy,
    DatasetInfo,
    Metadata,
    Normalization,
    StorageInfo,
    TeacherInfo,
    ViewsInfo,
    layout,
    open_fingerprints,
    verify_fingerprints,
)
from fpkit.format.spec import DEFAULT_CHUNK_ROWS, DEFAULT_CODEC, DEFAULT_DTYPE
from fpkit.testing import ExampleFile, example_dataset, write_example_file

NAMES = ("v1-float16-none.h5", "v1-int8-zstd.h5", "v1-float32-gzip-replay-redacted.h5")
IGNORABLE = {"must_understand": False, "x": [1, 2.5, None]}


@pytest.mark.parametrize("name", NAMES)
def test_golden_metadata_round_trips_to_the_same_text(name):
    with h5py.File(H.GOLDEN / name, "r") as f:
        text = f.attrs["metadata"]
    doc = json.loads(text)
    m = Metadata.from_json(doc)
    assert m.to_json() == doc
    assert json.dumps(m.to_json(), sort_keys=True, separators=(",", ":")) == text
    assert Metadata.from_json(m.to_json()) == m
    assert open_fingerprints(H.GOLDEN / name).metadata == m


@pytest.mark.parametrize(
    "where",
    [
        (),
        ("teacher",),
        ("teacher", "accuracy"),
        ("dataset",),
        ("views",),
        ("compute",),
        ("storage",),
        ("layers", 0),
        ("layers", 0, "projection"),
        ("layers", 0, "tables", "sample"),
    ],
)
def test_extension_fields_are_kept_where_they_are(where):
    doc = H.get_metadata(H.GOLDEN / NAMES[0])
    node = doc
    for key in where:
        node = node[key]
    node["zz_ext"] = copy.deepcopy(IGNORABLE)
    m = Metadata.from_json(doc)
    assert m.to_json() == doc
    assert m != Metadata.from_json(H.get_metadata(H.GOLDEN / NAMES[0]))


def test_values_are_kept_as_given():
    doc = H.get_metadata(H.GOLDEN / NAMES[0])
    doc["dataset"]["normalize"]["mean"] = [0, 0.5, 1]  # JSON integers stay integers
    doc["teacher"]["accuracy"]["top1"] = 1
    assert json.dumps(Metadata.from_json(doc).to_json(), sort_keys=True) == json.dumps(doc, sort_keys=True)


def test_extension_field_that_shadows_a_field_is_refused():
    with pytest.raises(ValueError, match="fields of the format"):
        StorageInfo(extras={"dtype": {"must_understand": False}})


def test_section_defaults_and_writer_filled_fields():
    assert StorageInfo() == StorageInfo(DEFAULT_DTYPE, DEFAULT_CODEC, DEFAULT_CHUNK_ROWS)
    ds = example_dataset()
    assert set(ds.to_json()) == {"name", "split", "image_shape", "normalize"}
    assert ds.to_json()["image_shape"] == [32, 32, 3]  # [H, W, channels]
    assert DatasetInfo.from_json(ds.to_json()) == ds
    t = TeacherInfo("a", "0" * 64, 1, "synthetic", False, Accuracy(0.5, "views", 4))
    assert TeacherInfo.from_json(t.to_json()) == t
    v = ViewsInfo({"name": "pad_crop_flip", "padding": 1, "fill": 0, "flip": False}, "all", 9, 0, False)
    assert layout.views_per_sample(v.policy, v.count) == 9 == layout.policy_view_count(1, False)


@pytest.mark.parametrize("name", NAMES)
def test_layout_lists_exactly_the_datasets_of_the_golden_files(name):
    fp = open_fingerprints(H.GOLDEN / name)
    m = fp.metadata
    k = m.views.per_sample if m.views.replay else None
    fs = layout.FileShape(n=m.dataset.num_samples, c=m.dataset.num_classes, k=k, dtype=m.storage.dtype)
    want = layout.fixed_datasets(fs)
    for i, lay in enumerate(m.layers):
        want += layout.layer_datasets(i, lay.d, lay.projection.r, lay.projection.stored, tuple(lay.tables), fs)
    assert {d.path for d in want} == set(m.datasets)
    with h5py.File(H.GOLDEN / name, "r") as f:
        for d in want:
            assert (f[d.path].shape, str(f[d.path].dtype)) == (d.shape, d.dtype)
            assert f[d.path].chunks == d.chunks(m.storage.chunk_rows, k)
            assert m.datasets[d.path].shape == d.shape


def test_example_files_are_valid_and_hold_their_inputs(tmp_path):
    data = write_example_file(
        tmp_path / "fp.h5", ExampleFile(n=9, classes=4, layers=2, replay=2, dtype="float32", redact=(True, False))
    )
    assert verify_fingerprints(data.path) == []
    fp = open_fingerprints(data.path)
    assert fp.metadata.views.replay and fp.metadata.views.per_sample == 2
    assert [lay.projection_stored for lay in fp.layers] == [False, True]
    for name, rows in data.rows.items():
        assert (fp.table("sample", name) == rows).all() and (fp.table("views", name) == data.views[name]).all()
    assert (fp.view_params == data.view_params).all() and (fp.labels == data.labels).all()
    again = write_example_file(
        tmp_path / "again.h5", ExampleFile(n=9, classes=4, layers=2, replay=2, dtype="float32", redact=(True, False))
    )
    assert again.path.read_bytes() == data.path.read_bytes()


def test_example_contents_can_be_changed_with_replace(tmp_path):
    data = write_example_file(tmp_path / "a.h5")
    one_channel = Normalization(mean=(0.5,), std=(0.25,))  # one constant per channel (errata 2026-12)
    c = replace(data.contents, dataset=example_dataset(name="other", image_shape=(28, 28, 1), normalize=one_channel))
    from fpkit.testing import write_rows

    write_rows(tmp_path / "b.h5", c, data.rows)
    assert open_fingerprints(tmp_path / "b.h5").metadata.dataset.image_shape == (28, 28, 1)
