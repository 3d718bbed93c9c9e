"""The compute loop: run the teacher over chunks of samples and fill the work store.

Within a chunk, steps of ``plan.samples_per_step`` samples are fetched as uint8, their K views are
cut on the device (:mod:`fpkit.augment`), the teacher runs once on all views, and the tapped
features become fingerprints (normalise, project, average over views) in float32.
"""

from __future__ import annotations

import numpy as np
import torch

from .. import features as _features
from ..datasets import BatchFetch
from ..errors import ConfigError, NonFiniteError
from ..format import LayerSpec
from ..format import logits as _logits
from ..format.digests import sample_digest
from ..views import cut_views, views_for
from .job import BuildJob
from .progress import Progress
from .workstore import WorkStore


def _steps(job: BuildJob, todo: list[int]) -> tuple[list[list[int]], list[int]]:
    """The steps (sample index lists) of the chunks ``todo``, and the chunk each belongs to."""
    spb = job.plan.samples_per_step
    steps: list[list[int]] = []
    owner: list[int] = []
    for c in todo:
        rng = job.plan.chunk_range(c)
        for s in range(rng.start, rng.stop, spb):
            steps.append(list(range(s, min(rng.stop, s + spb))))
            owner.append(c)
    return steps, owner


def compute(job: BuildJob, todo: list[int], progress: Progress) -> None:
    """Run the teacher over the chunks ``todo`` and fill ``job.store``.

    A one-step software pipeline: the device's work for step i is queued (views, forward,
    projection, and a non-blocking copy of the results to pinned host memory) before step i-1's
    results are written, so on CUDA the host-side work (decoding the next step, digests, writes
    into the work folder) overlaps the GPU's.  On the CPU the same code runs step by step.

    Raises:
        NonFiniteError: a layer gave NaN/inf features (the affected chunks are not marked done).
    """
    plan, dev, store = job.plan, job.device, job.store
    views = plan.views
    policy, k = views.policy, views.per_sample
    steps, owner = _steps(job, todo)
    cuda = dev.type == "cuda"
    loader = torch.utils.data.DataLoader(
        BatchFetch(job.source), batch_size=None, sampler=steps, num_workers=job.num_workers, pin_memory=cuda
    )
    Rs = [torch.from_numpy(sp.R).to(dev) for sp in job.specs]
    mean, std = job.mean, job.std
    amp = dict(
        device_type=dev.type,
        dtype=getattr(torch, plan.autocast) if plan.autocast else torch.float32,
        enabled=plan.autocast is not None,
    )
    remaining = {c: len(plan.chunk_range(c)) for c in todo}
    sink = _StepSink(store, job.specs, k, torch.from_numpy(job.source.labels), remaining, progress)
    pending = None
    with torch.inference_mode():
        for (batch_u8, idx_t), c in zip(loader, owner):
            idx = idx_t.numpy()
            b = len(idx)
            params = views_for(policy, idx, views.count, views.seed, batch_u8)
            x = cut_views(
                policy,
                _to_device(batch_u8, dev, cuda),
                torch.from_numpy(params).to(dev, non_blocking=cuda),
                mean,
                std,
                channels_last=cuda,
            )
            with torch.autocast(**amp):
                logits, feats = job.tap(x)
            results: dict[str, list[torch.Tensor]] = {"finite": [], "mean": [], "views": []}
            for i, sp in enumerate(job.specs):
                pooled = _features.pool_features(feats[sp.name], sp.pooling).float()
                phi = _features.project_features(pooled, Rs[i]).view(b, k, sp.r)
                results["finite"].append(torch.isfinite(pooled).all(dim=1).view(b, k).all(dim=1))
                results["mean"].append(phi.mean(dim=1))
                if store.views:
                    results["views"].append(phi)
            if isinstance(logits, torch.Tensor) and logits.ndim == 2:
                results["pred"] = [logits.argmax(dim=1).view(b, k)]
            if store.logits_spec is not None:  # --logits: the same forward's output (format 1.3)
                results.update(reduce_logits(store, logits, b, k))
            host = {key: [t.to("cpu", non_blocking=cuda) for t in ts] for key, ts in results.items()}
            ready = None
            if cuda:
                ready = torch.cuda.Event()
                ready.record(torch.cuda.current_stream(dev))
            # host work that does not need the device's results overlaps the device's work
            store.digests[idx] = _digests(batch_u8)
            if store.view_params is not None:
                store.view_params[idx] = params
            if pending is not None:
                sink.write(*pending)
            pending = (idx, c, host, ready)
        if pending is not None:
            sink.write(*pending)
    sink.raise_if_nonfinite()


def logit_rows(logits, b: int, k: int, shape: tuple[int, ...]) -> torch.Tensor:
    """The float32 logits of a step for the work folder: [b, C] (the mean over the views) or
    [b, K, C].  Raises ConfigError when the teacher's output is not [b * K, C]."""
    c = shape[-1]
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2 or logits.shape[1] != c:
        got = list(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ConfigError(
            f"--logits needs a teacher whose output is [batch, {c}] for the dataset's {c} classes, "
            f"it gives {got}; build without --logits"
        )
    z = logits.float().reshape(b, k, c)
    return z.mean(dim=1) if len(shape) == 2 else z


def reduce_logits(store: WorkStore, logits, b: int, k: int) -> dict[str, list[torch.Tensor]]:
    """A step's logits as the work folder keeps them, on the device: float32 [b, C] or [b, K, C]
    (mean, full), the k largest of each view and their indices (topk:k; descending, ties by lower
    class index: :func:`fpkit.format.logits.topk`), or the views' float32 logits for the sink to
    draw from (sample:k; numpy's generator, :func:`fpkit.format.logits.sample_draws_at`).  With
    topk and sample, ``ok`` flags the samples whose logits the file could store (finite, and within
    float16's range when it stores float16), as the writer checks mean and full."""
    spec = store.logits_spec
    if store.logits is not None:
        return {"logits": [logit_rows(logits, b, k, store.logits.shape)]}
    z = logit_rows(logits, b, k, (b, k, int(store.num_classes)))
    limit = 65504.0 if spec.dtype == "float16" else float("inf")
    ok = (torch.isfinite(z) & (z.abs() <= limit)).flatten(1).all(dim=1)
    if spec.kind == "sample":
        return {"draw_from": [z], "logits_ok": [ok]}
    order = torch.sort(-z, dim=-1, stable=True).indices[..., : spec.k]
    return {"topk": [torch.gather(z, -1, order), order.to(torch.int32)], "logits_ok": [ok]}


def _to_device(images, dev: torch.device, cuda: bool):
    """A uint8 batch [B, C, H, W], or a list of [C, H, W] images of varied sizes, on ``dev``."""
    if isinstance(images, torch.Tensor):
        return images.to(dev, non_blocking=cuda)
    return [im.to(dev, non_blocking=cuda) for im in images]


def _digests(images) -> list[int]:
    """Section 6's per-sample digests of the decoded uint8 pixels, H x W x C."""
    if isinstance(images, torch.Tensor):
        return [sample_digest(img) for img in images.permute(0, 2, 3, 1).contiguous().numpy()]
    return [sample_digest(im.permute(1, 2, 0).contiguous().numpy()) for im in images]


class _StepSink:
    """Writes one step's results into the work store and marks chunks done when complete."""

    def __init__(
        self,
        store: WorkStore,
        specs: list[LayerSpec],
        k: int,
        labels: torch.Tensor,
        remaining: dict[int, int],
        progress: Progress,
    ):
        self.store, self.specs, self.k, self.labels = store, specs, k, labels
        self.remaining, self.progress = remaining, progress
        self.correct: dict[int, list[int]] = {}
        self.bad: dict[str, set[int]] = {}
        self.tainted: set[int] = set()
        self.bad_logits: set[int] = set()

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
        if "logits" in host:
            self.store.logits[idx] = host["logits"][0].numpy()
        if "logits_ok" in host:
            self._write_reduced(idx, c, host)
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

    def _write_reduced(self, idx: np.ndarray, c: int, host: dict) -> None:
        """topk, sample: the reduced tables of a step into the work store."""
        spec, tables = self.store.logits_spec, self.store.logit_tables
        ok = host["logits_ok"][0].numpy()
        if not ok.all():
            self.bad_logits.update(idx[~ok].tolist())
            self.tainted.add(c)
        if spec.kind == "sample":
            z = host["draw_from"][0].numpy()
            tables[_logits.SAMPLE_INDICES][idx] = _logits.sample_draws_at(z, spec.k, spec.temperature, spec.seed, idx)
        else:
            tables[_logits.TOPK_VALUES][idx] = host["topk"][0].numpy()
            tables[_logits.TOPK_INDICES][idx] = host["topk"][1].numpy()

    def raise_if_nonfinite(self) -> None:
        if self.bad_logits:
            ids = sorted(self.bad_logits)
            raise NonFiniteError(
                f"logits at samples {ids[:10]} cannot be stored (NaN, infinite, or beyond float16's range); "
                "store float32 (--dtype float32) or check the teacher; nothing was written"
            )
        for name, where in self.bad.items():
            ids = sorted(where)
            raise NonFiniteError(
                f"teacher layer {name} produced NaN or infinite features for {len(ids)} samples "
                f"{ids[:20]}{' ...' if len(ids) > 20 else ''}; nothing was written: check the "
                "teacher's weights and the input normalisation"
            )
