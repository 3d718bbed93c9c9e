"""Storage at ImageNet scale (issue 12): fpkit's tables for N = 1.28 M, C = 1000 next to the
published sizes of FKD's and TinyViT's saved soft labels.

Bytes come from the format's own layout rules (fpkit.format.layout: the datasets a file holds,
their shapes and dtypes, the int8 per-row float32 scales), not from hand arithmetic; HDF5's chunk
index and metadata (well under 1 MB) are not included.  The other rows are published figures,
quoted, not recomputed.

    python -m bench.storage --scale-only     (just this table; python -m bench.storage prints it too)
"""

from __future__ import annotations

from bench import harness as H

PUBLISHED = [
    ("FKD soft labels (ImageNet-1k, 500 crops/image, top-5, fp16), published", 18.6e9),
    ("TinyViT sparse logits (ImageNet-1k), published", 16e9),
]
"""Published sizes quoted in issue 12 (FKD: Shen & Xing, ECCV 2022; TinyViT: Wu et al., ECCV 2022)."""


def fpkit_rows(n: int, c: int, k: int, rs, dtypes) -> list[list]:
    """[what, dtype, r, bytes] of the per-sample, per-class and per-view (replay) tables, the
    replay view parameters (resized-crop and pad-crop policies) and the fixed datasets."""
    from fpkit.format import layout

    rows = []
    for dtype in dtypes:
        for r in rs:
            fs = layout.FileShape(n=n, c=c, k=k, dtype=dtype, policy="resized_crop_flip")
            for kind, what in (
                ("sample", "per-sample [N, r]"),
                ("class", "per-class [C, r]"),
                ("views", f"per-view replay [N, K={k}, r]"),
            ):
                rows.append([what, dtype, r, sum(ds.nbytes for ds in layout.table_datasets(0, kind, r, fs))])
    for policy in ("resized_crop_flip", "pad_crop_flip"):
        fixed = layout.fixed_datasets(layout.FileShape(n=n, c=c, k=k, dtype="float16", policy=policy))
        vp = next(ds for ds in fixed if ds.per_view)
        rows.append([f"view_params, {policy} (replay, K={k})", vp.dtype, "", vp.nbytes])
    fixed = layout.fixed_datasets(layout.FileShape(n=n, c=c, k=None, dtype="float16"))
    rows.append(["labels + sample_digests + class_counts (every file)", "", "", sum(ds.nbytes for ds in fixed)])
    return rows


def print_scale_table(
    n: int = 1_281_167, c: int = 1000, k: int = 8, rs=(64, 128), dtypes=("float16", "int8")
) -> list[list]:
    """Print the table and return its rows ([what, dtype, r, bytes, GB])."""
    rows = [row + [row[3] / 1e9] for row in fpkit_rows(n, c, k, rs, dtypes)]
    rows += [[what, "", "", int(b), b / 1e9] for what, b in PUBLISHED]
    H.print_table(
        f"Storage at ImageNet scale: N = {n:,}, C = {c}, one layer (fpkit.format.layout; int8 includes its "
        "float32 scales; published rows quoted)",
        ["table", "dtype", "r", "bytes", "GB"],
        rows,
    )
    return rows
