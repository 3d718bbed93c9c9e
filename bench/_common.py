"""Shared helpers of the fpkit benchmarks (imported as ``_common`` by the bench scripts).

Nothing here is part of fpkit.  Every script prints :func:`header` first, takes its timings with
``time.perf_counter`` (synchronising CUDA around them), interleaves the variants it compares
(A, B, A, B, ...) and reports medians and ratios of medians.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO / ".data" / "cifar10-jpeg"
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


# --------------------------------------------------------------------------- device, header

def add_common_args(p) -> None:
    p.add_argument("--device", default="auto", choices=["cpu", "cuda", "auto"],
                   help="where to run (auto: cuda if available)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch.set_num_threads (default: torch's own choice)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", metavar="OUT", default=None, help="also save the figures as JSON")


def resolve_device(spec: str) -> torch.device:
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda asked for but torch.cuda.is_available() is False")
    return torch.device(spec)


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def header(title: str, dev: torch.device, args) -> dict:
    """Print and return the machine description."""
    import fpkit
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    info = {
        "benchmark": title,
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "fpkit": getattr(fpkit, "__version__", "?"),
        "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else cpu_name(),
        "load_average_at_start": load_average(),
        "argv": " ".join(sys.argv),
    }
    print(f"== {title} ==")
    for k in ("date", "platform", "python", "cpu", "cpu_count", "affinity", "torch", "torch_threads", "fpkit",
              "device", "device_name", "load_average_at_start", "argv"):
        print(f"  {k:<22} {info[k]}")
    print(flush=True)
    return info


# --------------------------------------------------------------------------- timing and output

def timed(fn: Callable[[], Any], dev: torch.device) -> tuple[float, Any]:
    """Seconds one call of ``fn`` takes (CUDA synchronised before and after) and its result."""
    sync(dev)
    t0 = time.perf_counter()
    out = fn()
    sync(dev)
    return time.perf_counter() - t0, out


def interleave(variants: dict[str, Callable[[], Any]], reps: int, dev: torch.device,
               log: bool = True) -> dict[str, list[float]]:
    """Run the variants in turn (A, B, C, A, B, C, ...) ``reps`` times; seconds per call."""
    times: dict[str, list[float]] = {k: [] for k in variants}
    for rep in range(reps):
        for name, fn in variants.items():
            dt, _ = timed(fn, dev)
            times[name].append(dt)
            if log:
                print(f"  rep {rep + 1}/{reps}  {name:<28} {dt:9.3f} s", file=sys.stderr, flush=True)
    return times


def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs))


def spread(xs: Sequence[float]) -> str:
    """min..max as a percentage around the median, to show the noise."""
    m = median(xs)
    if m == 0 or len(xs) < 2:
        return ""
    return f"{100 * (min(xs) / m - 1):+.0f}%..{100 * (max(xs) / m - 1):+.0f}%"


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    print(title)
    print("  " + "  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(headers, widths))))
    print("  " + "  ".join("-" * w for w in widths))
    for r in cells:
        print("  " + "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
    print(flush=True)


def _fmt(c: Any) -> str:
    if isinstance(c, float):
        if c == 0:
            return "0"
        a = abs(c)
        if a >= 1e5:
            return f"{c:,.0f}"
        if a >= 100:
            return f"{c:.1f}"
        if a >= 1:
            return f"{c:.3f}"
        if a >= 1e-3:
            return f"{c:.4f}"
        return f"{c:.2e}"
    return str(c)


def save_json(path: str | None, obj: dict) -> None:
    if not path:
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(obj, indent=2, default=_json_default) + "\n")
    print(f"saved {path}")


def _json_default(o: Any):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, Path):
        return str(o)
    return str(o)


def max_rss_mib(who: str = "self") -> float:
    """Peak resident set size in MiB (Linux ru_maxrss is in KiB)."""
    import resource
    r = resource.getrusage(resource.RUSAGE_SELF if who == "self" else resource.RUSAGE_CHILDREN)
    kib = r.ru_maxrss / (1024 if sys.platform == "darwin" else 1)
    return kib / 1024


def current_rss_mib() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


# --------------------------------------------------------------------------- CIFAR-10 JPEG subsets

def cifar_files(data: Path, split: str, n: int) -> tuple[list[Path], list[int], list[str]]:
    """The first ``n / 10`` files of every class folder (class-major order, as ImageFolder sorts).

    Returns (paths, labels, classes).  Exits with a clear message if the data is missing.
    """
    folder = Path(data) / split
    if not folder.is_dir():
        sys.exit(f"{folder} not found: unpack CIFAR-10 JPEG there (see /work/shared/data/README.md) "
                 "or pass --data PATH")
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    per = -(-n // len(classes))
    paths, labels = [], []
    for ci, c in enumerate(classes):
        files = sorted((folder / c).iterdir())[:per]
        if len(files) < per:
            sys.exit(f"{folder / c} has only {len(files)} images; ask for at most {len(files) * len(classes)}")
        paths += files
        labels += [ci] * len(files)
    # trim to exactly n keeping every class (drop from the end of each class round-robin)
    while len(paths) > n:
        ci = (len(paths) - n - 1) % len(classes)
        idx = max(i for i, y in enumerate(labels) if y == ci)
        del paths[idx], labels[idx]
    return paths, labels, classes


def subset_folder(paths: Sequence[Path], labels: Sequence[int], classes: Sequence[str], root: Path,
                  split: str = "train") -> Path:
    """Symlink the files into ``root/split/<class>/`` (an ImageFolder of just this subset)."""
    for c in classes:
        (root / split / c).mkdir(parents=True, exist_ok=True)
    for p, y in zip(paths, labels):
        link = root / split / classes[y] / p.name
        if not link.exists():
            link.symlink_to(p.resolve())
    return root


def decode(paths: Sequence[Path]) -> np.ndarray:
    """uint8 [N, H, W, 3] pixels of the JPEG files (RGB), as fpkit's imagefolder source decodes them."""
    from PIL import Image
    out = []
    for p in paths:
        with open(p, "rb") as fh:
            out.append(np.asarray(Image.open(fh).convert("RGB")))
    return np.stack(out)


def random_teacher(arch: str, num_classes: int, path: Path, seed: int = 0) -> dict:
    """Save a randomly initialised CIFAR ResNet's state_dict to ``path`` (throughput does not
    depend on trained weights); return the state_dict."""
    from fpkit.models import get_cifar_resnet
    torch.manual_seed(seed)
    model = get_cifar_resnet(arch, num_classes)
    sd = model.state_dict()
    torch.save(sd, path)
    return sd
