"""``fpkit audit``: what a fingerprint file reveals about the teacher's features and the data.

Fingerprints are random projections of a teacher's (pooled, L2-normalised) features:
``phi = mean_v normalize(f_v) @ R`` with R [d, r].  Random projections are not encryption:

* R stored (or derivable from the recorded seed) and ``r >= d``: R has full row rank, so
  ``phi @ pinv(R)`` gives the features back exactly (per-sample table: the view-averaged
  features; per-view table: each view's features; per-class table: the class means).  The audit
  measures this on the file's own rows.
* R known and ``r < d``: the minimum-norm reconstruction ``phi @ pinv(R)`` keeps the part of the
  features in R's r-dimensional row space.  The true features are not in the file, so the audit
  estimates the reconstruction's quality by simulation (ReLU-like unit vectors projected with the
  file's own R).  This is a lower bound on what an attacker gets: published attacks on random
  projections do better (Liu, Kargupta & Ryan 2006; Sang, Shen & Tian 2009/2012).
* R not stored (``--redact``): not directly invertible by pseudo-inverse, but pairwise
  similarities between fingerprints (what the relational loss uses) approximate those between
  the features, so the geometry of the teacher's feature space is still revealed.  The audit
  also tries small seeds against the recorded SHA-256 of R: a redacted file built with a guessable
  seed gives R back.

* A logit table (format 1.3, ``fpkit build --logits``): the teacher's decision function on the
  build's images, the (input, output) pairs a model-extraction attack collects by querying the
  teacher; ``--redact`` does not touch it (it hides R and its seed only).

Nothing here certifies a file as private; the audit reports what is known to leak.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ._text import printable_tree
from .format import FingerprintFile, open_fingerprints
from .projection import make_projection, projection_sha256

#: seeds tried against the recorded SHA-256 of a redacted projection (``fpkit build --seed`` default 0,
#: layer i uses seed + i), at most; fewer for large d * r (about 2**23 generated numbers per layer)
SEED_SEARCH = 1024
_SEARCH_NORMALS = 2**23
#: largest d * r simulated (a redacted file's d is only a claim of its metadata)
_SIM_MAX = 2**24
#: rows of a table used to measure the exact reconstruction (deterministic: evenly spaced)
MAX_ROWS = 4096
#: simulated feature vectors for the r < d estimate
SIM_SAMPLES = 2000
#: re-projection error (relative) expected from storage rounding alone, by stored dtype
EXACT_TOL = {"float32": 1e-4, "float16": 5e-3, "int8": 5e-2}

NOT_PRIVATE = (
    "fingerprints are random projections, not encryption: this report lists known leaks; "
    "it does not certify that a file is safe to share"
)
REDACTED_NOTE = (
    "R not stored: fingerprints are not directly invertible by pseudo-inverse, but pairwise "
    "similarities (what the relational loss uses) still reveal the geometry of the teacher's "
    "features; not a privacy guarantee"
)
LIMITED_SEARCH = "seed search limited to 0..{n}; a longer search or another attack may still recover R"


def _relu_like(d: int, m: int, rng: np.random.Generator) -> np.ndarray:
    """``m`` ReLU-like unit vectors of dimension ``d``: abs of Gaussians, L2-normalised."""
    x = np.abs(rng.standard_normal((m, d)))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _cos_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    na = np.linalg.norm(a, axis=1)
    nb = np.linalg.norm(b, axis=1)
    return np.sum(a * b, axis=1) / np.maximum(na * nb, 1e-300)


def simulate_min_norm(R: np.ndarray, samples: int = SIM_SAMPLES, seed: int = 0) -> dict:
    """Mean/median/min cosine between simulated ReLU-like features and their minimum-norm
    reconstruction ``(f @ R) @ pinv(R)``.  An estimate, not a measurement of the file's data."""
    R64 = np.asarray(R, dtype=np.float64)
    d = R64.shape[0]
    f = _relu_like(d, samples, np.random.default_rng(seed))
    f_hat = (f @ R64) @ np.linalg.pinv(R64)
    cos = _cos_rows(f_hat, f)
    return {
        "samples": samples,
        "mean_cosine": float(cos.mean()),
        "median_cosine": float(np.median(cos)),
        "min_cosine": float(cos.min()),
        "feature_model": "ReLU-like: |N(0, I_d)| normalised",
    }


def simulate_geometry(d: int, r: int, R: np.ndarray | None = None, samples: int = 300, seed: int = 0) -> dict:
    """How well pairwise cosines between fingerprints approximate those between features
    (simulation with ReLU-like features; a stand-in R of the same shape when R is unknown)."""
    R64 = np.asarray(R if R is not None else make_projection(d, r, 987654321), dtype=np.float64)
    rng = np.random.default_rng(seed)
    # spread-out features: a shared positive component plus sample-specific directions
    f = _relu_like(d, samples, rng) + 0.5 * rng.standard_normal((samples, d)) / np.sqrt(d)
    f /= np.linalg.norm(f, axis=1, keepdims=True)
    phi = f @ R64
    phi_n = phi / np.linalg.norm(phi, axis=1, keepdims=True)
    iu = np.triu_indices(samples, 1)
    cf = (f @ f.T)[iu]
    cp = (phi_n @ phi_n.T)[iu]
    corr = float(np.corrcoef(cf, cp)[0, 1]) if cf.std() > 0 and cp.std() > 0 else float("nan")
    return {"pairs": int(cf.size), "mean_abs_cosine_error": float(np.mean(np.abs(cf - cp))), "correlation": corr}


def _measure_exact(phi: np.ndarray, R: np.ndarray) -> dict:
    """Reconstruct ``f_hat = phi @ pinv(R)``, re-project ``f_hat @ R`` and compare with phi."""
    n = phi.shape[0]
    idx = np.unique(np.linspace(0, n - 1, min(n, MAX_ROWS)).astype(np.int64)) if n else np.zeros(0, np.int64)
    P = np.asarray(phi[idx], dtype=np.float64).reshape(len(idx), -1)
    R64 = np.asarray(R, dtype=np.float64)
    f_hat = P @ np.linalg.pinv(R64)
    back = f_hat @ R64
    norms = np.linalg.norm(P, axis=1)
    ok = norms > 0
    rel = np.linalg.norm(back - P, axis=1)[ok] / norms[ok]
    return {
        "rows_measured": int(len(idx)),
        "max_rel_error": float(rel.max()) if rel.size else 0.0,
        "mean_rel_error": float(rel.mean()) if rel.size else 0.0,
        "feature_norm_mean": float(np.linalg.norm(f_hat, axis=1).mean()) if len(idx) else 0.0,
    }


def _find_projection(lay, fp: FingerprintFile, seed_search: int) -> tuple[np.ndarray | None, dict]:
    """R if it can be had from the file (stored, derived from the seed, or found by seed search)."""
    info: dict[str, Any] = {
        "stored": bool(lay.projection_stored),
        "seed": lay.seed,
        "generator": lay.generator,
        "sha256": lay.projection_sha256,
    }
    if lay.projection_stored:
        R = np.asarray(fp.projection(lay.name), dtype=np.float32)
        info["sha256_ok"] = projection_sha256(R) == lay.projection_sha256
        if lay.seed is not None:
            derived = projection_sha256(make_projection(lay.d, lay.r, int(lay.seed)))
            info["derivable_from_seed"] = derived == lay.projection_sha256
        info["status"] = "stored"
        info["how"] = "R is stored in the file"
        return R, info
    if lay.seed is not None:
        R = make_projection(lay.d, lay.r, int(lay.seed))
        ok = projection_sha256(R) == lay.projection_sha256
        info["derivable_from_seed"] = info["sha256_ok"] = ok
        if ok:
            info["status"] = "seed"
            info["how"] = (
                f"R is not stored but make_projection(d={lay.d}, r={lay.r}, seed={lay.seed}) "
                "reproduces its recorded SHA-256"
            )
            return R, info
    # d of a redacted layer is checked against nothing in the file: never trust it with memory
    seed_search = (
        0 if lay.d * lay.r > _SIM_MAX else max(0, min(seed_search, max(16, _SEARCH_NORMALS // (lay.d * lay.r))))
    )
    info["seeds_tried"] = seed_search
    for s in range(seed_search):
        R = make_projection(lay.d, lay.r, s)
        if projection_sha256(R) == lay.projection_sha256:
            info["status"] = "recovered"
            info["recovered_seed"] = s
            info["sha256_ok"] = True
            info["how"] = (
                f"R is not stored, but seed {s} of the public generator reproduces the recorded "
                "SHA-256 of R: redaction gives no protection; rebuild with a long random secret "
                "--seed that is never published"
            )
            return R, info
    info["status"] = "redacted"
    info["how"] = "neither R nor its seed is stored; " + (
        LIMITED_SEARCH.format(n=seed_search - 1) if seed_search else "no seed search was made"
    )
    return None, info


_REVEALS = {
    "sample": "per-sample fingerprints (one row per training image, averaged over its views)",
    "class": "per-class means of the fingerprints (class means of the teacher's features)",
    "views": "per-view fingerprints (one row per augmented view, with its crop/flip in view_params)",
}


def _audit_table(kind: str, phi: np.ndarray, d: int, r: int, R: np.ndarray | None, dtype: str) -> dict:
    rows = int(phi.shape[0] if phi.ndim == 2 else phi.shape[0] * phi.shape[1])
    t: dict[str, Any] = {"kind": kind, "shape": list(phi.shape), "rows": rows, "holds": _REVEALS[kind]}
    # the teacher's features are L2-normalised before R: what comes back is their direction
    what = {
        "sample": "each sample's view-averaged feature directions (unit feature vectors)",
        "class": "each class's mean feature direction",
        "views": "each augmented view's feature direction",
    }[kind]
    if R is not None and not np.isfinite(R).all():  # only a crafted file (its digest matched)
        t["reconstruction"] = {"method": "none (R holds NaN or infinite values)", "kind": "none"}
        t["finding"] = "R holds non-finite values, so no reconstruction was measured; " + REDACTED_NOTE
        t["verdict"] = "LEAKS GEOMETRY: pairwise similarities of " + what + " are revealed"
        return t
    rank = int(np.linalg.matrix_rank(np.asarray(R, dtype=np.float64))) if R is not None else 0
    if R is not None and rank == d:
        m = _measure_exact(phi.reshape(-1, r), R)
        t["reconstruction"] = {"method": "pseudo-inverse (exact: R has full row rank d)", "kind": "exact", **m}
        exact = m["max_rel_error"] <= EXACT_TOL.get(dtype, 5e-2)
        extra = (
            "feature directions recoverable exactly up to the view-averaging"
            if kind == "sample"
            else f"{what} recoverable exactly"
        )
        t["finding"] = (
            f"{extra}: phi @ pinv(R) gives {what} (d={d}); re-projection error on the file's own "
            f"{m['rows_measured']} rows: max {m['max_rel_error']:.2e} relative"
            + (f" ({dtype} storage rounding)" if exact else f" (more than {dtype} rounding explains: check the file)")
        )
        t["verdict"] = f"EXPOSED: {what} can be read back exactly"
    elif R is not None:
        sim = simulate_min_norm(R)
        why = f"r={r} < d={d}" if r < d else f"R has rank {rank} < d={d}"
        t["reconstruction"] = {
            "method": f"minimum-norm pseudo-inverse ({why})",
            "kind": "estimate",
            "estimated_mean_cosine": sim["mean_cosine"],
            "simulation": sim,
            "dimensions_revealed": f"{rank} of {d}",
        }
        t["finding"] = (
            f"{why}: the minimum-norm reconstruction keeps a {rank}-dimensional view of {what}; "
            f"ESTIMATED mean cosine to the true features {sim['mean_cosine']:.2f} (simulation with "
            "ReLU-like features, not measured on this file: the true features are not in it); "
            "published attacks do better"
        )
        t["verdict"] = (
            f"LEAKS: {what} partly recoverable (estimated cosine {sim['mean_cosine']:.2f}, "
            "a lower bound for an attacker)"
        )
    else:
        geo = simulate_geometry(d, r) if d * r <= _SIM_MAX else None
        t["reconstruction"] = {"method": "none (R not available)", "kind": "none", "geometry_simulation": geo}
        t["finding"] = REDACTED_NOTE + (
            f"; simulated pairwise-cosine error {geo['mean_abs_cosine_error']:.3f} "
            f"(correlation {geo['correlation']:.2f}) at r={r}"
            if geo
            else ""
        )
        t["verdict"] = (
            "LEAKS GEOMETRY: pairwise similarities of "
            + what
            + " are revealed; R is not stored, so the relational loss is the only use of these rows"
        )
    if kind == "class":
        t["finding"] += "; the table reveals class means"
    return t


def logits_finding(fp: FingerprintFile) -> dict | None:
    """What the file's logit table (format 1.3) exposes, or None without one."""
    info = fp.logits_info
    if info is None:
        return None
    spec, v = info.spec, fp.metadata.views
    holds = {
        "mean": "every sample's logits, averaged over its views: all C outputs",
        "full": f"every view's logits (K={v.per_sample}, views replayable from view_params): all C outputs",
        "topk": f"the top {spec.k} logits and classes of every view (the teacher's ranking and margins)",
        "sample": f"{spec.k} classes per view drawn from softmax(z/{spec.temperature}): an unbiased sample of "
        "the teacher's output distribution",
    }[spec.kind]
    return {
        "kind": spec.kind,
        "k": spec.k,
        "dtype": spec.dtype,
        "holds": holds,
        "finding": "the teacher's decision function on the build's images: exactly the (input, output) pairs "
        "a model-extraction attack collects by querying the teacher, with no query budget; anyone holding "
        "the images can fit a copy of the teacher's predictions (that is what distillation does), and "
        "confidences on training images also feed membership inference",
        "redact": "--redact does not hide logit tables: it leaves out R and its seed only; build without "
        "--logits (or share topk/sample tables, which reveal less) to withhold them",
    }


def audit_file(path: str | os.PathLike, *, seed_search: int = SEED_SEARCH) -> dict:
    """Audit what a fingerprint file reveals.  Returns plain JSON-able data.

    Raises the errors of :func:`fpkit.format.open_fingerprints` (the file is fully verified first).
    """
    fp = open_fingerprints(path)
    m = fp.metadata
    layers = []
    for lay in fp.layers:
        R, proj = _find_projection(lay, fp, seed_search)
        tables = []
        for kind in lay.tables:
            phi = fp.table(kind, lay.name)
            t = _audit_table(kind, phi, lay.d, lay.r, R, m.storage.dtype)
            t["dtype"] = m.storage.dtype
            tables.append(t)
        layers.append(
            {
                "name": lay.name,
                "pooling": lay.pooling,
                "d": lay.d,
                "r": lay.r,
                "r_ge_d": lay.r >= lay.d,
                "projection": proj,
                "tables": tables,
            }
        )
    t, ds = m.teacher, m.dataset
    metadata = {
        "teacher": {
            "arch": t.arch,
            "weights_sha256": t.weights_sha256,
            "accuracy": None if t.accuracy is None else t.accuracy.to_json(),
            "trusted_code": t.trusted_code,
            "source_kind": t.source_kind,
        },
        "dataset": {
            "name": ds.name,
            "split": ds.split,
            "num_samples": ds.num_samples,
            "num_classes": ds.num_classes,
            "labels_sha256": ds.labels_sha256,
            "order_sha256": ds.order_sha256,
        },
        "labels_stored": True,
        "sample_digests_stored": True,
        "view_params_stored": fp.view_params is not None,
        "notes": [
            "labels of every sample are stored in clear",
            "sample_digests (first 8 bytes of SHA-256 of each image's pixels) let anyone holding an image "
            "test whether it is in the file (membership), and identify the dataset and its order",
            "teacher identity (weights SHA-256, architecture) and measured accuracy are in the metadata",
        ]
        + (["view_params record each view's crop and flip"] if fp.view_params is not None else []),
    }
    if t.trusted_code:
        metadata["notes"].append("the teacher was loaded with --trust-teacher-code (it ran code when loaded)")
    return {
        "path": str(fp.path),
        "format_version": fp.format_version,
        "num_samples": fp.num_samples,
        "num_classes": fp.num_classes,
        "storage": m.storage.to_json(),
        "layers": layers,
        "logits": logits_finding(fp),
        "metadata": metadata,
        "disclaimer": NOT_PRIVATE,
    }


def format_audit(report: dict) -> str:
    """Human-readable text of :func:`audit_file`'s result (names from the file escaped: fpkit/_text.py)."""
    report = printable_tree(report)
    lines = [
        f"{report['path']}: privacy audit (fingerprint format {report['format_version']}, "
        f"{report['num_samples']:,} samples, {report['num_classes']} classes, "
        f"{report['storage']['dtype']}/{report['storage']['codec']})"
    ]
    for lay in report["layers"]:
        p = lay["projection"]
        status = {
            "stored": "stored",
            "seed": "derivable from its seed",
            "recovered": "RECOVERED by seed search",
            "redacted": "redacted (not stored, no seed)",
        }[p["status"]]
        lines.append(
            f"  layer {lay['name']}: d={lay['d']}, r={lay['r']} ({'r >= d' if lay['r_ge_d'] else 'r < d'}), R {status}"
        )
        lines.append(f"    {p['how']}")
        for t in lay["tables"]:
            lines.append(f"    table {t['kind']} {t['shape']} {t['dtype']}: {t['holds']}")
            lines.append(f"      {t['finding']}")
            lines.append(f"      verdict: {t['verdict']}")
    if (lg := report.get("logits")) is not None:
        lines.append(f"  logits ({lg['kind']}, {lg['dtype']}): {lg['holds']}")
        lines.append(f"    {lg['finding']}")
        lines.append(f"    {lg['redact']}")
    md = report["metadata"]
    acc = md["teacher"]["accuracy"]
    lines.append(
        f"  metadata: teacher {md['teacher']['arch']} (weights sha256 "
        f"{str(md['teacher']['weights_sha256'])[:16]}...), accuracy "
        + (f"{acc['top1']:.4f}" if isinstance(acc, dict) and "top1" in acc else "not recorded")
        + f"; dataset {md['dataset']['name']}/{md['dataset']['split']}"
    )
    for note in md["notes"]:
        lines.append(f"    - {note}")
    lines.append(f"  note: {report['disclaimer']}")
    return "\n".join(lines)


__all__ = ["audit_file", "format_audit", "simulate_min_norm", "simulate_geometry"]
