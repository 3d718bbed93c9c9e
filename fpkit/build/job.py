"""From options to work: the plan of a build (probing the teacher once) and the job one rank runs.

:func:`make_plan` decides everything that fixes the file's content; :class:`BuildJob` holds what
a rank computes with (the source, the loaded and tapped teacher, the device, the normalisation,
the projections and the work store).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .. import features as _features
from ..augment import ViewPolicy, make_views
from ..datasets import ImageSource
from ..format import LayerSpec
from ..format.digests import labels_sha256
from ..projection import make_projection
from ..teachers import Teacher
from .dist import Dist
from .options import BuildOptions
from .plan import BuildPlan, LayerPlan, StoragePlan, ViewPlan
from .workstore import WorkStore, read_plan


@dataclass
class BuildJob:
    """What one rank runs with: ``plan`` and the live objects that compute it."""

    plan: BuildPlan
    source: ImageSource
    teacher: Teacher
    tap: _features.LayerTap
    device: torch.device
    specs: list[LayerSpec]
    store: WorkStore
    num_workers: int = 0

    @property
    def mean(self) -> torch.Tensor:
        return torch.tensor(self.source.mean, dtype=torch.float32, device=self.device)

    @property
    def std(self) -> torch.Tensor:
        return torch.tensor(self.source.std, dtype=torch.float32, device=self.device)


def view_plan(o: BuildOptions) -> ViewPlan:
    """The views the options ask for (K is the policy's count for ``--views all``)."""
    k = ViewPolicy(o.padding, o.flip).num_views if o.views == "all" else int(o.views)
    return ViewPlan(o.views, k, 0 if o.view_seed is None else o.view_seed, o.padding, o.flip, o.replay)


def projection_seed(o: BuildOptions, work: Path, dist: Dist) -> int:
    """--seed if given; else 0, or, with --redact, a secret random seed (so that R cannot be
    recovered by trying small seeds against the SHA-256 of R the file keeps).  A resumed redacted
    build reuses its own secret seed; ranks of one build share rank 0's."""
    if o.seed is not None:
        return o.seed
    if not o.redact:
        return 0
    seed = None
    if dist.rank == 0:
        old = read_plan(work) if o.resume else None
        seed = old.layers[0].seed if old is not None and old.layers else secrets.randbits(62)
    return int(dist.share(seed))


def probe_layers(
    o: BuildOptions, base_seed: int, source: ImageSource, tap: _features.LayerTap, device: torch.device
) -> list[LayerSpec]:
    """Run the teacher on one view to learn each tapped layer's rank and width; make the projections
    (layer i uses seed ``base_seed + i``)."""
    mean = torch.tensor(source.mean, dtype=torch.float32, device=device)
    std = torch.tensor(source.std, dtype=torch.float32, device=device)
    zero_view = torch.zeros(1, 1, 3, dtype=torch.int16, device=device)
    x = make_views(source.get_batch([0]).to(device), zero_view, o.padding, mean, std)
    with torch.no_grad():
        _, feats = tap(x)
    specs = []
    for i, name in enumerate(tap.layers):
        pooling = _features.resolve_pooling(feats[name].ndim, o.pooling)
        d = int(_features.pool_features(feats[name], pooling).shape[1])
        seed = base_seed + i
        specs.append(LayerSpec(name, pooling, d, make_projection(d, o.r, seed), seed, redacted=o.redact))
    return specs


def make_plan(o: BuildOptions, source: ImageSource, teacher: Teacher, specs: list[LayerSpec]) -> BuildPlan:
    """Everything that decides the file's content; a resume must match it."""
    views = view_plan(o)
    return BuildPlan(
        teacher_sha256=teacher.weights_sha256,
        dataset=source.identity(),
        num_samples=len(source),
        labels_sha256=labels_sha256(np.asarray(source.labels)),
        layers=tuple(LayerPlan(sp.name, sp.pooling, sp.d, sp.r, sp.seed) for sp in specs),
        views=views,
        samples_per_step=max(1, o.batch_size // views.per_sample),
        chunk_size=o.chunk_size,
        autocast=o.autocast,
        storage=StoragePlan(o.dtype, o.codec, tuple(o.tables)),
    )
