"""The informative texts of format 1.1 (formats/SPEC.md, section 4a): the root ``README``
dataset and the ``description`` attributes, so that a file explains itself to h5ls, h5dump,
HDFView or plain h5py users.  They repeat what the metadata says; the metadata stays
authoritative, and readers ignore these texts.
"""

from __future__ import annotations

from .layout import DatasetLayout
from .spec import CLASS_COUNTS, FORMAT_NAME, LABELS, SAMPLE_DIGESTS, VIEW_PARAMS

_POOLING = {
    "avg": "mean over H, W of the [B, C, H, W] output",
    "token_mean": "mean over the tokens of the [B, T, D] output",
    "token_cls": "token 0 of the [B, T, D] output",
    "none": "the [B, D] output as is",
}


def readme(version: str) -> str:
    """The text of the root ``README`` dataset."""
    return (
        f"fpkit fingerprint file, format {FORMAT_NAME} {version} (specification: formats/SPEC.md "
        "of fpkit). Root attributes: 'format' names the format; 'format_version' is MAJOR.MINOR; "
        "'metadata' is a JSON document that describes everything in the file (teacher, dataset, "
        "views, layers, storage, and the SHA-256 of every dataset) and is authoritative; "
        "'complete' is the lowercase hex SHA-256 of the UTF-8 bytes of 'metadata', written last: "
        "a file without it is unfinished (its write was interrupted), a file whose 'complete' "
        "does not match 'metadata' is damaged. Group layers/<i> holds tapped layer i (module "
        "name in its 'name' attribute); every dataset has a 'description' attribute. int8 tables "
        "decode per row as code * <table>_scale. These texts are informative only. Read the file "
        "with fpkit: fpkit.open_fingerprints(path), or `fpkit inspect PATH`."
    )


def _encoding(path: str, dtype: str) -> str:
    if dtype == "int8":
        return f"int8 codes, multiply each row by {path}_scale"
    return f"{dtype} values"


def layer_description(name: str, pooling: str, d: int, r: int) -> str:
    """The ``description`` of group ``layers/<i>``."""
    return (
        f"tapped layer '{name}' of the teacher: {_POOLING.get(pooling, pooling)} (d = {d}), "
        f"normalised to unit length and projected to r = {r} by the projection R"
    )


def dataset_description(ds: DatasetLayout, layer: str | None, k: int) -> str:
    """The ``description`` of one dataset of the layout; ``layer`` is the module name of a
    per-layer dataset, ``k`` the views averaged per sample (``views.per_sample``)."""
    path, base, shape = ds.path, ds.path.rpartition("/")[2], list(ds.shape)
    fixed = {
        LABELS: f"class index of each sample, int64 {shape} (N), in file order; class names are in "
        "the metadata (dataset.classes)",
        SAMPLE_DIGESTS: f"first 8 bytes, as a little-endian uint64, of the SHA-256 of each sample's "
        f"uint8 pixels (H x W x C), uint64 {shape} (N): identifies the samples and their order",
        CLASS_COUNTS: f"number of samples of each class, int64 {shape} (C)",
        VIEW_PARAMS: f"(top, left, flip) of each recorded view of each sample, int16 {shape} (N, K, 3)",
    }
    if path == VIEW_PARAMS and shape[-1] == 5:  # format 1.2's resized_crop_flip and center policies
        return (
            f"the recorded crop of each view of each sample, {ds.dtype} {shape} (N, K, 5): (top, left, "
            "height, width, flip) for resized_crop_flip, (top, left, resized height, resized width, 0) for center"
        )
    if path in fixed:
        return fixed[path]
    where = f"layer '{layer}'"
    if base == "projection":
        return f"frozen random projection R {shape} (d, r) of {where}, float32, unit-norm columns"
    if base.endswith("_scale"):
        return f"float32 scale of each row of {path[: -len('_scale')]}, {shape}: value = int8 code * scale"
    enc = _encoding(path, ds.dtype)
    if base == "sample":
        what = (
            f"per-sample fingerprints {shape} (N, r) of {where}: mean over {k} views of normalize(pool(features)) @ R"
        )
    elif base == "class":
        what = (
            f"per-class fingerprints {shape} (C, r) of {where}: mean of the per-sample fingerprints of "
            "each class (a zero row for a class without samples)"
        )
    else:
        what = f"per-view fingerprints {shape} (N, K, r) of {where}: normalize(pool(features)) @ R of each view"
    return f"{what}; {enc}"


__all__ = ["dataset_description", "layer_description", "readme"]
