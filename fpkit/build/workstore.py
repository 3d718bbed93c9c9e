"""The work folder next to the output (``.NAME.partial/``): float32 memory maps of results, one
marker per finished chunk, and the plan they belong to.

A killed or interrupted build leaves only this folder; ``--resume`` skips the finished chunks.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import numpy as np

from ..errors import MismatchError, StorageError
from ..format import logits as _logits
from ..format.layout import view_params_fields
from .plan import BuildPlan

PLAN_FILE = "config.json"


def work_folder(out: Path) -> Path:
    """The work folder of the output ``out``."""
    return out.parent / f".{out.name}.partial"


def read_plan_json(work: Path) -> dict | None:
    """The work folder's plan file as JSON, whatever fpkit version wrote it; None if it is missing
    or not JSON."""
    try:
        return json.loads((work / PLAN_FILE).read_text())
    except (OSError, ValueError):
        return None


def plan_from_json(raw: dict | None) -> BuildPlan | None:
    """The plan in a plan file's JSON; None if there is none or another fpkit version wrote it."""
    try:
        return None if raw is None else BuildPlan.from_json(raw)
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def read_plan(work: Path) -> BuildPlan | None:
    """The plan stored in a work folder; None if it is missing, unreadable or of another version."""
    return plan_from_json(read_plan_json(work))


def logits_spec(plan: BuildPlan) -> _logits.LogitsSpec | None:
    """The file's logit table for ``--logits`` (float32 values when the tables are float32; the
    draws of sample:K use the views' seed)."""
    if plan.logits is None:
        return None
    dtype = "float32" if plan.storage.dtype == "float32" else "float16"
    return _logits.LogitsSpec.parse(plan.logits, dtype=dtype, seed=plan.views.seed)


def logit_arrays(plan: BuildPlan) -> dict[str, tuple[str, tuple[int, ...], str]]:
    """The work folder's logit arrays: table path -> (file name, shape, dtype).  mean and full keep
    the float32 logits ([N, C], [N, K, C]; encoded at finish); topk:K and sample:K keep what the
    file stores, reduced per step ([N, K, k]: float32 top-k values and int32 indices, int32 draws)."""
    spec = logits_spec(plan)
    if spec is None:
        return {}
    if spec.kind in ("mean", "full"):
        return {"": ("logits.npy", plan.logits_shape, "float32")}
    shape = (plan.num_samples, plan.views.per_sample, spec.k)
    out = {}
    for ds in _logits.datasets(spec, plan.num_samples, int(plan.num_classes or 0), plan.views.per_sample):
        dtype = "int32" if ds.dtype == "int32" else "float32"
        out[ds.path] = (f"logits.{ds.path.rpartition('/')[2]}.npy", shape, dtype)
    return out


def _preallocate(path: Path) -> None:
    """Reserve a memory map's blocks now: writing into a sparse map on a full disk kills the
    process with SIGBUS; reserving turns that into a StorageError before any work is done."""
    size = path.stat().st_size
    try:
        with open(path, "r+b") as fh:
            os.posix_fallocate(fh.fileno(), 0, size)
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise StorageError(
                errno.ENOSPC,
                f"not enough disk space for the build's work folder {path.parent} "
                f"({size:,} bytes for {path.name}); free space or choose another -o folder",
            ) from e
        if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL):  # filesystems without fallocate: go on
            raise


def all_chunks_done(work: Path, chunks: int) -> bool:
    """True if the work folder holds the marker of every chunk 0 .. chunks-1."""
    return all((work / "done" / f"{c:06d}.json").exists() for c in range(chunks))


class WorkStore:
    """The work folder's arrays: per layer the [N, r] fingerprints (and [N, K, r] per-view ones
    for replay), the per-sample digests, the views' parameters, and chunk markers."""

    def __init__(self, work: Path, plan: BuildPlan, create: bool = False):
        self.work = work
        n, k = plan.num_samples, plan.views.per_sample if plan.views.replay else 0
        mode = "w+" if create else "r+"
        mm = np.lib.format.open_memmap
        self.sample = [
            mm(work / f"layer{i}.npy", mode=mode, dtype=np.float32, shape=(n, lay.r))
            for i, lay in enumerate(plan.layers)
        ]
        self.digests = mm(work / "digests.npy", mode=mode, dtype=np.uint64, shape=(n,))
        self.views = (
            [
                mm(work / f"layer{i}.views.npy", mode=mode, dtype=np.float32, shape=(n, k, lay.r))
                for i, lay in enumerate(plan.layers)
            ]
            if k
            else []
        )
        fields, vp_dtype = view_params_fields(plan.views.policy.to_dict()["name"])
        vp_shape = (n, k, len(fields))
        self.view_params = mm(work / "view_params.npy", mode=mode, dtype=vp_dtype, shape=vp_shape) if k else None
        # --logits (format 1.3): the float32 logits (mean, full; encoded at finish) or the reduced
        # tables (topk, sample; stored as they are).  ``logits`` is the former, ``logit_tables`` the latter.
        self.logits_spec, self.num_classes = logits_spec(plan), plan.num_classes
        arrays = logit_arrays(plan)
        missing = [name for name, _, _ in arrays.values() if not create and not (work / name).exists()]
        if missing:
            raise MismatchError(
                f"the interrupted build in {work} has no {', '.join(missing)} (its work folder was made by "
                "another fpkit version); pass --force to start over"
            )
        tables = {path: mm(work / name, mode=mode, dtype=dt, shape=sh) for path, (name, sh, dt) in arrays.items()}
        self.logits = tables.pop("", None)
        self.logit_tables = tables
        self.n = n
        if create:
            for path in work.glob("*.npy"):
                _preallocate(path)

    @classmethod
    def create(cls, work: Path, plan: BuildPlan) -> None:
        """Make the work folder for ``plan`` atomically (built under ``.new``, then renamed)."""
        tmp = work.parent / (work.name + ".new")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            tmp.mkdir()
            (tmp / "done").mkdir()
            cls(tmp, plan, create=True)
            (tmp / PLAN_FILE).write_text(json.dumps(plan.to_json()))
            os.replace(tmp, work)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def is_done(self, c: int) -> bool:
        return (self.work / "done" / f"{c:06d}.json").exists()

    def mark_done(self, c: int, correct: int, count: int) -> None:
        """Flush every map, then write chunk ``c``'s marker (with its accuracy counts) atomically."""
        extra = [a for a in (self.view_params, self.logits, *self.logit_tables.values()) if a is not None]
        for arr in [*self.sample, self.digests, *self.views, *extra]:
            arr.flush()
        tmp = self.work / "done" / f".{c:06d}.tmp"
        tmp.write_text(json.dumps({"correct": correct, "count": count}))
        os.replace(tmp, self.work / "done" / f"{c:06d}.json")

    def accuracy(self) -> tuple[int, int]:
        """(correct, counted) predictions over all finished chunks."""
        correct = count = 0
        for p in (self.work / "done").glob("*.json"):
            d = json.loads(p.read_text())
            correct += d["correct"]
            count += d["count"]
        return correct, count
