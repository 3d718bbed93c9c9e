"""``fpkit build``: run a teacher once over a dataset split and write its fingerprint file.

How the work is organised (one module per step):

* :mod:`.options` checks what the user asked for; :mod:`.job` probes the teacher once and makes
  the :class:`~fpkit.build.plan.BuildPlan`, everything that decides the file's content.
* :mod:`.prepare` checks the output and makes (or, with ``--resume``, reuses) the work folder
  :mod:`.workstore` next to the output: float32 memory maps and one marker per finished chunk.
  A killed or interrupted build leaves only that folder.
* :mod:`.compute` runs the teacher over the chunks; under ``torchrun`` (:mod:`.dist`) every rank
  takes the chunks ``c % world_size == rank`` (the work folder must be on storage all ranks
  share); rank 0 waits for all and :mod:`.finish` writes the file atomically.
"""

from __future__ import annotations

import shutil
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

from .._text import printable
from ..datasets import ImageSource, open_source
from ..diagnose import result_warnings
from ..errors import ConfigError, FpkitError, MismatchError, OptionError
from ..features import LayerTap, default_layer
from ..format import open_fingerprints
from ..inputs import check_inputs
from ..normalization import choose_normalization, parse_normalize
from ..teachers import Teacher, load_embedded_teacher, load_teacher
from .compute import compute
from .dist import Dist
from .finish import file_contents, write_file
from .job import BuildJob, make_plan, probe_layers, projection_seed, wide_projection_warnings
from .options import BuildOptions, check_options, check_source_policy, default_output, option_warnings
from .prepare import ALREADY_DONE, prepare_output
from .progress import Progress, format_rate, forwards_line
from .subset import sample_range, take_samples
from .workstore import WorkStore, read_plan, work_folder


class BuildInterrupted(FpkitError, KeyboardInterrupt):
    """The build was interrupted (Ctrl-C / SIGTERM); its finished chunks are kept for --resume."""


@dataclass
class BuildResult:
    """What a build produced and what it cost."""

    path: Path
    num_samples: int
    views_per_sample: int
    teacher_forwards: int
    seconds: float
    """The whole build, from loading the teacher to the file in place."""
    compute_seconds: float
    """The teacher loop over this run's chunks (without loading, probing and writing)."""
    views_per_second: float
    """Teacher views (sample x view) per second of ``compute_seconds``."""
    images_per_second: float
    """Samples (images) per second of ``compute_seconds``: ``views_per_second`` / K."""
    teacher_top1: float | None
    chunks_resumed: int
    size_bytes: int
    layers: list[str] = field(default_factory=list)


def _load_teacher(o: BuildOptions, in_channels: int) -> Teacher:
    if o.teacher == "embedded":
        return load_embedded_teacher()
    return load_teacher(
        o.teacher,
        arch=o.arch,
        num_classes=o.num_classes,
        in_channels=in_channels,
        trust_code=o.trust_teacher_code,
        checkpoint_key=o.checkpoint_key,
    )


def _check(o: BuildOptions) -> BuildOptions:
    """``o`` checked (bad values raise OptionError), with its dataset resolved (see fpkit.inputs)."""
    try:  # the values themselves (exit 2 on the command line); the device depends on this machine (exit 1)
        check_options(replace(o, device="cpu"))
        if o.normalize is not None:
            parse_normalize(o.normalize)  # the syntax now; the channel count once the images are open
    except OptionError:
        raise
    except ConfigError as e:
        raise OptionError(str(e)) from e
    check_options(o)
    return replace(o, dataset=check_inputs(o.teacher, o.dataset, o.checkpoint_key))


def _normalize(o: BuildOptions, source: ImageSource, teacher: Teacher, say) -> None:
    """Set the statistics the views are normalised with (fpkit.normalization) and say which."""
    own = (tuple(source.mean), tuple(source.std)) if source.own_stats else None
    stats, notes, warnings = choose_normalization(
        o.normalize, teacher.normalize, own, source.name, source.image_shape[0], teacher.arch_normalize
    )
    source.mean, source.std = stats
    for note in notes:
        say(f"[fpkit build] {note}")
    for warning in warnings:
        say(f"[fpkit build] warning: {warning}")


def build(o: BuildOptions, *, quiet: bool = False, log: Callable[[str], None] | None = None) -> BuildResult:
    """Build a fingerprint file as ``o`` describes and return what was written.

    Raises:
        ConfigError (OptionError: an option's value is invalid in itself), MismatchError,
        OutputExistsError, UntrustedCodeError, NonFiniteError,
        FpkitFileNotFoundError, StorageError; BuildInterrupted on Ctrl-C (work kept for --resume).
    """
    # messages can quote names from the teacher's file (module names): escape control characters
    say = log or (lambda msg: None if quiet else print(printable(msg), file=sys.stderr))
    o = _check(o)  # a missing teacher is reported before the dataset is touched
    for warning in option_warnings(o):
        say(f"[fpkit build] warning: {warning}")
    t0 = time.perf_counter()
    source = open_source(o.dataset, o.root, o.split, download=o.download)
    source = take_samples(source, sample_range(o.samples, o.limit, len(source), source.name))  # --samples/--limit
    check_source_policy(o, source)  # pad-crop needs one image size; the others take any
    teacher = _load_teacher(o, source.image_shape[0])
    for note in teacher.notes:
        say(f"[fpkit build] note: {note}")
    _normalize(o, source, teacher, say)
    if teacher.num_classes is not None and teacher.num_classes != len(source.classes):
        raise MismatchError(
            f"teacher has {teacher.num_classes} outputs but {source.name} has "
            f"{len(source.classes)} classes; pick the matching teacher or dataset"
        )
    dist = Dist(o.device)
    try:
        return _run(o, source, teacher, dist, say, quiet, t0)
    finally:
        dist.close()


def _result(out: Path, n: int, k: int, forwards: int, seconds: float, layers: list[str], **kw) -> BuildResult:
    size = out.stat().st_size if out.exists() else 0
    run_s, done = kw.get("run_s", 0.0), kw.get("done", 0)  # done: samples computed in run_s
    vps, ips = (done * k / run_s, done / run_s) if run_s > 0 else (0.0, 0.0)
    return BuildResult(
        out, n, k, forwards, seconds, run_s, vps, ips, kw.get("top1"), kw.get("resumed", 0), size, list(layers)
    )


def _run(
    o: BuildOptions, source: ImageSource, teacher: Teacher, dist: Dist, say, quiet: bool, t0: float
) -> BuildResult:
    dev = dist.device
    model = teacher.model.to(dev)
    if dev.type == "cuda":
        import torch

        model = model.to(memory_format=torch.channels_last)
    layers = list(o.layers) or [teacher.default_layer or default_layer(teacher.model)]
    n = len(source)
    tap = LayerTap(model, layers, repeated="error")  # a build refuses a module that runs twice per forward
    try:
        out = Path(o.output) if o.output else default_output(o, source)
        work = work_folder(out)
        earlier = read_plan(work) if o.resume else None  # the interrupted build's plan, read once
        specs = probe_layers(o, projection_seed(o, earlier, dist), source, tap, dev)
        plan = make_plan(o, source, teacher, specs, earlier, dev)
        k = plan.views.per_sample
        if dist.rank == 0:
            for warning in wide_projection_warnings(plan, len(source.classes)):
                say(f"[fpkit build] warning: {warning}")
        prepared = dist.on_rank0(lambda: prepare_output(out, plan, force=o.force, resume=o.resume, say=say))
        if prepared == ALREADY_DONE:
            return _result(out, n, k, 0, time.perf_counter() - t0, layers)
        job = BuildJob(plan, source, teacher, tap, dev, specs, WorkStore(work, plan), o.num_workers)
        chunks = plan.chunks_for_rank(dist.rank, dist.world)
        todo = [c for c in chunks if not job.store.is_done(c)]
        resumed = len(chunks) - len(todo)
        if resumed and dist.rank == 0:
            say(f"[fpkit build] resuming: {resumed} of {len(chunks)} chunks already done")
        work_samples = sum(len(plan.chunk_range(c)) for c in todo)
        if dist.rank == 0:  # what all ranks have left to do
            left = sum(len(plan.chunk_range(c)) for c in range(plan.num_chunks) if not job.store.is_done(c))
            say(forwards_line(left, k, plan.subset))
        progress = Progress(work_samples, quiet or dist.rank != 0)
        t_run = time.perf_counter()
        try:
            compute(job, todo, progress)
        except KeyboardInterrupt as e:
            raise _interrupted(job, chunks, work, dist) from e
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
        correct, count = job.store.accuracy()
        top1 = correct / count if count else None
        write_file(job, out, file_contents(job, top1, count, dist.world), overwrite=o.force or out.exists())
        shutil.rmtree(work, ignore_errors=True)
    dist.barrier()
    res = _result(
        out, n, k, n * k, time.perf_counter() - t0, layers, top1=top1, resumed=resumed, run_s=run_s, done=work_samples
    )
    if dist.rank == 0:
        say(
            f"[fpkit build] wrote {out} ({res.size_bytes:,} bytes): {n} samples x {k} view{'s' if k != 1 else ''}, "
            f"layers {', '.join(layers)}, r={o.r}, {o.dtype}; teacher top-1 on views "
            f"{'n/a' if top1 is None else f'{top1:.4f}'}; {res.seconds:.1f} s in all"
            + (
                f", teacher loop {format_rate(res.images_per_second)} images/s ({res.views_per_second:,.0f} views/s)"
                if res.compute_seconds > 0
                else ""
            )
        )
        for warning in result_warnings(open_fingerprints(out, verify=False, load_views=False)):
            say(f"[fpkit build] warning: {warning}")
    return res


def _interrupted(job: BuildJob, chunks: list[int], work: Path, dist: Dist) -> BuildInterrupted:
    """The error of an interrupted build, true to what it kept: the finished chunks, or nothing
    (then, in a single-process build, the work folder is removed so that a plain rerun starts)."""
    done = sum(job.store.is_done(c) for c in chunks)
    if done:
        return BuildInterrupted(
            f"interrupted; {done} of {len(chunks)} chunks ({job.plan.chunk_size} samples each) are finished "
            f"and kept in {work}: run the same command with --resume to continue, or --force to start over"
        )
    if dist.world == 1:
        shutil.rmtree(work, ignore_errors=True)
        return BuildInterrupted("interrupted before any chunk was finished; nothing to resume: run the command again")
    return BuildInterrupted(
        f"interrupted before this process finished any chunk; other processes' chunks are in {work}: "
        "run the same command with --resume to continue, or --force to start over"
    )
