"""Soft labels (issue 13): storage of each --logits option, and the bias of each sparse scheme.

1. Storage, from the format's own layout rules (fpkit.format.logits.datasets: shapes and dtypes
   of the stored datasets; HDF5 overhead, under 1 MB, not included): mean [N, C], full
   [N, K, C], topk:k (values + int32 indices) and sample:k (int32 indices) for N = 50,000 with
   C = 10 and 100, and N = 1,281,167 (ImageNet-1k train) with C = 1000, K = 8 views, float16
   values; the published FKD and TinyViT figures (quoted, bench/storage_scale.py) next to them.
2. Fidelity and bias against float32 full logits, on a real file: the embedded teacher run by
   ``fpkit build --replay --logits full --dtype float32`` over the embedded CIFAR-10 sample.  For
   each scheme, at temperature T, per view: the target distribution it gives the loss (full:
   softmax(z/T); float16: softmax of the float16 logits; topk:k: softmax over the top k,
   renormalised; sample:k: the k draws' frequencies, drawn at T; mean: softmax(mean_k z_k / T),
   the per-sample table, against each view's own distribution) and
   * TV: the mean total-variation distance between that target and softmax(z/T) (0 = exact);
   * bias: the TV of the target averaged over --seeds independent draws (sample) - what remains
     when the noise averages out (for deterministic schemes bias = TV);
   * grad err: ||grad - grad_full|| / ||grad_full|| of the KD loss w.r.t. a student's logits
     (a student predicting uniform: zeros), for one draw.
   The KD gradient w.r.t. the student's logits is T (q - target), so TV is the loss's error.

    python -m bench.soft_labels                 (builds the real file: ~30 s on a CPU)
    python -m bench.soft_labels --n 40 --seeds 4 (smallest)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

from bench import harness as H
from bench.storage_scale import PUBLISHED

SCHEMES = ("mean", "full", "topk:1", "topk:3", "topk:5", "sample:4", "sample:16", "sample:64")


def storage_rows(k: int = 8) -> list[list]:
    """[N, C, option, bytes, MB] of every --logits option, float16 values."""
    from fpkit.format.logits import LogitsSpec, datasets

    rows = []
    for n, c in ((50_000, 10), (50_000, 100), (1_281_167, 1000)):
        for text in ("mean", "full", "topk:5", "topk:10", "sample:16", "sample:64"):
            spec = LogitsSpec.parse(text)
            if spec.k is not None and spec.kind == "topk" and spec.k > c:
                continue
            size = sum(d.nbytes for d in datasets(spec, n, c, k))
            rows.append([n, c, f"{text} ({'per sample' if text == 'mean' else f'per view, K={k}'})", size, size / 1e6])
        spec = LogitsSpec("full", dtype="float32")
        size = sum(d.nbytes for d in datasets(spec, n, c, k))
        rows.append([n, c, f"full float32 (per view, K={k})", size, size / 1e6])
    for what, size in PUBLISHED:
        rows.append([1_281_167, 1000, what, int(size), size / 1e6])
    return rows


def _softmax(z: np.ndarray, t: float) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64) / t
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def targets(z: np.ndarray, scheme: str, t: float, seed: int) -> np.ndarray:
    """The target distribution [N, K, C] a scheme gives the KD loss at temperature t."""
    from fpkit.format.logits import sample_draws, topk

    c = z.shape[-1]
    if scheme == "mean":
        return np.broadcast_to(_softmax(z.mean(1), t)[:, None], z.shape)
    if scheme == "full":
        return _softmax(z.astype(np.float16).astype(np.float32), t)
    kind, k = scheme.split(":")
    if kind == "topk":
        values, idx = topk(z, int(k))
        out = np.zeros(z.shape)
        np.put_along_axis(out, idx.astype(np.int64), _softmax(values.astype(np.float16), t), -1)
        return out
    draws = sample_draws(z, int(k), t, seed, 0)
    return np.stack([(draws == j).mean(-1) for j in range(c)], -1)


def bias_rows(z: np.ndarray, temps, seeds: int) -> list[list]:
    """[T, scheme, TV, bias, grad err] on the file's float32 logits z [N, K, C]."""
    rows = []
    for t in temps:
        p = _softmax(z, t)
        q = np.full_like(p, 1.0 / z.shape[-1])  # the uniform student
        g_full = t * (q - p)
        for scheme in SCHEMES:
            one = targets(z, scheme, t, 0)
            tv = 0.5 * np.abs(one - p).sum(-1).mean()
            if scheme.startswith("sample"):
                avg = np.mean([targets(z, scheme, t, s) for s in range(seeds)], axis=0)
                bias = 0.5 * np.abs(avg - p).sum(-1).mean()
            else:
                bias = tv
            g = t * (q - one)
            err = float(np.linalg.norm(g - g_full) / np.linalg.norm(g_full))
            rows.append([t, scheme, float(tv), float(bias), err])
    return rows


def build_real_file(out: Path, n: int, views: int) -> Path:
    """The embedded teacher over the embedded sample, --replay --logits full --dtype float32."""
    from fpkit.build import BuildOptions, build

    opts = BuildOptions(
        output=str(out), views=views, replay=True, logits="full", dtype="float32", limit=n, device="cpu"
    )
    build(opts, quiet=True)
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=500, help="samples of the embedded sample (at most 500)")
    p.add_argument("--views", type=int, default=8)
    p.add_argument("--temps", default="1,4", help="temperatures, comma-separated")
    p.add_argument("--seeds", type=int, default=32, help="independent draws averaged for the bias of sample:k")
    H.add_common_args(p, device=False)
    a = p.parse_args(argv)
    run = H.Run("soft_labels", "soft labels: storage and bias of the logit tables", a)
    run.results["storage"] = storage_rows(a.views)
    H.print_table(
        "Storage of the logit tables (fpkit.format.logits layout; float16 values unless said; published rows quoted)",
        ["N", "C", "option", "bytes", "MB"],
        run.results["storage"],
    )
    from fpkit.format import open_fingerprints

    with tempfile.TemporaryDirectory() as d:
        path = build_real_file(Path(d) / "fp.h5", a.n, a.views)
        fp = open_fingerprints(path)
        z = fp.logit_targets()
        acc = fp.metadata.teacher.accuracy
    temps = [float(x) for x in a.temps.split(",")]
    run.results["bias"] = bias_rows(z, temps, a.seeds)
    H.print_table(
        f"Bias against float32 full logits: embedded teacher, embedded sample, N={z.shape[0]}, K={z.shape[1]}, "
        f"C={z.shape[2]} (teacher top-1 on these views {acc.top1 if acc else 'n/a'}); mean TV per view, "
        f"bias = TV of the mean over {a.seeds} draws, grad err of KD at a uniform student",
        ["T", "scheme", "TV", "bias", "grad err"],
        run.results["bias"],
    )
    run.save()


if __name__ == "__main__":
    sys.exit(main())
