"""open_fingerprints / verify_fingerprints: one test per error, the error hierarchy, the loaded
object (API, pickling, DataLoader workers), and that no HDF5 handle outlives the call."""

from __future__ import annotations

import builtins
import hashlib
import json
import os
import pickle
import shutil
from pathlib import Path

import _helpers as H
import h5py
import numpy as np
import pytest

from fpkit import errors
from fpkit.errors import (
    ConfigError,
    CorruptFileError,
    FormatError,
    FpkitError,
    FpkitFileNotFoundError,
    FpkitPermissionError,
    IncompleteFileError,
    RedactedError,
    UnknownFieldError,
    UnsupportedVersionError,
)
from fpkit.format import FingerprintFile, FingerprintWriter, StorageInfo, open_fingerprints, verify_fingerprints
from fpkit.testing import example_contents

F16 = H.GOLDEN / "v1-float16-none.h5"
I8 = H.GOLDEN / "v1-int8-zstd.h5"
F32 = H.GOLDEN / "v1-float32-gzip-replay-redacted.h5"


@pytest.fixture
def f16(tmp_path) -> Path:
    dst = tmp_path / "fp.h5"
    shutil.copy(F16, dst)
    return dst


def open_files() -> int:
    return h5py.h5f.get_obj_count(h5py.h5f.OBJ_ALL, h5py.h5f.OBJ_FILE)


def fds_on(path: Path) -> list[str]:
    if not os.path.isdir("/proc/self/fd"):
        return []
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") == str(path.resolve()):
                out.append(fd)
        except OSError:
            pass
    return out


def expect(path: Path, err: type[FpkitError]) -> FpkitError:
    """open_fingerprints raises exactly ``err``; verify_fingerprints reports a problem; no handle left."""
    before = open_files()
    with pytest.raises(FpkitError) as ei:
        open_fingerprints(path)
    assert type(ei.value) is err, f"{type(ei.value).__name__}: {ei.value}"
    assert open_files() == before and fds_on(path) == []
    assert str(ei.value) in verify_fingerprints(path)
    assert open_files() == before
    return ei.value


# ----------------------------------------------------------------------------- hierarchy


@pytest.mark.parametrize(
    "cls, builtin",
    [
        (errors.FormatError, ValueError),
        (errors.UnsupportedVersionError, ValueError),
        (errors.UnknownFieldError, ValueError),
        (errors.CorruptFileError, OSError),
        (errors.IncompleteFileError, OSError),
        (errors.MismatchError, ValueError),
        (errors.FpkitFileNotFoundError, FileNotFoundError),
        (errors.FpkitPermissionError, PermissionError),
        (errors.UntrustedCodeError, PermissionError),
        (errors.ConfigError, ValueError),
        (errors.NonFiniteError, ArithmeticError),
        (errors.OutputExistsError, FileExistsError),
        (errors.StorageError, OSError),
        (errors.RedactedError, LookupError),
    ],
)
def test_every_error_is_also_its_builtin(cls, builtin):
    e = cls("message")
    assert isinstance(e, FpkitError) and isinstance(e, builtin)
    assert issubclass(errors.UnsupportedVersionError, FormatError)
    assert issubclass(errors.UnknownFieldError, FormatError)
    with pytest.raises(builtin):
        raise e


def test_every_public_error_is_covered():
    names = {n for n in errors.__all__ if n != "FpkitError"}
    assert all(issubclass(getattr(errors, n), FpkitError) for n in names)
    assert all(
        any(
            issubclass(getattr(errors, n), b)
            for b in vars(builtins).values()
            if isinstance(b, type) and issubclass(b, Exception) and b is not Exception
        )
        for n in names
    )


# ----------------------------------------------------------------------------- file-level errors


def test_missing_file(tmp_path):
    e = expect(tmp_path / "nope.h5", FpkitFileNotFoundError)
    assert isinstance(e, FileNotFoundError)


def test_directory(tmp_path):
    expect(tmp_path, FormatError)


def test_unreadable_file(f16, monkeypatch):
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if Path(p) == f16 else real(p, mode, **kw))
    e = expect(f16, FpkitPermissionError)
    assert isinstance(e, PermissionError)


@pytest.mark.parametrize("content", [b"", b"not an hdf5 file at all\n" * 100, b"\x89HDF"])
def test_not_hdf5(tmp_path, content):
    (tmp_path / "x.h5").write_bytes(content)
    e = expect(tmp_path / "x.h5", FormatError)
    assert "not an HDF5 file" in str(e)


def test_hdf5_but_not_fpkit(tmp_path):
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f["labels"] = np.arange(3)
    e = expect(tmp_path / "x.h5", FormatError)
    assert "not an fpkit fingerprint file" in str(e)


@pytest.mark.parametrize("golden", [F16, I8, F32], ids=lambda p: p.name)
@pytest.mark.parametrize("keep", [0.5, 0.9, 0.999])
def test_truncated_file_is_corrupt(tmp_path, golden, keep):
    data = golden.read_bytes()
    (tmp_path / "t.h5").write_bytes(data[: int(len(data) * keep)])
    e = expect(tmp_path / "t.h5", CorruptFileError)
    assert "truncated" in str(e)


def test_truncated_before_the_signature_is_not_hdf5(tmp_path):
    (tmp_path / "t.h5").write_bytes(F16.read_bytes()[:7])
    expect(tmp_path / "t.h5", FormatError)


def test_claimed_table_bytes_beyond_file_size(f16):
    meta = H.get_metadata(f16)
    n = 1_000_000
    meta["dataset"]["num_samples"] = n
    meta["teacher"]["accuracy"]["count"] = n * meta["views"]["per_sample"]  # N x K (errata 2026-12)
    for name, info in meta["datasets"].items():
        if name in ("labels", "sample_digests") or name.endswith("/sample"):
            info["shape"][0] = n
    H.set_metadata(f16, meta)
    e = expect(f16, CorruptFileError)
    assert "claims" in str(e)


# ----------------------------------------------------------------------------- completion


def test_missing_completion_marker(f16):
    with h5py.File(f16, "r+") as f:
        del f.attrs["complete"]
    e = expect(f16, IncompleteFileError)
    assert "never finished" in str(e)


def test_flushed_but_unfinished_writer_file(tmp_path):
    contents = example_contents(H.layer_specs(1, 8), np.arange(10) % 3, storage=StorageInfo(chunk_rows=4))
    w = FingerprintWriter(tmp_path / "fp.h5", contents)
    try:
        w.append({"layer1": np.ones((6, 8), np.float32)})
        w._f.flush()
        (tmp,) = [p for p in tmp_path.iterdir() if p.name.startswith(".fp.h5.writing-")]
        shutil.copy(tmp, tmp_path / "crashed.h5")
    finally:
        w.abort()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["crashed.h5"]
    expect(tmp_path / "crashed.h5", IncompleteFileError)


# ----------------------------------------------------------------------------- versions, unknown fields


def _set_attr(path: Path, name: str, value) -> None:
    with h5py.File(path, "r+") as f:
        f.attrs[name] = value


def test_unknown_major_version(f16):
    _set_attr(f16, "format_version", "2.0")
    e = expect(f16, UnsupportedVersionError)
    assert "2.0" in str(e)


def test_newer_minor_version_is_read(f16):
    _set_attr(f16, "format_version", "1.7")
    fp = open_fingerprints(f16)
    assert fp.format_version == "1.7"


@pytest.mark.parametrize("version", ["1", "1.0.0", "one.zero", ""])
def test_malformed_version(f16, version):
    _set_attr(f16, "format_version", version)
    expect(f16, FormatError)


def test_wrong_format_name(f16):
    _set_attr(f16, "format", "someone.else")
    expect(f16, FormatError)


@pytest.mark.parametrize("where", ["root", "teacher", "layer", "projection", "table", "accuracy"])
def test_unknown_metadata_field_refused_unless_ignorable(f16, where):
    def place(meta: dict, key: str, value) -> None:
        target = {
            "root": meta,
            "teacher": meta["teacher"],
            "layer": meta["layers"][1],
            "projection": meta["layers"][0]["projection"],
            "table": meta["layers"][0]["tables"]["class"],
            "accuracy": meta["teacher"]["accuracy"],
        }[where]
        target[key] = value

    meta = H.get_metadata(f16)
    place(meta, "from_the_future", 5)
    H.set_metadata(f16, meta)
    e = expect(f16, UnknownFieldError)
    assert "from_the_future" in str(e)

    meta = H.get_metadata(f16)
    place(meta, "from_the_future", {"must_understand": False, "value": [1, 2]})
    H.set_metadata(f16, meta)  # 'complete' is recomputed: sha256 of the new metadata text
    fp = open_fingerprints(f16)
    assert fp.table("sample", "layer3").shape == (12, 8)

    meta = H.get_metadata(f16)
    place(meta, "from_the_future", {"must_understand": True})
    H.set_metadata(f16, meta)
    expect(f16, UnknownFieldError)


def test_new_table_kind_is_unknown_even_if_marked(f16):
    meta = H.get_metadata(f16)
    meta["layers"][0]["tables"]["pairs"] = {"must_understand": False}
    H.set_metadata(f16, meta)
    expect(f16, UnknownFieldError)


@pytest.mark.parametrize("obj", ["extra", "layers/0/extra", "layers/7"])
@pytest.mark.parametrize("kind", ["group", "dataset"])
def test_unknown_hdf5_object_refused_unless_marked(f16, obj, kind):
    with h5py.File(f16, "r+") as f:
        f.create_group(obj) if kind == "group" else f.create_dataset(obj, data=np.arange(4))
    e = expect(f16, UnknownFieldError)
    assert obj in str(e)
    with h5py.File(f16, "r+") as f:
        f[obj].attrs["must_understand"] = False
        if kind == "group":
            f[obj].create_dataset("inside", data=np.arange(3))  # inside an ignorable group: ignored
    assert open_fingerprints(f16).num_samples == 12
    with h5py.File(f16, "r+") as f:
        f[obj].attrs["must_understand"] = True
    expect(f16, UnknownFieldError)


def test_unknown_root_attribute(f16):
    _set_attr(f16, "note", "hello")
    e = expect(f16, UnknownFieldError)
    assert "note" in str(e)


# ----------------------------------------------------------------------------- shapes, dtypes, tampering


@pytest.mark.parametrize("change", ["shape", "dtype", "missing", "extra"])
def test_dataset_list_disagrees_with_metadata(f16, change):
    meta = H.get_metadata(f16)
    ds = meta["datasets"]
    if change == "shape":
        ds["layers/0/sample"]["shape"] = [12, 9]
    elif change == "dtype":
        ds["layers/1/class"]["dtype"] = "float32"
    elif change == "missing":
        del ds["class_counts"]
    else:
        ds["layers/0/views"] = dict(ds["layers/0/sample"])
    H.set_metadata(f16, meta)
    expect(f16, FormatError)


@pytest.mark.parametrize("replacement", [np.zeros(12, np.int32), np.zeros(13, np.int64), np.zeros((12, 1), np.int64)])
def test_stored_dataset_shape_or_dtype_differs(f16, replacement):
    with h5py.File(f16, "r+") as f:
        del f["labels"]
        f["labels"] = replacement
    e = expect(f16, FormatError)
    assert "labels" in str(e)


def test_metadata_tampered_without_new_digest(f16):
    meta = H.get_metadata(f16)
    meta["teacher"]["arch"] = "resnet110"
    H.set_metadata(f16, meta, recompute_complete=False)
    e = expect(f16, CorruptFileError)
    assert "digest" in str(e)


@pytest.mark.parametrize("field", ["labels_sha256", "order_sha256", "projection", "table"])
def test_content_digest_mismatch(f16, field):
    meta = H.get_metadata(f16)
    if field == "projection":
        meta["layers"][0]["projection"]["sha256"] = "0" * 64
    elif field == "table":
        meta["datasets"]["layers/1/sample"]["sha256"] = "0" * 64
    else:
        meta["dataset"][field] = "0" * 64
    H.set_metadata(f16, meta)
    expect(f16, CorruptFileError)
    assert verify_fingerprints(f16)
    if field == "table":
        assert open_fingerprints(f16, verify=False).table("sample", "layer3").shape == (12, 8)


def test_schema_violation_is_format_error(f16):
    meta = H.get_metadata(f16)
    meta["storage"]["dtype"] = "bfloat16"
    H.set_metadata(f16, meta)
    expect(f16, FormatError)


def test_redacted_with_seed_is_format_error(tmp_path):
    shutil.copy(F32, tmp_path / "r.h5")
    meta = H.get_metadata(tmp_path / "r.h5")
    meta["layers"][0]["projection"]["seed"] = 3
    H.set_metadata(tmp_path / "r.h5", meta)
    expect(tmp_path / "r.h5", FormatError)


def test_max_bytes(f16):
    with pytest.raises(FormatError, match="limit"):
        open_fingerprints(f16, max_bytes=100)
    assert open_fingerprints(f16, max_bytes=10**6).num_samples == 12


# ----------------------------------------------------------------------------- the loaded object


def test_api_on_golden_files():
    fp = open_fingerprints(F16)
    assert fp.layer_names == ["layer2", "layer3"] and fp.layer().name == "layer2"
    assert fp.table().shape == (12, 8) and fp.table("class", "layer3").shape == (3, 8)
    assert fp.table() is fp.table()  # decoded once
    assert fp.classes == ["cat", "dog", "eel"] and fp.num_classes == 3
    with pytest.raises(ConfigError, match="layer2, layer3"):
        fp.layer("layer9")
    with pytest.raises(ConfigError, match="--replay"):
        fp.table("views")
    red = open_fingerprints(F32)
    with pytest.raises(RedactedError):
        red.projection()
    with pytest.raises(ConfigError, match="--tables sample"):
        red.table("sample")
    assert red.table("views").shape == (12, 2, 8) and red.view_params.shape == (12, 2, 3)
    light = open_fingerprints(F32, load_views=False)
    assert "layers/0/views" not in light.arrays and light.view_params is None
    assert light.table("class").shape == (3, 8)


def test_open_holds_no_handle():
    before = open_files()
    for path in (F16, I8, F32):
        fp = open_fingerprints(path)
        assert verify_fingerprints(path) == []
        assert open_files() == before and fds_on(path) == []
        assert isinstance(fp, FingerprintFile)
        assert all(isinstance(a, np.ndarray) for a in fp.arrays.values())


@pytest.mark.parametrize("path", [F16, I8, F32], ids=lambda p: p.name)
def test_pickle_round_trip(path):
    fp = open_fingerprints(path)
    fp.table(fp.layer().tables[0])  # with a filled cache too
    back = pickle.loads(pickle.dumps(fp))
    assert back == fp and not (back != fp)
    assert back.metadata == fp.metadata and back.layers == fp.layers
    for k, a in fp.arrays.items():
        assert back.arrays[k].dtype == a.dtype and np.array_equal(back.arrays[k], a)
    other = open_fingerprints(I8 if path != I8 else F16)
    assert other != fp


def _batches(ds, **kw):
    import torch

    loader = torch.utils.data.DataLoader(ds, batch_size=5, shuffle=False, **kw)
    return [(x.numpy(), y.numpy()) for x, y in loader]


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_dataloader_workers_see_the_same_batches(context):
    import multiprocessing

    if context not in multiprocessing.get_all_start_methods():
        pytest.skip(f"start method {context} is not available here")
    fp = open_fingerprints(F16)
    ds = H.SampleTableDataset(fp)
    want = _batches(ds, num_workers=0)
    got = _batches(ds, num_workers=2, multiprocessing_context=context, persistent_workers=False)
    assert len(got) == len(want) == 3
    for (x0, y0), (x1, y1) in zip(want, got):
        assert np.array_equal(x0, x1) and np.array_equal(y0, y1)
    assert np.array_equal(np.concatenate([x for x, _ in got]), fp.table())


# ----------------------------------------------------------------------------- strictness found by the spec audit
def _set_metadata_text(path: Path, text: str) -> None:
    with h5py.File(path, "r+") as f:
        f.attrs["metadata"] = text
        f.attrs["complete"] = hashlib.sha256(text.encode()).hexdigest()


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity"])
def test_metadata_with_non_json_numbers_is_refused(f16, value):
    meta = H.get_metadata(f16)
    meta["layers"][0]["tables"]["sample"]["fidelity_min_cos"] = 0.5
    text = json.dumps(meta, sort_keys=True, separators=(",", ":")).replace(
        '"fidelity_min_cos":0.5', f'"fidelity_min_cos":{value}', 1
    )
    _set_metadata_text(f16, text)
    e = expect(f16, FormatError)
    assert "not valid JSON" in str(e) and value.lstrip("-") in str(e)


def test_metadata_with_a_repeated_key_is_refused(f16):
    text = json.dumps(H.get_metadata(f16), sort_keys=True, separators=(",", ":"))
    _set_metadata_text(f16, text.replace('{"accuracy":', '{"arch":"resnet8","accuracy":', 1))
    assert "appears twice" in str(expect(f16, FormatError))


@pytest.mark.parametrize("version", ["+1.0", " 1.0", "1.0 ", "1.-0", "\u0661.\u0660"])
def test_version_must_be_ascii_digits(f16, version):
    _set_attr(f16, "format_version", version)
    expect(f16, FormatError)


def test_root_attribute_must_be_variable_length_utf8(f16):
    _set_attr(f16, "format", np.bytes_(b"fpkit.fingerprints"))  # fixed-length bytes
    assert "variable-length UTF-8" in str(expect(f16, FormatError))


@pytest.mark.parametrize("field, value", [("created", "2026-01-01T00:00:00Z\n"), ("weights_sha256", "a" * 64 + "\n")])
def test_schema_patterns_anchor_at_the_very_end(f16, field, value):
    meta = H.get_metadata(f16)
    (meta["teacher"] if field == "weights_sha256" else meta)[field] = value
    H.set_metadata(f16, meta)
    expect(f16, FormatError)


@pytest.mark.parametrize(
    "make",
    [
        lambda f: f.__setitem__("extra", h5py.SoftLink("/labels")),
        lambda f: f["layers/0"].__setitem__("extra", h5py.SoftLink("/nowhere")),  # dangling
        lambda f: f.__setitem__("ext", h5py.ExternalLink("/etc/passwd", "/x")),
    ],
)
def test_extra_soft_or_external_links_are_refused(f16, make):
    with h5py.File(f16, "r+") as f:
        make(f)
    assert "does not follow links" in str(expect(f16, FormatError))


def test_second_hard_link_to_a_known_object_is_unknown(f16):
    with h5py.File(f16, "r+") as f:
        f["labels2"] = f["labels"]
    assert "labels2" in str(expect(f16, UnknownFieldError))


@pytest.mark.parametrize("marker", [0, np.array([False])])
def test_ignorable_marker_must_be_a_boolean_scalar(f16, marker):
    with h5py.File(f16, "r+") as f:
        f.create_group("extra").attrs["must_understand"] = marker
    expect(f16, UnknownFieldError)


@pytest.mark.parametrize("count, per_sample", [(5, 2), ("all", 2)])
def test_views_per_sample_must_follow_count(tmp_path, count, per_sample):
    path = shutil.copy(F32, tmp_path / "fp.h5")
    meta = H.get_metadata(path)
    assert meta["views"]["per_sample"] == 2
    meta["views"]["count"] = count  # 'all' with padding 1 and flips is 18 views
    H.set_metadata(path, meta)
    assert "per_sample" in str(expect(path, FormatError))


def test_stored_projection_needs_its_seed(f16):
    meta = H.get_metadata(f16)
    meta["layers"][0]["projection"]["seed"] = None
    H.set_metadata(f16, meta)
    assert "records no seed" in str(expect(f16, FormatError))


@pytest.mark.parametrize(
    "kwargs", [dict(), dict(chunks=(1,), fletcher32=True), dict(chunks=(12,), compression="gzip", fletcher32=True)]
)
def test_chunking_and_filters_follow_the_codec(f16, kwargs):
    """Section 9: a codec-none table is chunked by chunk_rows and carries fletcher32 only
    (contiguous, other chunks or another filter are refused, even with the right bytes)."""
    with h5py.File(f16, "r+") as f:
        data = f["labels"][()]
        del f["labels"]
        f.create_dataset("labels", data=data, **kwargs)
    assert "filters" in str(expect(f16, FormatError))
