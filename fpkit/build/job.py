"""From options to work: the plan of a build (probing the teacher once) and the job one rank runs.

:func:`make_plan` decides everything that fixes the file's content; :class:`BuildJob` holds what
a rank computes with (the source, the loaded and tapped teacher, the device, the normalisation,
the projections and the work store).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import numpy as np
import torch

from .. import features as _features
from ..augment import ViewPolicy
from ..datasets import ImageSource
from ..format import LayerSpec
from ..format.digests import labels_sha256
from ..projection import make_projection
from ..teachers import Teacher
from ..views import CenterPolicy, cut_views, views_for
from .dist import Dist
from .options import BuildOptions, view_policy
from .plan import BuildPlan, LayerPlan, StoragePlan, ViewPlan
from .subset import subset_of
from .workstore import WorkStore


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
    policy = view_policy(o)
    seed = 0 if o.view_seed is None else o.view_seed
    if isinstance(policy, ViewPolicy):
        k = policy.num_views if o.views == "all" else int(o.views)
        return ViewPlan(o.views, k, seed, o.padding, o.flip, o.replay)
    count = 1 if isinstance(policy, CenterPolicy) else int(o.views)  # center: one view, --views ignored
    return ViewPlan(count, count, seed, o.padding, policy.flip, o.replay, other=policy.to_dict())


def projection_seed(o: BuildOptions, earlier: BuildPlan | None, dist: Dist) -> int:
    """--seed if given; else 0, or, with --redact, a secret random seed (so that R cannot be
    recovered by trying small seeds against the SHA-256 of R the file keeps).  A resumed redacted
    build reuses its own secret seed (``earlier``: the interrupted build's plan, when resuming);
    ranks of one build share rank 0's."""
    if o.seed is not None:
        return o.seed
    if not o.redact:
        return 0
    seed = None
    if dist.rank == 0:
        seed = earlier.layers[0].seed if earlier is not None and earlier.layers else secrets.randbits(62)
    return int(dist.share(seed))


def probe_layers(
    o: BuildOptions, base_seed: int, source: ImageSource, tap: _features.LayerTap, device: torch.device
) -> list[LayerSpec]:
    """Run the teacher on one view to learn each tapped layer's rank and width; make the projections
    (layer i uses seed ``base_seed + i``)."""
    mean = torch.tensor(source.mean, dtype=torch.float32, device=device)
    std = torch.tensor(source.std, dtype=torch.float32, device=device)
    policy = view_policy(o)
    images = [im.to(device) for im in source.get_images([0])]
    params = torch.from_numpy(views_for(policy, np.array([0]), 1, 0, images)).to(device)
    x = cut_views(policy, images, params, mean, std)
    with torch.no_grad():
        _, feats = tap(x)
    specs = []
    for i, name in enumerate(tap.layers):
        pooling = _features.layer_pooling(tap.model, name, feats[name].ndim, o.pooling)
        d = int(_features.pool_features(feats[name], pooling).shape[1])
        seed = base_seed + i
        specs.append(LayerSpec(name, pooling, d, make_projection(d, o.r, seed), seed, redacted=o.redact))
    return specs


DEFAULT_MAX_CHUNK = 1024


def auto_chunk_size(num_samples: int) -> int:
    """The default samples per chunk: ``min(1024, ceil(N / 8))``, so that every build has at
    least 8 chunks (an interrupted one keeps all but the last eighth of its work, small datasets
    included) and a large one keeps chunks of 1,024 (a few seconds of work on a GPU)."""
    return max(1, min(DEFAULT_MAX_CHUNK, -(-num_samples // 8)))


def chunk_size(o: BuildOptions, num_samples: int, earlier: BuildPlan | None = None) -> int:
    """--chunk-size if given; else, when resuming an interrupted build (``earlier``: its plan) of
    the same number of samples, the chunk size it started with (so that builds begun by another
    fpkit version resume); else :func:`auto_chunk_size`."""
    if o.chunk_size is not None:
        return o.chunk_size
    if earlier is not None and earlier.num_samples == num_samples:
        return earlier.chunk_size
    return auto_chunk_size(num_samples)


DEFAULT_BATCH_SIZE = {"cpu": 64, "cuda": 512}
"""Views per teacher forward when --batch-size is not given, by device type.  CPU: measured with
``python -m bench.build --build-sweep`` (bench/README.md), small batches are faster there; CUDA:
512, not measured by that benchmark."""


def default_batch_size(device: torch.device | str) -> int:
    """The views per forward a build uses on ``device`` when --batch-size is not given."""
    return DEFAULT_BATCH_SIZE.get(torch.device(device).type, DEFAULT_BATCH_SIZE["cpu"])


def samples_per_step(o: BuildOptions, k: int, device: torch.device | str, earlier: BuildPlan | None = None) -> int:
    """Samples (each with ``k`` views) per teacher forward: ``--batch-size // k`` if given; else,
    when resuming an interrupted build (``earlier``: its plan) with the same K, the step it started
    with (so that a build begun on another device or fpkit version resumes); else
    :func:`default_batch_size` of ``device`` // k.  Deterministic, so torchrun ranks agree."""
    if o.batch_size is not None:
        return max(1, o.batch_size // k)
    if earlier is not None and earlier.views.per_sample == k:
        return earlier.samples_per_step
    return max(1, default_batch_size(device) // k)


def wide_projection_warnings(plan: BuildPlan, num_classes: int) -> list[str]:
    """Warnings for layers whose r is far larger than d, with the bytes each will take."""
    from ..diagnose import layer_bytes, wide_projection_warning

    st, v = plan.storage, plan.views
    kinds = list(st.tables) + (["views"] if v.replay else [])
    out = []
    for lay in plan.layers:
        nbytes = layer_bytes(
            lay.d, lay.r, True, kinds, plan.num_samples, num_classes, v.per_sample if v.replay else None, st.dtype
        )
        w = wide_projection_warning(lay.name, lay.d, lay.r, nbytes)
        if w:
            out.append(w)
    return out


def make_plan(
    o: BuildOptions,
    source: ImageSource,
    teacher: Teacher,
    specs: list[LayerSpec],
    earlier: BuildPlan | None = None,
    device: torch.device | str = "cpu",
) -> BuildPlan:
    """Everything that decides the file's content; a resume must match it (``earlier``: the plan
    of the interrupted build being resumed, for its chunk size and batch, see :func:`chunk_size`
    and :func:`samples_per_step`; ``device``: where the teacher runs, for the default batch)."""
    views = view_plan(o)
    return BuildPlan(
        teacher_sha256=teacher.weights_sha256,
        dataset=source.identity(),
        num_samples=len(source),
        labels_sha256=labels_sha256(np.asarray(source.labels)),
        layers=tuple(LayerPlan(sp.name, sp.pooling, sp.d, sp.r, sp.seed) for sp in specs),
        views=views,
        samples_per_step=samples_per_step(o, views.per_sample, device, earlier),
        chunk_size=chunk_size(o, len(source), earlier),
        autocast=o.autocast,
        storage=StoragePlan(o.dtype, o.codec, tuple(o.tables)),
        subset=subset_of(source),
        logits=None if o.logits.strip() == "none" else o.logits.strip(),
        num_classes=None if o.logits.strip() == "none" else len(source.classes),
    )
