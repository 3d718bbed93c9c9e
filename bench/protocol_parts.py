"""The CPU-side parts of experiments/gpu_protocol.sh, timed on this machine.

    python -m bench.protocol_parts [--archive ../shared/data/cifar10-jpeg.tar.zst]

The GPU protocol is time-boxed to 6 minutes of one GPU, but some of its work never touches the
GPU: unpacking the JPEG archive, cutting the 4,500-per-class subset, and, in every training
process (the teacher and each student), decoding the training, validation and test images to
uint8 tensors and choosing the validation images (pixel hashing).  This script times each of
those parts once, in one process, so the fixed cost of the protocol is known before a GPU is:
the students start together, each paying the decode and validation cost on its own core.
Training and build time on the GPU itself are not estimated here (no GPU; the script is
time-boxed by train.py --time-budget instead).
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.harness import machine, print_header, print_table

ROOT = Path(__file__).resolve().parents[1]


def _train_module():
    spec = importlib.util.spec_from_file_location("fpkit_experiments_train", ROOT / "experiments" / "train.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archive", default=str(ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.zst"))
    ap.add_argument("--train-per-class", type=int, default=4500)
    ap.add_argument("--val-per-class", type=int, default=500)
    args = ap.parse_args(argv)
    if not Path(args.archive).exists():
        print(f"error: {args.archive} not found; pass --archive (see ../shared/data/README.md)", file=sys.stderr)
        return 1
    import torch

    from fpkit.datasets import open_source

    torch.set_num_threads(1)
    train = _train_module()
    print_header(machine(None, "CPU-side parts of experiments/gpu_protocol.sh"))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        src, sub = Path(tmp) / "src", Path(tmp) / "sub"
        src.mkdir()
        cmd = f"zstd -dc {args.archive} | tar x -C {src}"
        _, t = _timed(lambda: subprocess.run(cmd, shell=True, check=True))
        rows.append(("unpack the archive (60,000 JPEGs)", "once", t))
        mk = [sys.executable, str(ROOT / "experiments" / "make_subset.py"), str(src), str(sub)]
        mk += ["--train-per-class", str(args.train_per_class)]
        _, t = _timed(lambda: subprocess.run(mk, check=True, stdout=subprocess.DEVNULL))
        rows.append((f"make_subset.py ({args.train_per_class} per class, hard links)", "once", t))
        norm = {"normalize": "cifar10", "download": False}
        train_src = open_source(f"imagefolder:{sub}", "data", "train", **norm)
        images, t = _timed(lambda: train_src.load_all())
        rows.append((f"decode the {len(train_src):,} training images", "per process", t))
        test_src = open_source(f"imagefolder:{sub}", "data", "test", **norm)
        _, t = _timed(lambda: test_src.load_all())
        rows.append((f"decode the {len(test_src):,} test images", "per process", t))
        full = open_source(f"imagefolder:{src}", "data", "train", **norm)
        idx, t = _timed(lambda: train.select_validation(full, images, args.val_per_class, 0))
        rows.append((f"choose {len(idx):,} validation images (hash 45k, decode candidates)", "per process", t))
        _, t = _timed(lambda: full.get_batch(idx))
        rows.append(("decode the validation images", "per process", t))
    per_process = sum(r[2] for r in rows if r[1] == "per process")
    once = sum(r[2] for r in rows if r[1] == "once")
    print_table("parts (seconds, one core)", ["part", "paid", "seconds"], [(a, b, f"{c:.1f}") for a, b, c in rows])
    print(
        f"\nfixed CPU cost: {once:.1f} s once + {per_process:.1f} s in each training process "
        f"(the teacher, then every student at once, each on its own core): about "
        f"{once + 2 * per_process:.0f} s of the protocol's wall time before GPU work is counted"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
