"""The shared harness of the fpkit benchmarks: timing, the machine description, raw-output recording.

Nothing here is part of fpkit.  A benchmark module uses it like this::

    p = argparse.ArgumentParser(...)
    harness.add_common_args(p)                  # --device --threads --seed --out (alias --json)
    args = p.parse_args(argv)
    run = harness.Run("build", "bench_build: ...", args)   # device, threads, prints the header
    t = harness.timeit({"A": a, "B": b}, repeats=5, warmup=1, device=run.device)
    harness.print_table(...)                    # the figures, on stdout
    run.results["seconds"] = t                  # raw measurements
    run.save()                                  # JSON: benchmark, machine, args, results

Timing: :func:`timeit` runs the variants it compares in turns (A, B, A, B, ...), so that ratios
are measured side by side in one run, synchronising CUDA around every timed call; it returns a
:class:`Timings` (seconds per call of each variant, one entry per turn) that gives medians, the
interquartile range, the min..max spread, ratios of medians and medians of per-turn ratios.

Raw output: every run writes a JSON file, to ``--out`` or by default to
``bench/results/<name>-<UTC time>.json`` (git-ignored).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
DEFAULT_DATA = REPO / ".data" / "cifar10-jpeg"
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
LIBRARIES = ("fpkit", "torch", "torchvision", "numpy", "h5py", "zstandard", "Pillow")


# --------------------------------------------------------------------------- options, device


def add_common_args(p, *, device: bool = True) -> None:
    """--device (unless ``device=False``), --threads, --seed and --out (alias --json)."""
    if device:
        p.add_argument(
            "--device", default="auto", choices=["cpu", "cuda", "auto"], help="where to run (auto: cuda if available)"
        )
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's own choice)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--out",
        "--json",
        dest="out",
        metavar="OUT",
        default=None,
        help="where to write the raw measurements as JSON (default: bench/results/<name>-<UTC time>.json)",
    )


def resolve_device(spec: str) -> torch.device:
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda asked for but torch.cuda.is_available() is False")
    return torch.device(spec)


def sync(dev: torch.device | None) -> None:
    if dev is not None and dev.type == "cuda":
        torch.cuda.synchronize(dev)


def command_line() -> str:
    """How this process was started, as the user would type it (``python -m bench.X ...``)."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    head = f"python -m {spec.name}" if spec is not None and spec.name else f"python {sys.argv[0]}"
    return " ".join([head, *(shlex.quote(a) for a in sys.argv[1:])])


def module_command(module: str, *args: str) -> tuple[list[str], dict[str, str]]:
    """argv and environment to run ``python -m module args`` in a subprocess, from any folder."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    return [sys.executable, "-m", module, *args], env


# --------------------------------------------------------------------------- machine description


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
    except (OSError, AttributeError):
        return "n/a"


def library_versions() -> dict[str, str]:
    out = {}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    try:
        import h5py

        out["HDF5"] = h5py.version.hdf5_version
    except ImportError:
        pass
    return out


def machine(dev: torch.device | None = None, title: str = "") -> dict[str, Any]:
    """The machine description recorded with every result."""
    gpus = (
        [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    )
    libs = library_versions()
    return {
        "benchmark": title,
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "fpkit": libs.get("fpkit", "?"),
        "gpu": ", ".join(gpus) if gpus else "none",
        "device": str(dev) if dev is not None else "cpu",
        "device_name": torch.cuda.get_device_name(dev) if dev is not None and dev.type == "cuda" else cpu_name(),
        "libraries": libs,
        "load_average_at_start": load_average(),
        "argv": command_line(),
    }


HEADER_KEYS = (
    "date",
    "platform",
    "python",
    "cpu",
    "cpu_count",
    "affinity",
    "torch",
    "torch_threads",
    "fpkit",
    "gpu",
    "device",
    "device_name",
    "libraries",
    "load_average_at_start",
    "argv",
)


def print_header(info: Mapping[str, Any]) -> None:
    print(f"== {info['benchmark']} ==")
    for k in HEADER_KEYS:
        v = info[k]
        if isinstance(v, Mapping):
            v = ", ".join(f"{a} {b}" for a, b in v.items() if a not in ("fpkit", "torch"))
        print(f"  {k:<22} {v}")
    print(flush=True)


# --------------------------------------------------------------------------- one run: header and raw output


class Run:
    """One benchmark run: resolves --device, applies --threads, prints the machine description,
    collects raw results and writes them (with the description and the arguments) as JSON."""

    def __init__(self, name: str, title: str, args, *, header: bool = True):
        self.name = name
        self.args = args
        self.device = resolve_device(args.device) if hasattr(args, "device") else torch.device("cpu")
        if getattr(args, "threads", None):
            torch.set_num_threads(args.threads)
        self.machine = machine(self.device, title)
        self.results: dict[str, Any] = {}
        if header:
            print_header(self.machine)

    def default_path(self) -> Path:
        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
        return RESULTS / f"{self.name}-{stamp}.json"

    def save(self) -> Path:
        """Write ``{"benchmark", "machine", "args", "results"}`` to --out (or the default path)."""
        path = Path(self.args.out) if getattr(self.args, "out", None) else self.default_path()
        save_json(
            path, {"benchmark": self.name, "machine": self.machine, "args": vars(self.args), "results": self.results}
        )
        return path


def save_json(path: str | Path, obj: Any) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, default=_json_default) + "\n")
    print(f"saved {path}")


def _json_default(o: Any):
    if isinstance(o, Timings):
        return {"seconds": o.seconds, "cpu_seconds": o.cpu, "summary": o.summary()}
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


# --------------------------------------------------------------------------- timing


def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs))


def iqr(xs: Sequence[float]) -> float:
    """Interquartile range (numpy's linear interpolation); 0 for fewer than 2 values."""
    if len(xs) < 2:
        return 0.0
    q1, q3 = np.percentile(np.asarray(xs, dtype=float), [25, 75])
    return float(q3 - q1)


def spread(xs: Sequence[float]) -> str:
    """min..max as a percentage around the median, to show the noise."""
    m = median(xs)
    if m == 0 or len(xs) < 2:
        return ""
    return f"{100 * (min(xs) / m - 1):+.0f}%..{100 * (max(xs) / m - 1):+.0f}%"


class Timings(Mapping):
    """Seconds per call of each variant (``name -> [one value per turn]``), in the order they ran;
    ``.cpu`` holds the main process's CPU seconds (``time.process_time``) the same way.  Saved as
    JSON with both and a summary (n, median, IQR, min, max) of each variant."""

    def __init__(self, names: Sequence[str] = ()):
        self.seconds: dict[str, list[float]] = {k: [] for k in names}
        self.cpu: dict[str, list[float]] = {k: [] for k in names}

    def __getitem__(self, name: str) -> list[float]:
        return self.seconds[name]

    def __iter__(self):
        return iter(self.seconds)

    def __len__(self) -> int:
        return len(self.seconds)

    def __repr__(self) -> str:
        return f"Timings({self.seconds!r})"

    def median(self, name: str) -> float:
        return median(self[name])

    def best(self, name: str) -> float:
        return float(min(self[name]))

    def iqr(self, name: str) -> float:
        return iqr(self[name])

    def spread(self, name: str) -> str:
        return spread(self[name])

    def ratio(self, a: str, b: str) -> float:
        """median(a) / median(b)."""
        return self.median(a) / self.median(b)

    def paired_ratio(self, a: str, b: str) -> float:
        """Median of the per-turn ratios a / b (each pair ran back to back)."""
        return median([x / y for x, y in zip(self[a], self[b])])

    def summary(self) -> dict[str, dict[str, float]]:
        return {
            k: {"n": len(v), "median": median(v), "iqr": iqr(v), "min": min(v), "max": max(v)}
            for k, v in self.items()
            if v
        }


def timeit(
    variants: Mapping[str, Callable[[], Any]] | Callable[[], Any],
    *,
    repeats: int,
    number: int = 1,
    warmup: int = 0,
    device: torch.device | None = None,
    log: bool = True,
) -> Timings:
    """Time ``variants`` side by side: ``warmup`` untimed calls of each variant, then ``repeats``
    turns in which every variant runs ``number`` calls in a row (A, B, C, A, B, C, ...).  Each
    turn's time (``time.perf_counter``, CUDA synchronised before and after) is divided by
    ``number``: the result holds seconds per call.  A lone callable is timed as variant ``"run"``.
    """
    if callable(variants):
        variants = {"run": variants}
    if warmup:
        if log:
            print("warm-up ...", file=sys.stderr, flush=True)
        for fn in variants.values():
            for _ in range(warmup):
                fn()
    out = Timings(list(variants))
    for rep in range(repeats):
        for name, fn in variants.items():
            sync(device)
            c0, t0 = time.process_time(), time.perf_counter()
            for _ in range(number):
                fn()
            sync(device)
            dt, dc = time.perf_counter() - t0, time.process_time() - c0
            out.seconds[name].append(dt / number)
            out.cpu[name].append(dc / number)
            if log:
                print(f"  rep {rep + 1}/{repeats}  {name:<28} {dt:9.3f} s", file=sys.stderr, flush=True)
    return out


# --------------------------------------------------------------------------- printing


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


# --------------------------------------------------------------------------- memory


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


def missing_data_message(folder: Path) -> str:
    archive = REPO.parent / "shared" / "data" / "cifar10-jpeg.tar.zst"
    if not archive.is_file():
        archive = Path("cifar10-jpeg.tar.zst")
    return (
        f"{folder} not found: this benchmark needs the CIFAR-10 (JPEG q75) images. Unpack them with\n"
        f"    mkdir -p {DEFAULT_DATA} && zstd -dc {archive} | tar x -C {DEFAULT_DATA}\n"
        "(see /work/shared/data/README.md) or pass --data PATH"
    )


def cifar_files(data: Path, split: str, n: int) -> tuple[list[Path], list[int], list[str]]:
    """The first ``n / 10`` files of every class folder (class-major order, as ImageFolder sorts).

    Returns (paths, labels, classes).  Exits with a clear message if the data is missing.
    """
    folder = Path(data) / split
    if not folder.is_dir():
        sys.exit(missing_data_message(folder))
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


def subset_folder(
    paths: Sequence[Path], labels: Sequence[int], classes: Sequence[str], root: Path, split: str = "train"
) -> Path:
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
