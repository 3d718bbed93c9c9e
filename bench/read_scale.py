"""Reading at ImageNet scale: memory of FingerprintDataset under a DataLoader, random-row reads.

A synthetic N x r file (default 1.28 M x 128 float16, 1000 classes, codec none: 328 MB of table)
is written with fpkit.testing's example contents.  One FingerprintDataset (over a plain dataset
of one-pixel images, so the images cost nothing) is opened (verified once) in the parent, and a
DataLoader with --workers workers (--start-method, default forkserver: like spawn, it pickles the
dataset to every worker; Python 3.14's default on Linux) draws random batches until every worker
has served several.  Then /proc/<pid>/smaps_rollup of the parent and each worker gives RSS, PSS
(shared pages divided among the processes mapping them) and USS (private pages):

* sum of PSS over parent + workers is the memory the whole loader really uses; minus that of the
  same loader (same batches, same parent) over a 64-row file, it is what the workers add for the
  table, and divided by the table bytes held (stored + decoded float32) the number of extra copies;
* each worker's USS minus that of a baseline worker is the private memory a worker adds.

``--private`` repeats the measurement with the arrays copied out of shared memory (what fpkit did
before fpkit/shared_tables.py), for comparison.  Random-row reads per second: the target of
``FingerprintDataset.__getitem__`` at random indices (one process), a numpy gather of random
batches from the decoded table, and the DataLoader's items per second with the workers.

Full:  python -m bench.read --scale
Quick: python -m bench.read --scale --n 200000 --workers 4
"""

from __future__ import annotations

import argparse
import multiprocessing
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench import harness as H

MIB = 2**20


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.read --scale", description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=1_280_000)
    p.add_argument("--r", type=int, default=128)
    p.add_argument("--classes", type=int, default=1000)
    p.add_argument("--dtype", default="float16", choices=["float32", "float16", "int8"])
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--start-method", default="forkserver", choices=["fork", "forkserver", "spawn"])
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--batches", type=int, default=400, help="batches drawn from the DataLoader (timed)")
    p.add_argument("--lookups", type=int, default=200_000, help="random __getitem__ calls timed in one process")
    p.add_argument("--private", action="store_true", help="also measure with private (unshared) arrays")
    p.add_argument("--dir", type=Path, default=None, help="where to write the file (default: a temporary folder)")
    H.add_common_args(p, device=False)
    return p.parse_args(argv)


def plain(n: int) -> torch.utils.data.TensorDataset:
    """n one-pixel uint8 images with label 0: a plain dataset whose items cost nothing."""
    return torch.utils.data.TensorDataset(torch.zeros(n, 1, 1, 1, dtype=torch.uint8), torch.zeros(n, dtype=torch.int64))


def make_private(ds) -> None:
    """Copy the dataset's arrays out of shared memory (fpkit before shared_tables), in place."""
    fp = ds.fp
    copies = {id(a): np.array(a) for store in (fp.arrays, fp._decoded) for a in store.values()}
    for store in (fp.arrays, fp._decoded):
        for k, a in list(store.items()):
            store[k] = copies[id(a)]
    ds._tables = {k: copies.get(id(a), a) for k, a in ds._tables.items()}


def loader_memory(ds, args, batches: int) -> dict:
    """Draw ``batches`` random batches with the workers; the memory of parent and workers then,
    and the items per second of the draw (after one batch per worker of warm-up)."""
    from fpkit.shared_tables import process_memory

    ctx = multiprocessing.get_context(args.start_method)
    if args.start_method == "forkserver":
        ctx.set_forkserver_preload(["fpkit.fingerprint_dataset"])
    draws = (args.workers + batches) * args.batch_size  # with replacement: any file gives as many batches
    sampler = torch.utils.data.RandomSampler(ds, replacement=True, num_samples=draws)
    loader = torch.utils.data.DataLoader(
        ds, batch_size=args.batch_size, sampler=sampler, num_workers=args.workers, multiprocessing_context=ctx
    )
    it = iter(loader)
    for _ in range(args.workers):
        next(it)
    t0, items = time.perf_counter(), 0
    for _ in range(batches):
        items += len(next(it)[0])
    dt = time.perf_counter() - t0
    time.sleep(0.5)
    workers = [process_memory(w.pid) for w in it._workers]
    parent = process_memory()
    del it
    return {"parent": parent, "workers": workers, "items_per_s": items / dt if dt else float("nan")}


def main(argv=None) -> None:
    args = parse_args(argv)
    run = H.Run("read-scale", "bench_read --scale: FingerprintDataset memory with DataLoader workers", args)
    from bench.read import write_file
    from fpkit import FingerprintDataset
    from fpkit.shared_tables import process_memory, shared_bytes
    from fpkit.testing import example_digests

    if process_memory() is None:
        raise SystemExit("bench.read --scale reads /proc/<pid>/smaps_rollup: Linux only")
    tmp = Path(tempfile.mkdtemp(prefix="fpkit-read-scale-", dir=args.dir))
    out = run.results
    try:
        labels = np.random.default_rng(args.seed).integers(0, args.classes, args.n)
        classes = [f"c{i}" for i in range(args.classes)]
        path, tiny = tmp / "scale.h5", tmp / "tiny.h5"
        out["write_s"] = write_file(path, labels, example_digests(args.n), classes, args.r, args.dtype, args.seed)
        write_file(tiny, labels[:64] % 2, example_digests(64), classes[:2], args.r, args.dtype, args.seed)
        file_mib = path.stat().st_size / MIB
        before = process_memory()
        t0 = time.perf_counter()
        ds = FingerprintDataset(path, plain(args.n), check_samples=0)
        out["open_s"] = time.perf_counter() - t0
        held = sum(a.nbytes for a in {id(a): a for s in (ds.fp.arrays, ds.fp._decoded) for a in s.values()}.values())
        out.update(file_mib=file_mib, held_mib=held / MIB, shared_mib=shared_bytes(ds.fp) / MIB)
        out["parent_before"], out["parent_after_open"] = before, process_memory()

        # random-row reads, one process
        idx = np.random.default_rng(args.seed + 1).integers(0, args.n, args.lookups)
        t0 = time.perf_counter()
        for i in idx:
            ds[int(i)]
        out["getitem_per_s"] = args.lookups / (time.perf_counter() - t0)
        table = ds._tables[ds.layers[0]]
        bidx = idx[: (args.lookups // args.batch_size) * args.batch_size].reshape(-1, args.batch_size)
        t0 = time.perf_counter()
        for b in bidx:
            table[b]
        out["gather_rows_per_s"] = bidx.size / (time.perf_counter() - t0)

        base = loader_memory(FingerprintDataset(tiny, plain(64), check_samples=0), args, args.batches)
        base_uss = max(w["uss"] for w in base["workers"])
        base_pss = base["parent"]["pss"] + sum(w["pss"] for w in base["workers"])
        out["baseline"] = base
        modes = {"shared": None}
        if args.private:
            modes["private"] = make_private
        rows = []
        for mode, prep in modes.items():
            if prep:
                prep(ds)
            m = loader_memory(ds, args, args.batches)
            procs = [m["parent"]] + m["workers"]
            pss, uss = sum(p["pss"] for p in procs), sum(p["uss"] for p in procs)
            extra = [(w["uss"] - base_uss) / MIB for w in m["workers"]]
            out[mode] = dict(m, base_worker_uss=base_uss, sum_pss=pss, sum_uss=uss, extra_worker_mib=extra)
            add = (pss - base_pss) / MIB
            rows.append(
                [mode, args.workers, held / MIB, pss / MIB, add, add * MIB / held, max(extra), m["items_per_s"]]
            )
        H.print_table(
            f"DataLoader memory, N={args.n:,} r={args.r} {args.dtype} ({file_mib:.0f} MiB file; held = stored + "
            f"decoded tables), {args.start_method}; baseline: the same loader over a 64-row file, sum PSS "
            f"{base_pss / MIB:.0f} MiB, worker USS {base_uss / MIB:.0f} MiB",
            [
                "arrays",
                "workers",
                "held MiB",
                "sum PSS MiB",
                "added by workers MiB",
                "copies",
                "max extra USS/worker MiB",
                "items/s",
            ],
            rows,
        )
        H.print_table(
            "Random-row reads (one process)",
            ["read", "per second"],
            [
                ["FingerprintDataset[i] (target row + plain item)", out["getitem_per_s"]],
                [f"decoded table[batch of {args.batch_size} random rows]", out["gather_rows_per_s"]],
            ],
        )
        print(f"raw results: {run.save()}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
