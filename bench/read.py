"""Reading fingerprints while training: DataLoader throughput, per-row lookups, file open time.

1. DataLoader throughput, FingerprintDataset vs the plain dataset, on an N-image subset of
   CIFAR-10 (JPEG q75; an ImageFolder of symlinks, so JPEG decoding is included), both with the
   student's transform RandomCrop(32, padding=4) + RandomHorizontalFlip + ToTensor + Normalize,
   same batch size and shuffling seed, num_workers from --workers (persistent workers, one
   warm-up epoch, then epochs interleaved plain, fingerprint, plain, ...).  Batches are moved to
   the device (pinned, non-blocking on CUDA).  Headline: fingerprint / plain samples per second,
   target >= 0.95; with num_workers=0 also the ratio of main-process CPU seconds per epoch
   (time.process_time), which other jobs on a shared machine disturb much less than wall time.
2. Per-row cost of ``fp.table('sample')[i]`` (the accessor, then a numpy row) against a plain
   numpy row of the loaded array, and ``FingerprintDataset.__getitem__`` overhead: the wrapper
   around a dataset that returns ready-made items (no decoding, no transform), minus that
   dataset's own ``__getitem__``.
3. Opening a 50,000 x 128 float16 file (written here with FingerprintWriter from random rows):
   ``open_fingerprints`` with and without SHA-256 verification, the first ``table()`` (fp16 ->
   fp32 decode), and a bare h5py read of the same dataset for reference.  The file is in the
   page cache (just written): these are warm-cache times.

Quick (defaults, ~1-2 min on a 2-core CPU):  python -m bench.read
Full:  python -m bench.read --n 50000 --reps 5
ImageNet scale (1.28 M x 128 float16, 8 workers: memory, random-row reads): python -m bench.read --scale
Smallest (a check that it runs):
    python -m bench.read --n 20 --workers 0 --reps 1 --batch-size 8 --lookups 100 --file-n 500 --file-reps 1
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from bench import harness as H


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        prog="python -m bench.read",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--n", type=int, default=3000, help="images in the DataLoader subset (full: 50000)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--workers", default="0,2", help="comma list of DataLoader num_workers")
    p.add_argument("--reps", type=int, default=5, help="interleaved epochs per variant")
    p.add_argument("--r", type=int, default=128)
    p.add_argument("--dtype", default="float16", choices=["float32", "float16", "int8"])
    p.add_argument("--lookups", type=int, default=200_000, help="random row lookups per timing")
    p.add_argument("--file-n", type=int, default=50_000, help="rows of the open/load test file")
    p.add_argument("--file-r", type=int, default=128)
    p.add_argument("--file-classes", type=int, default=100)
    p.add_argument("--file-reps", type=int, default=7)
    p.add_argument("--data", type=Path, default=H.DEFAULT_DATA, help="CIFAR-10 JPEG root (train/, test/)")
    H.add_common_args(p)
    return p.parse_args(argv)


def write_file(path: Path, labels, digests, classes, r: int, dtype: str, seed: int, codec: str = "none") -> float:
    """Write random fingerprint-like rows (unit-norm-ish, |x| < 2); return seconds."""
    from fpkit.format import FingerprintWriter, LayerSpec, StorageInfo
    from fpkit.projection import make_projection
    from fpkit.testing import example_contents

    rng = np.random.default_rng(seed)
    n = len(labels)
    spec = LayerSpec("layer3", "avg", 64, make_projection(64, r, 0), 0)
    contents = replace(
        example_contents([spec], labels, num_classes=len(classes), storage=StorageInfo(dtype=dtype, codec=codec)),
        sample_digests=np.asarray(digests),
        classes=classes,
    )
    t0 = time.perf_counter()
    with FingerprintWriter(path, contents, overwrite=True) as w:
        for s in range(0, n, 4096):
            e = min(n, s + 4096)
            w.append({"layer3": (rng.standard_normal((e - s, r)) * 0.09).astype(np.float32)})
    return time.perf_counter() - t0


class ReadyItems(torch.utils.data.Dataset):
    """Returns pre-made (uint8 HWC array, label) items: __getitem__ costs next to nothing."""

    def __init__(self, images: np.ndarray, labels, classes):
        self.images = images
        self.targets = list(labels)
        self.classes = list(classes)

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        return self.images[i], self.targets[i]


def call_each(fn, idx: np.ndarray):
    """A callable that calls ``fn(i)`` for every index (per-call cost = its time / len(idx))."""

    def run():
        for i in idx:
            fn(i)

    return run


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--scale" in argv:  # ImageNet-scale memory and random-row reads: bench/read_scale.py
        from bench import read_scale

        return read_scale.main([a for a in argv if a != "--scale"])
    args = parse_args(argv)
    run = H.Run("read", "bench_read: FingerprintDataset / DataLoader, row lookups, file open", args)
    dev = run.device
    import torchvision.transforms as T

    from fpkit import FingerprintDataset
    from fpkit.datasets import open_source
    from fpkit.format import open_fingerprints
    from fpkit.format.digests import sample_digest

    tmp = Path(tempfile.mkdtemp(prefix="fpkit-bench-read-"))
    out = run.results
    try:
        # ------------------------------------------------------------ 1. DataLoader throughput
        paths, labels, classes = H.cifar_files(args.data, "train", args.n)
        H.subset_folder(paths, labels, classes, tmp / "data", "train")
        src = open_source(f"imagefolder:{tmp / 'data'}", split="train", normalize="cifar10")
        raw = src.torch_dataset()
        digests = np.array([sample_digest(np.asarray(raw[i][0])) for i in range(len(raw))], dtype=np.uint64)
        fp_path = tmp / "fp.h5"
        write_file(fp_path, src.labels, digests, src.classes, args.r, args.dtype, args.seed)

        tf = T.Compose(
            [
                T.RandomCrop(32, padding=4),
                T.RandomHorizontalFlip(),
                T.ToTensor(),
                T.Normalize(H.CIFAR10_MEAN, H.CIFAR10_STD),
            ]
        )
        plain_ds = src.torch_dataset(transform=tf)
        fp_ds = FingerprintDataset(fp_path, src.torch_dataset(), transform=tf)
        cuda = dev.type == "cuda"
        loader_rows = []
        loader_raw = {}
        for w in [int(x) for x in args.workers.split(",") if x.strip()]:

            def make(ds, w=w):
                g = torch.Generator().manual_seed(args.seed)
                return torch.utils.data.DataLoader(
                    ds,
                    batch_size=args.batch_size,
                    shuffle=True,
                    generator=g,
                    num_workers=w,
                    pin_memory=cuda,
                    persistent_workers=w > 0,
                    drop_last=False,
                )

            loaders = {"plain": make(plain_ds), "fingerprint": make(fp_ds)}

            def epoch(loader):
                def one_epoch():
                    n = 0
                    for batch in loader:
                        for t in batch:
                            if isinstance(t, torch.Tensor):
                                t.to(dev, non_blocking=cuda)
                        n += len(batch[0])
                    return n

                return one_epoch

            print(f"DataLoader num_workers={w}:", file=sys.stderr, flush=True)
            times = H.timeit(
                {f"plain w={w}": epoch(loaders["plain"]), f"fingerprint w={w}": epoch(loaders["fingerprint"])},
                repeats=args.reps,
                warmup=1,
                device=dev,
            )
            tp, tf_ = times[f"plain w={w}"], times[f"fingerprint w={w}"]
            per_rep = [a / b for a, b in zip(tp, tf_)]
            loader_raw[w] = times
            # main-process CPU seconds: with num_workers=0 all the work, and far less sensitive to other jobs
            cp, cf = times.cpu[f"plain w={w}"], times.cpu[f"fingerprint w={w}"]
            cpu_ratio = H.median(cp) / H.median(cf) if w == 0 else float("nan")
            loader_rows.append(
                [
                    w,
                    len(plain_ds) / H.median(tp),
                    H.spread(tp),
                    len(plain_ds) / H.median(tf_),
                    H.spread(tf_),
                    H.median(tp) / H.median(tf_),
                    H.median(per_rep),
                    cpu_ratio,
                ]
            )
            del loaders
        H.print_table(
            f"DataLoader throughput, N={args.n} CIFAR-10 JPEG images, batch {args.batch_size}, "
            f"r={args.r} {args.dtype}, median of {args.reps} interleaved epochs (headline: ratio, "
            "target >= 0.95)",
            [
                "num_workers",
                "plain samples/s",
                "spread",
                "FingerprintDataset samples/s",
                "spread",
                "ratio fp/plain",
                "median per-epoch ratio",
                "CPU-time ratio (w=0)",
            ],
            loader_rows,
        )
        out["dataloader"] = {"rows": loader_rows, "seconds": loader_raw}

        # ------------------------------------------------------------ 2. per-row costs
        fp = open_fingerprints(fp_path)
        arr = fp.table("sample")
        rng = np.random.default_rng(args.seed)
        idx = rng.integers(0, len(arr), args.lookups)
        ready = ReadyItems(H.decode(paths), src.labels, src.classes)
        fds = FingerprintDataset(fp, ready, transform=None, check_samples=0)
        fds_class = FingerprintDataset(fp, ready, table="class", transform=None)
        variants = {
            "fp.table('sample')[i]": lambda i: fp.table("sample")[i],
            "arr[i] (numpy row)": lambda i: arr[i],
            "torch.from_numpy(arr[i])": lambda i: torch.from_numpy(arr[i]),
            "ready_items[i] (inner dataset)": lambda i: ready[i],
            "FingerprintDataset[i] sample": lambda i: fds[i],
            "FingerprintDataset[i] class": lambda i: fds_class[i],
        }
        small = idx[: min(len(idx), 50_000)]
        indices = {k: idx if "Fingerprint" not in k and "ready" not in k else small for k in variants}
        passes = H.timeit({k: call_each(fn, indices[k]) for k, fn in variants.items()}, repeats=3, log=False)
        counts = {k: len(v) for k, v in indices.items()}
        med = {k: 1e6 * passes.median(k) / counts[k] for k in variants}
        over_s = med["FingerprintDataset[i] sample"] - med["ready_items[i] (inner dataset)"]
        over_c = med["FingerprintDataset[i] class"] - med["ready_items[i] (inner dataset)"]
        H.print_table(
            "Per-call cost (microseconds, median of 3 interleaved passes over random indices)",
            ["call", "us per call"],
            [[k, v] for k, v in med.items()]
            + [
                ["=> FingerprintDataset.__getitem__ overhead, sample table", over_s],
                ["=> FingerprintDataset.__getitem__ overhead, class table", over_c],
            ],
        )
        out["per_call_us"] = med | {"getitem_overhead_sample": over_s, "getitem_overhead_class": over_c}
        out["per_call_passes"] = {"calls_per_pass": counts, "seconds": passes}

        # ------------------------------------------------------------ 3. open + load a 50k x 128 fp16 file
        import h5py

        big = tmp / "big.h5"
        n, c = args.file_n, args.file_classes
        big_labels = np.arange(n, dtype=np.int64) % c
        big_digests = np.arange(n, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        t_write = write_file(
            big, big_labels, big_digests, [f"c{i}" for i in range(c)], args.file_r, "float16", args.seed + 1
        )
        size = big.stat().st_size

        def open_verify():
            return open_fingerprints(big)

        def open_noverify():
            return open_fingerprints(big, verify=False)

        def open_and_table():
            return open_fingerprints(big).table("sample")

        def h5_raw():
            with h5py.File(big, "r", locking=False) as f:
                return f["layers/0/sample"][()]

        times = H.timeit(
            {
                "open_fingerprints(verify=True)": open_verify,
                "open_fingerprints(verify=False)": open_noverify,
                "open + table('sample') (fp16->fp32)": open_and_table,
                "h5py read of layers/0/sample": h5_raw,
            },
            repeats=args.file_reps,
            log=False,
        )
        H.print_table(
            f"Open + load a {n:,} x {args.file_r} float16 file ({size:,} bytes, {c} classes, "
            f"written in {t_write:.2f} s), warm page cache, median of {args.file_reps} interleaved",
            ["operation", "ms", "spread"],
            [[k, 1000 * H.median(v), H.spread(v)] for k, v in times.items()],
        )
        out["file"] = {
            "n": n,
            "r": args.file_r,
            "bytes": size,
            "write_s": t_write,
            "ms": {k: 1000 * H.median(v) for k, v in times.items()},
            "seconds": times,
        }

        headline = [[f"FingerprintDataset / plain DataLoader, num_workers={r[0]}", r[5]] for r in loader_rows]
        headline += [
            [f"  same, from main-process CPU time, num_workers={r[0]}", r[7]] for r in loader_rows if r[0] == 0
        ]
        H.print_table("Headline", ["ratio", "value"], headline)
        run.save()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
