"""``fpkit build``: run a teacher once over a dataset split and write its fingerprint file.

How the work is organised:

* Samples are cut into fixed chunks (``chunk_size`` samples).  Within a chunk, steps of
  ``max(1, batch_size // K)`` samples are fetched as uint8, their K views are cut on the device
  (:mod:`fpkit.augment`), the teacher runs once on all views, and the tapped features become
  fingerprints (normalise, project, average over views) in float32.
* Results go to a work folder next to the output (``.NAME.partial/``): float32 memory maps and,
  per finished chunk, a marker file written atomically after the data is flushed.  A killed or
  interrupted build leaves only that folder; ``--resume`` skips finished chunks.  Since chunks
  and steps do not depend on which process runs them, the result is the same.
* Under ``torchrun`` every rank takes the chunks ``c % world_size == rank`` (the work folder must
  be on storage all ranks share); rank 0 waits for all and finishes the file.
* Finishing streams the memory maps through :class:`fpkit.format.FingerprintWriter`, which
  writes a temporary file and renames it into place only when complete.
"""

from __future__ import annotations

import errno
import json
import os
import re
import secrets
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from . import features as _features
from .augment import ViewPolicy, make_views
from .datasets import ImageSource, open_source
from .errors import (ConfigError, FpkitError, FpkitFileNotFoundError, FpkitPermissionError, MismatchError,
                     NonFiniteError, OutputExistsError, StorageError)
from .format import FingerprintWriter, LayerSpec, sample_digest
from .format.writer import labels_sha256
from .format.quantize import check_dtype
from .format.codecs import check_codec
from .projection import make_projection
from .teachers import Teacher, load_embedded_teacher, load_teacher

_MAX_SEED = 2**63 - 1


class BuildInterrupted(FpkitError, KeyboardInterrupt):
    """The build was interrupted (Ctrl-C / SIGTERM); its finished chunks are kept for --resume."""


@dataclass
class BuildOptions:
    """Everything that decides what ``fpkit build`` does (CLI options map one to one)."""

    teacher: str = "embedded"
    dataset: str = "embedded"
    output: str | None = None
    root: str = "data"
    split: str | None = None          # None: the dataset's default (train; test for embedded)
    arch: str | None = None
    num_classes: int | None = None
    layers: Sequence[str] = ()
    r: int = 128
    seed: int | None = None
    views: int | str = 8
    view_seed: int | None = None
    padding: int = 4
    flip: bool = True
    replay: bool = False
    tables: Sequence[str] = ("sample", "class")
    dtype: str = "float16"
    codec: str = "none"
    device: str = "auto"
    batch_size: int = 512
    num_workers: int = 0
    autocast: str | None = None
    pooling: str = "auto"
    redact: bool = False
    trust_teacher_code: bool = False
    force: bool = False
    resume: bool = False
    chunk_size: int = 1024
    normalize: str | None = None
    download: bool = True


@dataclass
class BuildResult:
    """What a build produced and what it cost."""

    path: Path
    num_samples: int
    views_per_sample: int
    teacher_forwards: int
    seconds: float
    images_per_second: float
    teacher_top1: float | None
    chunks_resumed: int
    size_bytes: int
    layers: list[str] = field(default_factory=list)


def check_options(o: BuildOptions) -> None:
    """Reject invalid options before any work starts (raises ConfigError)."""
    if not isinstance(o.r, int) or o.r <= 0:
        raise ConfigError(f"--r must be a positive integer, got {o.r!r}; the source writeup used 128")
    if not (isinstance(o.views, int) and o.views >= 1) and o.views != "all":
        raise ConfigError(f"--views must be a positive integer or 'all', got {o.views!r}")
    for name, value in (("--seed", o.seed), ("--view-seed", o.view_seed)):
        if value is not None and not 0 <= value <= _MAX_SEED:
            raise ConfigError(f"{name} must lie in [0, 2**63), got {value}")
    for name, value, least in (("--batch-size", o.batch_size, 1), ("--chunk-size", o.chunk_size, 1),
                               ("--num-workers", o.num_workers, 0)):
        if not isinstance(value, int) or value < least:
            raise ConfigError(f"{name} must be an integer >= {least}, got {value!r}")
    if not o.tables or set(o.tables) - {"sample", "class"}:
        raise ConfigError(f"--tables must be a comma list of sample,class; got {','.join(o.tables)}")
    if o.autocast not in (None, "bfloat16", "float16"):
        raise ConfigError(f"--autocast must be bfloat16 or float16, got {o.autocast!r}")
    if o.force and o.resume:
        raise ConfigError("--force starts over and --resume continues; pass only one")
    check_dtype(o.dtype)
    check_codec(o.codec)
    ViewPolicy(o.padding, o.flip)
    _resolve_device(o.device, int(os.environ.get("LOCAL_RANK", "0")))


def option_warnings(o: BuildOptions) -> list[str]:
    """Valid but probably unintended options, as sentences for stderr."""
    out = []
    distinct = ViewPolicy(o.padding, o.flip).num_views
    if isinstance(o.views, int) and o.views > distinct:
        out.append(f"--views {o.views} draws more views than the policy has distinct ones ({distinct}); "
                   "--views all averages over each of them exactly once")
    if o.redact and o.seed is not None:
        out.append("--redact leaves R and its seed out, but the file keeps R's SHA-256: anyone who guesses "
                   f"--seed {o.seed} recovers R; leave --seed out to draw a secret one")
    if o.r < 8:
        out.append(f"--r {o.r} keeps very few dimensions: the cosine loss between {o.r}-d projections says "
                   "little (the source writeup used 128)")
    return out


def default_output(o: BuildOptions, source: ImageSource) -> Path:
    teacher = "embedded" if o.teacher == "embedded" else Path(o.teacher).name.split(".")[0]
    data = re.sub(r"[^A-Za-z0-9_-]+", "-", source.name.split(":")[-1].rstrip("/").split("/")[-1]) or "data"
    return Path(f"{teacher}-{data}-{source.split}.h5")


def _resolve_device(spec: str, local_rank: int) -> torch.device:
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(spec)
    except (RuntimeError, ValueError, TypeError) as e:
        raise ConfigError(f"--device {spec!r} is not a device; use cpu, cuda, cuda:N or auto") from e
    if dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"--device {spec!r}: fpkit builds on cpu or cuda; use cpu, cuda, cuda:N or auto")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("--device cuda was asked for but no CUDA device is available; use --device cpu")
        if dev.index is None:
            dev = torch.device("cuda", local_rank)
        if dev.index >= torch.cuda.device_count():
            raise ConfigError(f"--device {dev} does not exist: this machine has {torch.cuda.device_count()} "
                              "CUDA device(s), cuda:0 and up")
    return dev


class _Dist:
    """torch.distributed when launched by torchrun with WORLD_SIZE > 1, else a single process."""

    def __init__(self, device_spec: str):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.device = _resolve_device(device_spec, self.local_rank)
        self.enabled = self.world > 1
        if self.enabled:
            import torch.distributed as dist
            if not dist.is_initialized():
                dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
            self.dist = dist

    def barrier(self) -> None:
        if self.enabled:
            self.dist.barrier()

    def share(self, value):
        """Rank 0's ``value`` on every rank (the value itself in a single process)."""
        if not self.enabled:
            return value
        box = [value]
        self.dist.broadcast_object_list(box, src=0)
        return box[0]

    def close(self) -> None:
        if self.enabled and self.dist.is_initialized():
            self.dist.destroy_process_group()


class _Progress:
    def __init__(self, total: int, quiet: bool, stream=None):
        self.total, self.quiet = total, quiet
        self.stream = stream or sys.stderr
        self.done = 0
        self.start = time.perf_counter()
        self.last = 0.0
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()

    def update(self, n: int, images: int) -> None:
        self.done += n
        now = time.perf_counter()
        if self.quiet or (now - self.last < (0.5 if self.tty else 5.0) and self.done < self.total):
            return
        self.last = now
        el = now - self.start
        rate = self.done / el if el > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else 0.0
        line = (f"[fpkit build] {self.done}/{self.total} samples  {rate * images:,.0f} img/s  "
                f"ETA {int(eta // 60)}:{int(eta % 60):02d}")
        self.stream.write(("\r" + line) if self.tty else line + "\n")
        if self.tty and self.done >= self.total:
            self.stream.write("\n")
        self.stream.flush()


class _Fetch(torch.utils.data.Dataset):
    """Index lists -> (uint8 batch, indices), so DataLoader workers decode whole steps."""

    def __init__(self, source: ImageSource):
        self.source = source

    def __getitem__(self, idx):
        idx = np.asarray(idx, dtype=np.int64)
        return self.source.get_batch(idx), torch.from_numpy(idx)

    def __len__(self) -> int:
        return len(self.source)


def _load_teacher(o: BuildOptions, in_channels: int) -> Teacher:
    if o.teacher == "embedded":
        return load_embedded_teacher()
    return load_teacher(o.teacher, arch=o.arch, num_classes=o.num_classes, in_channels=in_channels,
                        trust_code=o.trust_teacher_code)


def build(o: BuildOptions, *, quiet: bool = False, log: Callable[[str], None] | None = None) -> BuildResult:
    """Build a fingerprint file as ``o`` describes and return what was written.

    Raises:
        ConfigError, MismatchError, OutputExistsError, UntrustedCodeError, NonFiniteError,
        FpkitFileNotFoundError, StorageError; BuildInterrupted on Ctrl-C (work kept for --resume).
    """
    say = log or (lambda msg: None if quiet else print(msg, file=sys.stderr))
    check_options(o)
    for warning in option_warnings(o):
        say(f"[fpkit build] warning: {warning}")
    t0 = time.perf_counter()
    source = open_source(o.dataset, o.root, o.split, download=o.download, normalize=o.normalize)
    teacher = _load_teacher(o, source.image_shape[0])
    if teacher.num_classes is not None and teacher.num_classes != len(source.classes):
        raise MismatchError(f"teacher has {teacher.num_classes} outputs but {source.name} has "
                            f"{len(source.classes)} classes; pick the matching teacher or dataset")
    dist = _Dist(o.device)
    try:
        return _run(o, source, teacher, dist, say, quiet, t0)
    finally:
        dist.close()


def _run(o: BuildOptions, source: ImageSource, teacher: Teacher, dist: _Dist, say, quiet: bool,
         t0: float) -> BuildResult:
    dev = dist.device
    model = teacher.model.to(dev)
    if dev.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    layers = list(o.layers) or [teacher.default_layer or _features.default_layer(teacher.model)]
    policy = ViewPolicy(o.padding, o.flip)
    k = policy.num_views if o.views == "all" else int(o.views)
    view_seed = 0 if o.view_seed is None else o.view_seed
    mean = torch.tensor(source.mean, dtype=torch.float32, device=dev)
    std = torch.tensor(source.std, dtype=torch.float32, device=dev)
    n = len(source)

    tap = _features.LayerTap(model, layers)
    try:
        out = Path(o.output) if o.output else default_output(o, source)
        work = out.parent / f".{out.name}.partial"
        seed = _projection_seed(o, work, dist)
        specs, poolings = _probe_layers(o, seed, source, tap, policy, mean, std, dev, layers)
        config = _config(o, source, teacher, specs, poolings, k, view_seed)
        state = dist.share(_prepare(out, work, config, o, say) if dist.rank == 0 else None)
        if state == "done":
            return _result(out, n, k, 0, time.perf_counter() - t0, None, 0, layers)
        store = _WorkStore(work, n, k if o.replay else 0, [sp.r for sp in specs], create=False)
        chunks = [c for c in range((n + o.chunk_size - 1) // o.chunk_size) if c % dist.world == dist.rank]
        todo = [c for c in chunks if not store.is_done(c)]
        resumed = len(chunks) - len(todo)
        if resumed and dist.rank == 0:
            say(f"[fpkit build] resuming: {resumed} of {len(chunks)} chunks already done")
        progress = _Progress(sum(store.chunk_len(c, o.chunk_size) for c in todo), quiet or dist.rank != 0)
        t_run = time.perf_counter()
        try:
            _compute(o, source, tap, specs, poolings, policy, k, view_seed, mean, std, dev, store, todo, progress)
        except KeyboardInterrupt as e:
            raise BuildInterrupted(f"interrupted; finished chunks are kept in {work}: run the same command "
                                   "with --resume to continue, or --force to start over") from e
        except BaseException:
            if dist.rank == 0 and not resumed:
                shutil.rmtree(work, ignore_errors=True)
            raise
        run_s = time.perf_counter() - t_run
    finally:
        tap.close()
    dist.barrier()
    top1 = None
    if dist.rank == 0:
        correct, count = store.accuracy()
        top1 = correct / count if count else None
        _finish(o, out, work, store, source, teacher, specs, poolings, policy, k, view_seed, top1, count,
                dist.world, dev)
        shutil.rmtree(work, ignore_errors=True)
    dist.barrier()
    images = sum(store.chunk_len(c, o.chunk_size) for c in todo) * k
    res = _result(out, n, k, n * k, time.perf_counter() - t0, top1, resumed, layers,
                  images / run_s if run_s > 0 else 0.0)
    if dist.rank == 0:
        say(f"[fpkit build] wrote {out} ({res.size_bytes:,} bytes): {n} samples x {k} view{'s' if k != 1 else ''}, "
            f"layers {', '.join(layers)}, r={o.r}, {o.dtype}; teacher top-1 on views "
            f"{'n/a' if top1 is None else f'{top1:.4f}'}; {res.seconds:.1f} s")
    return res


def _result(out: Path, n, k, forwards, seconds, top1, resumed, layers, ips=0.0) -> BuildResult:
    size = out.stat().st_size if out.exists() else 0
    return BuildResult(out, n, k, forwards, seconds, ips, top1, resumed, size, list(layers))


def _projection_seed(o: BuildOptions, work: Path, dist: _Dist) -> int:
    """--seed if given; else 0, or, with --redact, a secret random seed (so that R cannot be
    recovered by trying small seeds against the SHA-256 of R the file keeps).  A resumed redacted
    build reuses its own secret seed; ranks of one build share rank 0's."""
    if o.seed is not None:
        return o.seed
    if not o.redact:
        return 0
    seed = None
    if dist.rank == 0:
        try:
            seed = int(json.loads((work / "config.json").read_text())["layers"][0][4]) if o.resume else None
        except (OSError, ValueError, KeyError, IndexError, TypeError):
            seed = None
        if seed is None:
            seed = secrets.randbits(62)
    return int(dist.share(seed))


def _probe_layers(o, base_seed, source, tap, policy, mean, std, dev, layers):
    """Run the teacher on one view to learn each layer's rank and width; make the projections."""
    x = make_views(source.get_batch([0]).to(dev), torch.zeros(1, 1, 3, dtype=torch.int16, device=dev),
                   policy.padding, mean, std)
    with torch.no_grad():
        _, feats = tap(x)
    specs, poolings = [], []
    for i, name in enumerate(layers):
        pooling = _features.resolve_pooling(feats[name].ndim, o.pooling)
        d = int(_features.pool_features(feats[name], pooling).shape[1])
        seed = base_seed + i
        specs.append(LayerSpec(name, pooling, d, make_projection(d, o.r, seed), seed, redacted=o.redact))
        poolings.append(pooling)
    return specs, poolings


def _config(o, source, teacher, specs, poolings, k, view_seed) -> dict:
    """Everything that decides the content; a resume must match it exactly."""
    return {
        "teacher": teacher.weights_sha256, "dataset": source.identity(), "n": len(source),
        "labels": labels_sha256(source.labels),
        "layers": [[sp.name, p, sp.d, sp.r, sp.seed] for sp, p in zip(specs, poolings)],
        "views": [o.views, k, view_seed, o.padding, o.flip, o.replay],
        "batch": max(1, o.batch_size // k), "chunk": o.chunk_size, "autocast": o.autocast,
    }


def _prepare(out: Path, work: Path, config: dict, o: BuildOptions, say) -> str:
    """Check the output and work folder; create or reuse the work folder.  Returns "done" if
    the output is already complete and --resume was asked for, else "go"."""
    if not out.parent.is_dir():
        raise FpkitFileNotFoundError(f"output folder {out.parent} does not exist; create it or choose another -o path")
    if not os.access(out.parent, os.W_OK):
        raise FpkitPermissionError(f"output folder {out.parent} is not writable; choose another -o path")
    for stale in out.parent.glob(f".{out.name}.writing-*"):
        stale.unlink(missing_ok=True)
    if out.exists() and not o.force:
        if o.resume:
            _check_complete_output(out, config)
            if work.exists():
                _leftover_work(out, work, config)
            shutil.rmtree(work.parent / (work.name + ".new"), ignore_errors=True)
            say(f"[fpkit build] {out} is already complete; nothing to resume")
            return "done"
        raise OutputExistsError(f"{out} exists; pass --force to replace it or choose another -o path")
    if work.exists():
        if o.force:
            shutil.rmtree(work)
        elif o.resume:
            try:
                old = json.loads((work / "config.json").read_text())
            except (OSError, ValueError):
                say(f"[fpkit build] the interrupted build in {work} is unreadable; starting over")
                shutil.rmtree(work)
            else:
                if old != config:
                    raise MismatchError(f"the interrupted build in {work} used other settings: "
                                        f"{'; '.join(_config_changes(old, config))}; repeat its exact options, "
                                        "or pass --force to start over")
                return "go"
        else:
            raise OutputExistsError(f"an interrupted build of {out} exists in {work}; pass --resume to continue it "
                                    "or --force to start over")
    tmp = work.parent / (work.name + ".new")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        (tmp / "done").mkdir()
        _WorkStore(tmp, config["n"], config["views"][1] if o.replay else 0, [lay[3] for lay in config["layers"]],
                   create=True)
        (tmp / "config.json").write_text(json.dumps(config))
        os.replace(tmp, work)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return "go"


def _config_changes(old: dict, new: dict) -> list[str]:
    """What differs between an interrupted build's settings and these, in option names."""
    out: list[str] = []

    def was(what: str, a, b) -> None:
        if a != b:
            out.append(f"{what} was {a}, now {b}")

    if old.get("teacher") != new["teacher"]:
        out.append("the teacher's weights differ (another TEACHER file)")
    od, nd = old.get("dataset") or {}, new["dataset"]
    for key, what in (("name", "DATASET"), ("split", "--split"), ("normalize", "--normalize")):
        was(what, od.get(key), nd.get(key))
    if od.get("name") == nd.get("name"):
        was("the number of samples", old.get("n"), new["n"])
        if old.get("n") == new["n"] and old.get("labels") != new["labels"]:
            out.append("the dataset's labels differ")
    ol, nl = old.get("layers") or [], new["layers"]
    if ol != nl:
        fmt = lambda ls: ", ".join(f"{n} ({p}, d={d}, r={r}, seed {s})" for n, p, d, r, s in ls)  # noqa: E731
        out.append(f"--layer/--r/--seed/--pooling: the layers were {fmt(ol)}, now {fmt(nl)}")
    ov, nv = old.get("views") or [None] * 6, new["views"]
    for i, what in ((0, "--views"), (2, "--view-seed"), (3, "--padding"), (4, "flips (--no-flip)"), (5, "--replay")):
        was(what, ov[i], nv[i])
    if ov[1] == nv[1]:   # with other views, the samples per step change too: not a separate cause
        was("samples per teacher step (--batch-size // views)", old.get("batch"), new["batch"])
    was("--chunk-size", old.get("chunk"), new["chunk"])
    was("--autocast", old.get("autocast"), new["autocast"])
    return out or ["the work folder's settings could not be compared (made by another fpkit version?)"]


def _check_complete_output(out: Path, config: dict) -> None:
    """--resume found a complete output: it must be what these settings would build."""
    from .format import open_fingerprints
    m = open_fingerprints(out, verify=False, load_views=False).metadata
    got = {
        "teacher": m["teacher"]["weights_sha256"],
        "dataset": [m["dataset"]["name"], m["dataset"]["split"], m["dataset"]["num_samples"]],
        "layers": [[lay["name"], lay["pooling"], lay["d"], lay["projection"]["r"],
                    lay["projection"]["seed"]] for lay in m["layers"]],
        "views": [m["views"]["count"], m["views"]["per_sample"], m["views"]["seed"], m["views"]["replay"]],
    }
    redacted = any(lay[4] is None for lay in got["layers"])
    want = {
        "teacher": config["teacher"],
        "dataset": [config["dataset"]["name"], config["dataset"]["split"], config["n"]],
        "layers": [[name, p, d, r, None if redacted else seed] for name, p, d, r, seed in config["layers"]],
        "views": [config["views"][0], config["views"][1], config["views"][2], config["views"][5]],
    }
    diff = [key for key in want if want[key] != got[key]]
    if diff:
        raise OutputExistsError(f"{out} exists but was built with other settings ({', '.join(diff)}); "
                                "pass --force to rebuild it or choose another -o path")


def _leftover_work(out: Path, work: Path, config: dict) -> None:
    """A work folder next to a complete output: remove it if it is the finished work of these
    settings (a build killed between renaming the file into place and removing its work folder);
    refuse if it is an unfinished or different build, which --resume must not silently ignore."""
    try:
        old = json.loads((work / "config.json").read_text())
    except (OSError, ValueError):
        old = None
    chunks = (config["n"] + config["chunk"] - 1) // config["chunk"]
    if old == config and all((work / "done" / f"{c:06d}.json").exists() for c in range(chunks)):
        shutil.rmtree(work, ignore_errors=True)
        return
    raise OutputExistsError(f"{out} exists and an unfinished build of it is in {work}; pass --force to "
                            f"rebuild from scratch, or delete {out} and rerun with --resume to continue that build")


def _preallocate(path: Path) -> None:
    """Reserve a memory map's blocks now: writing into a sparse map on a full disk kills the
    process with SIGBUS; reserving turns that into a StorageError before any work is done."""
    size = path.stat().st_size
    try:
        with open(path, "r+b") as fh:
            os.posix_fallocate(fh.fileno(), 0, size)
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise StorageError(errno.ENOSPC, f"not enough disk space for the build's work folder {path.parent} "
                                             f"({size:,} bytes for {path.name}); free space or choose another -o "
                                             "folder") from e
        if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL):   # filesystems without fallocate: go on
            raise


class _WorkStore:
    """The work folder: float32 memory maps of results and one marker per finished chunk."""

    def __init__(self, work: Path, n: int, k: int, rs: list[int], create: bool):
        self.work = work
        mode = "w+" if create else "r+"
        mm = np.lib.format.open_memmap
        self.sample = [mm(work / f"layer{i}.npy", mode=mode, dtype=np.float32, shape=(n, r)) for i, r in enumerate(rs)]
        self.digests = mm(work / "digests.npy", mode=mode, dtype=np.uint64, shape=(n,))
        self.views = [mm(work / f"layer{i}.views.npy", mode=mode, dtype=np.float32, shape=(n, k, r))
                      for i, r in enumerate(rs)] if k else []
        self.view_params = mm(work / "view_params.npy", mode=mode, dtype=np.int16, shape=(n, k, 3)) if k else None
        self.n = n
        if create:
            for path in work.glob("*.npy"):
                _preallocate(path)

    def chunk_len(self, c: int, size: int) -> int:
        return min(self.n, (c + 1) * size) - c * size

    def is_done(self, c: int) -> bool:
        return (self.work / "done" / f"{c:06d}.json").exists()

    def mark_done(self, c: int, correct: int, count: int) -> None:
        for arr in [*self.sample, self.digests, *self.views] + ([self.view_params] if self.view_params is not None else []):
            arr.flush()
        tmp = self.work / "done" / f".{c:06d}.tmp"
        tmp.write_text(json.dumps({"correct": correct, "count": count}))
        os.replace(tmp, self.work / "done" / f"{c:06d}.json")

    def accuracy(self) -> tuple[int, int]:
        correct = count = 0
        for p in (self.work / "done").glob("*.json"):
            d = json.loads(p.read_text())
            correct += d["correct"]
            count += d["count"]
        return correct, count


def _compute(o, source, tap, specs, poolings, policy, k, view_seed, mean, std, dev, store, todo, progress) -> None:
    """Run the teacher over the chunks ``todo`` and fill ``store``.

    A one-step software pipeline: the device's work for step i is queued (views, forward,
    projection, and a non-blocking copy of the results to pinned host memory) before step i-1's
    results are written, so on CUDA the host-side work (decoding the next step, digests, writes
    into the work folder) overlaps the GPU's.  On the CPU the same code runs step by step.
    """
    spb = max(1, o.batch_size // k)
    steps: list[list[int]] = []
    owner: list[int] = []
    for c in todo:
        lo, hi = c * o.chunk_size, min(store.n, (c + 1) * o.chunk_size)
        for s in range(lo, hi, spb):
            steps.append(list(range(s, min(hi, s + spb))))
            owner.append(c)
    loader = torch.utils.data.DataLoader(_Fetch(source), batch_size=None, sampler=steps,
                                         num_workers=o.num_workers, pin_memory=dev.type == "cuda")
    Rs = [torch.from_numpy(sp.R).to(dev) for sp in specs]
    labels_all = torch.from_numpy(source.labels)
    cuda = dev.type == "cuda"
    amp = dict(device_type=dev.type, dtype=getattr(torch, o.autocast) if o.autocast else torch.float32,
               enabled=o.autocast is not None)
    sink = _StepSink(store, specs, k, labels_all, {c: store.chunk_len(c, o.chunk_size) for c in todo}, progress)
    pending = None
    with torch.inference_mode():
        for (batch_u8, idx_t), c in zip(loader, owner):
            idx = idx_t.numpy()
            b = len(idx)
            params = policy.views_for(idx, o.views, view_seed)
            x = make_views(batch_u8.to(dev, non_blocking=cuda), torch.from_numpy(params).to(dev, non_blocking=cuda),
                           policy.padding, mean, std, channels_last=cuda)
            with torch.autocast(**amp):
                logits, feats = tap(x)
            results = {"finite": [], "mean": [], "views": []}
            for i, (sp, pooling) in enumerate(zip(specs, poolings)):
                pooled = _features.pool_features(feats[sp.name], pooling).float()
                phi = _features.project_features(pooled, Rs[i]).view(b, k, sp.r)
                results["finite"].append(torch.isfinite(pooled).all(dim=1).view(b, k).all(dim=1))
                results["mean"].append(phi.mean(dim=1))
                if store.views:
                    results["views"].append(phi)
            if isinstance(logits, torch.Tensor) and logits.ndim == 2:
                results["pred"] = [logits.argmax(dim=1).view(b, k)]
            host = {key: [t.to("cpu", non_blocking=cuda) for t in ts] for key, ts in results.items()}
            ready = None
            if cuda:
                ready = torch.cuda.Event()
                ready.record(torch.cuda.current_stream(dev))
            # host work that does not need the device's results overlaps the device's work
            hwc = batch_u8.permute(0, 2, 3, 1).contiguous().numpy()
            store.digests[idx] = [sample_digest(img) for img in hwc]
            if store.view_params is not None:
                store.view_params[idx] = params
            if pending is not None:
                sink.write(*pending)
            pending = (idx, c, host, ready)
        if pending is not None:
            sink.write(*pending)
    sink.raise_if_nonfinite()


class _StepSink:
    """Writes one step's results into the work store and marks chunks done when complete."""

    def __init__(self, store: "_WorkStore", specs, k: int, labels: torch.Tensor, remaining: dict[int, int],
                 progress: _Progress):
        self.store, self.specs, self.k, self.labels = store, specs, k, labels
        self.remaining, self.progress = remaining, progress
        self.correct: dict[int, list[int]] = {}
        self.bad: dict[str, set[int]] = {}
        self.tainted: set[int] = set()

    def write(self, idx: np.ndarray, c: int, host: dict, ready) -> None:
        if ready is not None:
            ready.synchronize()
        b = len(idx)
        for i, sp in enumerate(self.specs):
            finite = host["finite"][i].numpy()
            if not finite.all():
                self.bad.setdefault(sp.name, set()).update(idx[~finite].tolist())
                self.tainted.add(c)
            self.store.sample[i][idx] = host["mean"][i].numpy()
            if self.store.views:
                self.store.views[i][idx] = host["views"][i].numpy()
        if "pred" in host:
            hits = int((host["pred"][0] == self.labels[idx][:, None]).sum())
            acc = self.correct.setdefault(c, [0, 0])
            acc[0] += hits
            acc[1] += b * self.k
        self.remaining[c] -= b
        if self.remaining[c] == 0 and c not in self.tainted:
            acc = self.correct.pop(c, [0, 0])
            self.store.mark_done(c, acc[0], acc[1])
        self.progress.update(b, self.k)

    def raise_if_nonfinite(self) -> None:
        for name, where in self.bad.items():
            ids = sorted(where)
            raise NonFiniteError(f"teacher layer {name} produced NaN or infinite features for {len(ids)} samples "
                                 f"{ids[:20]}{' ...' if len(ids) > 20 else ''}; nothing was written: check the "
                                 "teacher's weights and the input normalisation")


def _finish(o, out, work, store, source, teacher, specs, poolings, policy, k, view_seed, top1, count, world, dev):
    accuracy = {"top1": round(top1, 6), "measured_on": "views", "count": count} if top1 is not None else None
    n = len(source)
    writer = FingerprintWriter(
        out, layers=specs, labels=source.labels, sample_digests=np.asarray(store.digests),
        classes=source.classes,
        teacher={"arch": teacher.arch, "weights_sha256": teacher.weights_sha256, "num_params": teacher.num_params,
                 "source_kind": teacher.source_kind, "trusted_code": teacher.trusted_code, "accuracy": accuracy},
        dataset=source.identity(),
        views={"policy": policy.to_dict(), "count": o.views, "per_sample": k, "seed": view_seed, "replay": o.replay},
        compute={"device": str(dev), "autocast": o.autocast, "batch_size": max(1, o.batch_size // k) * k,
                 "world_size": world},
        tables=o.tables, views_per_sample=k if o.replay else None, dtype=o.dtype, codec=o.codec,
        overwrite=o.force or out.exists())
    with writer:
        step = 4096
        for s in range(0, n, step):
            e = min(n, s + step)
            rows = {sp.name: np.asarray(store.sample[i][s:e]) for i, sp in enumerate(specs)}
            if o.replay:
                writer.append(rows, views={sp.name: np.asarray(store.views[i][s:e]) for i, sp in enumerate(specs)},
                              view_params=np.asarray(store.view_params[s:e]))
            else:
                writer.append(rows)
