"""Size and write/read speed of every codec x storage dtype on realistic fingerprints.

    python -m bench.codecs [--n 50000] [--r 128] [--views 8] [--repeat 3] [--source auto]
    python -m bench.codecs --n 1000 --views 1 --repeat 1          # smallest: a check that it runs

Fingerprints are made as the method makes them: non-negative pooled features (d = 64) of 8 views
per sample, each L2-normalised, projected through R = make_projection(64, 128) and averaged over
the views (float32).  The features are synthetic by default ("ReLU-like": absolute values of
correlated Gaussians, each view a perturbation of its sample's latent vector).  ``--source resnet``
(or ``auto`` when fpkit ships the CIFAR ResNets and the embedded image sample) also computes real
layer3 features of a CIFAR ResNet on the 500 embedded CIFAR-10 images under pad-crop-flip views
and reports the compression ratios on those fingerprints next to the synthetic ones, so the two
can be compared (a CPU cannot afford 400,000 forward passes in a benchmark).

Each write is a whole FingerprintWriter run (encode, fidelity, chunking, compression, SHA-256,
fsync, rename); each read is open_fingerprints (validation, decompression, SHA-256 check) plus
decoding the table to float32, on a warm page cache.  The codec-only columns time just the
already-encoded per-sample table going through codecs.write_chunk / codecs.read_table (chunks of
1024 rows, no checksums of fpkit's own, no fsync).  MB/s count the float32 payload N x r x 4
bytes, so rows compare across dtypes.  Times are the best of --repeat runs (bench.harness.timeit,
the four operations of a codec x dtype taking turns).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np

from bench import harness as H
from fpkit.format import FileContents, FingerprintWriter, LayerSpec, StorageInfo, codecs, open_fingerprints, quantize
from fpkit.format.spec import DEFAULT_CHUNK_ROWS
from fpkit.projection import make_projection
from fpkit.testing import example_compute, example_contents, example_views

CODECS = ("none", "gzip", "zstd")
DTYPES = ("float32", "float16", "int8")


def _normalize(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True).clip(min=1e-12)


def synthetic_features(n: int, d: int, views: int, seed: int = 0) -> np.ndarray:
    """float32 [n, views, d] non-negative features: |L (z + 0.35 e_v)| with a random correlated L."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((d, d)) / np.sqrt(d)
    cov = a @ a.T + 0.25 * np.eye(d)
    L = np.linalg.cholesky(cov).astype(np.float32)
    z = rng.standard_normal((n, 1, d), dtype=np.float32)
    e = rng.standard_normal((n, views, d), dtype=np.float32)
    return np.abs((z + np.float32(0.35) * e) @ L.T)


def fingerprints(feats: np.ndarray, R: np.ndarray, batch: int = 8192) -> np.ndarray:
    """mean over views of normalize(features) @ R, float32 [n, r]."""
    out = np.empty((feats.shape[0], R.shape[1]), dtype=np.float32)
    for s in range(0, feats.shape[0], batch):
        f = _normalize(feats[s : s + batch].astype(np.float32))
        out[s : s + batch] = (f @ R).mean(axis=1)
    return out


def resnet_features(views: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, str] | None:
    """Real layer3 features [500, views, 64] of a CIFAR ResNet on the embedded images, or None."""
    try:
        from importlib import resources

        import torch

        from fpkit.models import cifar_resnet

        ref = resources.files("fpkit") / "data" / "embedded_sample.npz"
        with resources.as_file(ref) as p:
            if not Path(p).is_file():
                return None
            data = np.load(p)
            images, labels = data["images"], data["labels"]
    except Exception:
        return None
    try:
        from fpkit.teachers import load_embedded_teacher

        model, what = load_embedded_teacher().model, "embedded trained resnet8"
    except Exception:
        torch.manual_seed(seed)
        model, what = cifar_resnet.resnet8(num_classes=10), "resnet8 with random init (no trained teacher ships)"
    model.eval()
    feats: dict = {}
    hook = model.layer3.register_forward_hook(lambda _m, _i, o: feats.__setitem__("x", o))
    rng = np.random.default_rng(seed)
    n, h, w, _ = images.shape
    padded = np.pad(images, ((0, 0), (4, 4), (4, 4), (0, 0)))
    mean = np.array([0.4914, 0.4822, 0.4465], np.float32)
    std = np.array([0.2470, 0.2435, 0.2616], np.float32)
    out = np.empty((n, views, 64), dtype=np.float32)
    with torch.no_grad():
        for v in range(views):
            top, left, flip = rng.integers(0, 9, n), rng.integers(0, 9, n), rng.integers(0, 2, n)
            crops = np.stack([padded[i, top[i] : top[i] + h, left[i] : left[i] + w] for i in range(n)])
            crops = np.where(flip[:, None, None, None] == 1, crops[:, :, ::-1], crops)
            x = torch.from_numpy(((crops / np.float32(255) - mean) / std).transpose(0, 3, 1, 2).copy())
            model(x.float())
            out[:, v] = feats["x"].mean(dim=(2, 3)).numpy()
    hook.remove()
    return out, labels, what


def contents(labels: np.ndarray, R: np.ndarray, dtype: str, codec: str, k: int) -> FileContents:
    """One layer, the sample table only, fpkit.testing's example metadata with k views per sample."""
    n = len(labels)
    c = example_contents(
        [LayerSpec("layer3", "avg", R.shape[0], R, 0)],
        labels,
        tables=("sample",),
        storage=StorageInfo(dtype=dtype, codec=codec),
    )
    return replace(
        c,
        sample_digests=np.arange(n, dtype=np.uint64),
        classes=[str(i) for i in range(len(c.classes))],
        views=example_views(k),
        compute=example_compute(batch_size=4096),
    )


def write(
    path: Path, rows: np.ndarray, labels: np.ndarray, R: np.ndarray, dtype: str, codec: str, k: int, batch: int = 4096
) -> None:
    n = rows.shape[0]
    with FingerprintWriter(path, contents(labels, R, dtype, codec, k), overwrite=True) as w:
        for s in range(0, n, batch):
            w.append({"layer3": rows[s : s + batch]})


def read(path: Path) -> np.ndarray:
    return open_fingerprints(path).table("sample")


def table_only(path: Path, stored: np.ndarray, codec: str) -> None:
    """Just the codec: write one encoded table chunk by chunk into a fresh HDF5 file."""
    with h5py.File(path, "w") as f:
        d = codecs.create_table(f, "t", stored.shape, str(stored.dtype), codec, DEFAULT_CHUNK_ROWS)
        for s in range(0, stored.shape[0], DEFAULT_CHUNK_ROWS):
            codecs.write_chunk(d, codec, s, stored[s : s + DEFAULT_CHUNK_ROWS])


def table_read(path: Path, codec: str) -> np.ndarray:
    with h5py.File(path, "r") as f:
        return codecs.read_table(f["t"], codec)


def machine_line(m: dict) -> str:
    """The machine description of bench.harness on one line."""
    libs = m["libraries"]
    return (
        f"{m['platform']}, {m['cpu']}, {m['cpu_count']} CPUs, load average {m['load_average_at_start']}; "
        f"Python {m['python']}, numpy {libs['numpy']}, h5py {libs['h5py']}, HDF5 {libs.get('HDF5', '?')}, "
        f"zstandard {libs['zstandard']}, torch {m['torch']} ({m['torch_threads']} threads), GPU {m['gpu']}"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.codecs", description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--d", type=int, default=64)
    ap.add_argument("--r", type=int, default=128)
    ap.add_argument("--views", type=int, default=8)
    ap.add_argument("--classes", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--source", choices=("auto", "synthetic", "resnet"), default="auto")
    ap.add_argument("--dir", default=None, help="folder for the files (default: a temporary folder)")
    H.add_common_args(ap, device=False)
    a = ap.parse_args(argv)
    run = H.Run("codecs", "bench_codecs: size and write/read speed of every codec x storage dtype", a, header=False)
    res = run.results
    res.update(files={}, real_vs_synthetic={})

    R = make_projection(a.d, a.r, 0)
    rows = fingerprints(synthetic_features(a.n, a.d, a.views, a.seed), R)
    labels = np.random.default_rng(a.seed + 1).integers(0, a.classes, a.n)
    payload = a.n * a.r * 4
    res["payload_bytes"] = payload
    print(f"# fpkit codec benchmark: N={a.n}, d={a.d}, r={a.r}, {a.views} views, best of {a.repeat}")
    print(f"# machine: {machine_line(run.machine)}")
    print(f"# features: synthetic ReLU-like (|correlated Gaussian|, d={a.d}); float32 payload {payload / 1e6:.1f} MB")
    print(f"# command: {run.machine['argv']}")
    print()
    print(
        "| codec | dtype | file bytes | vs float32-none | write MB/s | read MB/s | codec-only write MB/s "
        "| codec-only read MB/s | min cos |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    sizes: dict[tuple[str, str], int] = {}
    with tempfile.TemporaryDirectory(dir=a.dir) as tmp:
        for dtype in DTYPES:
            for codec in CODECS:
                path = Path(tmp) / f"{dtype}-{codec}.h5"
                stored, _scale = quantize.encode(rows, dtype)
                tpath = Path(tmp) / "table.h5"
                # each operation reads what the one before it wrote: write, read, codec-only write, read
                t = H.timeit(
                    {
                        "write": lambda: write(path, rows, labels, R, dtype, codec, a.views),
                        "read": lambda: read(path),
                        "codec-only write": lambda: table_only(tpath, stored, codec),
                        "codec-only read": lambda: table_read(tpath, codec),
                    },
                    repeats=a.repeat,
                    log=False,
                )
                tw, tr, cw, cr = (t.best(k) for k in t)
                fp = open_fingerprints(path)
                sizes[(codec, dtype)] = path.stat().st_size
                base = sizes[("none", "float32")]
                fid = fp.layer().fidelity["sample"]
                res["files"][f"{codec}/{dtype}"] = {"bytes": sizes[(codec, dtype)], "min_cos": fid, "seconds": t}
                print(
                    f"| {codec} | {dtype} | {sizes[(codec, dtype)]:,} | {sizes[(codec, dtype)] / base:.3f} | "
                    f"{payload / tw / 1e6:,.0f} | {payload / tr / 1e6:,.0f} | "
                    f"{payload / cw / 1e6:,.0f} | {payload / cr / 1e6:,.0f} | "
                    f"{fid:.9f} |",
                    flush=True,
                )
        if a.source != "synthetic":
            real = resnet_features(a.views, a.seed)
            if real is None:
                print(
                    "\n# resnet features: not available (fpkit.models.cifar_resnet or the embedded sample is missing)"
                )
            else:
                feats, lab, what = real
                m = feats.shape[0]
                print(
                    f"\n# compression ratio (file bytes / float32-none) on {m} real fingerprints "
                    f"({what}, layer3 avg-pooled, {a.views} pad-crop-flip views) vs {m} synthetic ones"
                )
                print("| codec | dtype | real features | synthetic |")
                print("|---|---|---:|---:|")
                sets = {"real": (fingerprints(feats, R), lab), "synthetic": (rows[:m], labels[:m])}
                ratio: dict = {}
                for key, (x, y) in sets.items():
                    for dtype in DTYPES:
                        for codec in CODECS:
                            path = Path(tmp) / f"{key}-{dtype}-{codec}.h5"
                            write(path, x, y, R, dtype, codec, a.views)
                            ratio[(key, codec, dtype)] = path.stat().st_size
                for dtype in DTYPES:
                    for codec in CODECS:
                        print(
                            f"| {codec} | {dtype} | "
                            + " | ".join(
                                f"{ratio[(k, codec, dtype)] / ratio[(k, 'none', 'float32')]:.3f}"
                                for k in ("real", "synthetic")
                            )
                            + " |"
                        )
                res["real_vs_synthetic"] = {
                    "features": what,
                    "rows": m,
                    "bytes": {"/".join(k): v for k, v in ratio.items()},
                }
    print()
    run.save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
