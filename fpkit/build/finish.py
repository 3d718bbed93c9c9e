"""Finishing a build: stream the work folder's float32 results into the fingerprint file.

:class:`fpkit.format.FingerprintWriter` writes a temporary file and renames it into place only
when complete, so the output name appears only for a finished file.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from ..format import FileContents, FingerprintWriter
from ..format.metadata import Accuracy, ComputeInfo, DatasetInfo, StorageInfo, Subset, TeacherInfo, ViewsInfo
from .job import BuildJob
from .workstore import logits_spec

_ROWS_PER_APPEND = 4096


def file_contents(job: BuildJob, top1: float | None, count: int, world: int) -> FileContents:
    """The file's metadata and layout for ``job``'s plan, with the teacher's measured top-1 on
    ``count`` (sample, view) predictions and the number of processes that computed it."""
    plan, source, teacher = job.plan, job.source, job.teacher
    accuracy = Accuracy(round(top1, 6), "views", count) if top1 is not None else None
    k = plan.views.per_sample
    dataset = DatasetInfo.from_json(source.identity())
    if plan.subset is not None:  # --samples/--limit: format 1.1's dataset.subset
        dataset = replace(dataset, subset=Subset(**plan.subset))
    return FileContents(
        layers=job.specs,
        labels=source.labels,
        sample_digests=np.asarray(job.store.digests),
        classes=source.classes,
        teacher=TeacherInfo(
            teacher.arch,
            teacher.weights_sha256,
            teacher.num_params,
            teacher.source_kind,
            teacher.trusted_code,
            accuracy,
        ),
        dataset=dataset,
        views=ViewsInfo(plan.views.policy.to_dict(), plan.views.count, k, plan.views.seed, plan.views.replay),
        compute=ComputeInfo(str(job.device), plan.autocast, plan.samples_per_step * k, world),
        tables=plan.storage.tables,
        views_per_sample=k if plan.views.replay else None,
        storage=StorageInfo(plan.storage.dtype, plan.storage.codec),
        logits=logits_spec(plan),
    )


def write_file(job: BuildJob, out: Path, contents: FileContents, overwrite: bool) -> None:
    """Write ``out`` from the work store (atomically; replaces ``out`` only if ``overwrite``)."""
    store, n = job.store, job.plan.num_samples
    with FingerprintWriter(out, contents, overwrite=overwrite) as writer:
        for s in range(0, n, _ROWS_PER_APPEND):
            e = min(n, s + _ROWS_PER_APPEND)
            rows = {sp.name: np.asarray(store.sample[i][s:e]) for i, sp in enumerate(job.specs)}
            z = None if store.logits is None else np.asarray(store.logits[s:e])
            if store.logit_tables:  # topk, sample: reduced in the compute loop, stored as they are
                z = {path: np.asarray(t[s:e]) for path, t in store.logit_tables.items()}
            if job.plan.views.replay:
                views = {sp.name: np.asarray(store.views[i][s:e]) for i, sp in enumerate(job.specs)}
                writer.append(rows, views=views, view_params=np.asarray(store.view_params[s:e]), logits=z)
            else:
                writer.append(rows, logits=z)
