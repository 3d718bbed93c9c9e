"""A plain-data summary of a fingerprint file, for ``fpkit inspect`` (text and --json)."""

from __future__ import annotations

import os

from ._text import printable_tree
from .diagnose import file_warnings
from .format import DatasetEntry, FingerprintFile


def summarize(fp: FingerprintFile) -> dict:
    """Provenance, teacher, dataset, views, storage, layers, table sizes (bytes) of ``fp``, and
    ``warnings``: diagnoses of a probably unintended build (fpkit/diagnose.py)."""
    m = fp.metadata
    layers = []
    for lay, lm in zip(fp.layers, m.layers):
        tables = {}
        for kind, info in lm.tables.items():
            ds = m.datasets[info.dataset]
            nbytes = _nbytes(ds)
            if info.scale:
                nbytes += _nbytes(m.datasets[info.scale])
            tables[kind] = {
                "shape": list(ds.shape),
                "dtype": ds.dtype,
                "bytes": nbytes,
                "fidelity_min_cos": info.fidelity_min_cos,
            }
        layers.append(
            {
                "name": lay.name,
                "pooling": lay.pooling,
                "d": lay.d,
                "r": lay.r,
                "projection": {
                    "seed": lay.seed,
                    "generator": lay.generator,
                    "stored": lay.projection_stored,
                    "sha256": lay.projection_sha256,
                },
                "tables": tables,
            }
        )
    ds = m.dataset.to_json()
    return {
        "path": fp.path,
        "file_bytes": os.path.getsize(fp.path),
        "format_version": fp.format_version,
        "provenance": m.provenance.to_json(),
        "teacher": m.teacher.to_json(),
        "dataset": {
            k: ds[k]
            for k in (
                "name",
                "split",
                "num_samples",
                "num_classes",
                "image_shape",
                "normalize",
                "labels_sha256",
                "order_sha256",
                "subset",
            )
            if k in ds
        },
        "views": m.views.to_json(),
        "compute": m.compute.to_json(),
        "storage": m.storage.to_json(),
        "layers": layers,
        "logits": _logits(fp),
        "warnings": file_warnings(fp),
    }


def _logits(fp: FingerprintFile) -> dict | None:
    """Format 1.3's logit table: the metadata field (without its digests) and each dataset's size."""
    if fp.logits_info is None:
        return None
    out = {k: v for k, v in fp.metadata.extras["logits"].items() if k not in ("datasets", "must_understand")}
    out["datasets"] = {
        p: {"shape": list(e.shape), "dtype": e.dtype, "bytes": _nbytes(e)} for p, e in fp.logits_info.datasets.items()
    }
    return out


def _nbytes(ds: DatasetEntry) -> int:
    n = 1
    for s in ds.shape:
        n *= s
    return n * {"float32": 4, "float16": 2, "int8": 1, "int16": 2, "int32": 4, "int64": 8, "uint64": 8}[ds.dtype]


def _floats(xs) -> str:
    return "[" + ", ".join(f"{x:g}" for x in xs) + "]"


def format_summary(s: dict) -> str:
    """Human-readable text of :func:`summarize`'s result (names from the file escaped: fpkit/_text.py)."""
    s = printable_tree(s)
    t, d, v, st = s["teacher"], s["dataset"], s["views"], s["storage"]
    acc = t["accuracy"]
    lines = [
        f"{s['path']}  ({s['file_bytes']:,} bytes, fingerprint format {s['format_version']})",
        f"  created     {s['provenance']['created']} by fpkit {s['provenance']['fpkit_version']} "
        f"(torch {s['provenance']['libraries'].get('torch', '?')})",
        f"  teacher     {t['arch']}, {t['num_params']:,} parameters, weights sha256 {t['weights_sha256'][:16]}..., "
        f"from {t['source_kind']}{' (trusted code)' if t['trusted_code'] else ''}",
        "  accuracy    " + (f"top-1 {acc['top1']:.4f} on {acc['count']:,} built views" if acc else "not measured"),
        f"  dataset     {d['name']} / {d['split']}: {d['num_samples']:,} samples{_subset(d.get('subset'))}, "
        f"{d['num_classes']} classes, "
        f"images {'x'.join('?' if x is None else str(x) for x in d['image_shape'])}",
        f"  normalise   mean {_floats(d['normalize']['mean'])}, std {_floats(d['normalize']['std'])}",
        f"  views       {'all ' if v['count'] == 'all' else ''}{v['per_sample']} per sample"
        f"{' (random)' if v['count'] != 'all' else ''}, {_policy(v['policy'])}"
        f"{' + flip' if v['policy'].get('flip') else ''}, seed {v['seed']}{', replayable' if v['replay'] else ''}",
        f"  storage     {st['dtype']}, codec {st['codec']}; computed on {s['compute']['device']}"
        f"{', autocast ' + s['compute']['autocast'] if s['compute']['autocast'] else ''}",
    ]
    for lay in s["layers"]:
        p = lay["projection"]
        seed = "redacted" if not p["stored"] else f"seed {p['seed']}"
        lines.append(
            f"  layer {lay['name']}: pooling {lay['pooling']}, d={lay['d']}, r={lay['r']}, "
            f"projection {seed} ({p['generator']}, sha256 {p['sha256'][:16]}...)"
        )
        for kind, tb in lay["tables"].items():
            lines.append(
                f"    {kind:<7} {str(tb['shape']):<16} {tb['dtype']:<8} {tb['bytes']:>12,} bytes  "
                f"fidelity min cos {tb['fidelity_min_cos']:.7f}"
            )
    if (lg := s.get("logits")) is not None:
        extra = "".join(f", {k} {lg[k]}" for k in ("k", "temperature", "seed") if k in lg)
        lines.append(f"  logits      {lg['kind']} ({lg['dtype']}{extra})")
        for path, e in lg["datasets"].items():
            lines.append(f"    {path:<22} {str(e['shape']):<16} {e['dtype']:<8} {e['bytes']:>12,} bytes")
    lines += [f"  warning     {w}" for w in s.get("warnings", [])]
    return "\n".join(lines)


def _policy(p: dict) -> str:
    """The views' policy in a few words (formats/SPEC.md, section 5)."""
    if p["name"] == "pad_crop_flip":
        return f"pad {p['padding']} crop"
    if p["name"] == "center":
        return f"resize {p['resize']} + center crop {p['size']}"
    (s0, s1), (r0, r1) = p["scale"], p["ratio"]
    return f"resized crop {p['size']} (scale {s0:g}-{s1:g}, ratio {r0:g}-{r1:g})"


def _subset(subset: dict | None) -> str:
    """' (samples START:STOP of N)' for a file built from part of a split (format 1.1), else ''."""
    if not subset:
        return ""
    return f" (samples {subset['start']}:{subset['stop']} of {subset['source_num_samples']:,})"
