"""The build plan: everything that decides a fingerprint file's content, decided before any work.

A :class:`BuildPlan` is frozen and JSON-serialisable.  It is written to the work folder when a
build starts; ``--resume`` continues only a build whose plan is the same, and
:meth:`BuildPlan.changes_from` says in option names what differs.  Chunks, the unit of work that
is kept across interruptions and shared among ``torchrun`` ranks, are defined here too.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from ..augment import ViewPolicy
from ..views import Policy, policy_from_dict


@dataclass(frozen=True)
class LayerPlan:
    """One tapped layer: module name, pooling, feature width d, projection width r and seed."""

    name: str
    pooling: str
    d: int
    r: int
    seed: int

    def describe(self) -> str:
        return f"{self.name} ({self.pooling}, d={self.d}, r={self.r}, seed {self.seed})"


@dataclass(frozen=True)
class ViewPlan:
    """The views: ``count`` as asked (K or "all"), ``per_sample`` K, the sampler's seed, the
    pad-crop-flip policy's padding and flip, and whether per-view tables are kept (replay).
    ``other`` is the ``views.policy`` object of a resized_crop_flip or center policy (format
    1.2), None for pad_crop_flip (so plans written before those policies load unchanged)."""

    count: int | str
    per_sample: int
    seed: int
    padding: int
    flip: bool
    replay: bool
    other: dict[str, Any] | None = None

    @property
    def policy(self) -> Policy:
        return ViewPolicy(self.padding, self.flip) if self.other is None else policy_from_dict(self.other)


@dataclass(frozen=True)
class StoragePlan:
    """How the tables are stored: dtype, codec and which tables.  Applied when the file is
    written from the float32 work folder, so a resumed build may change them."""

    dtype: str
    codec: str
    tables: tuple[str, ...]


@dataclass(frozen=True)
class BuildPlan:
    """What a build computes and writes.

    ``dataset`` is the source's identity (name, split, image shape, normalisation);
    ``samples_per_step`` samples (each with K views) go through the teacher per forward;
    ``chunk_size`` samples make one chunk.  ``subset`` is the part of the split the build runs
    over (``{start, stop, source_num_samples}`` from --samples/--limit), None for the whole split;
    ``num_samples`` and ``labels_sha256`` are then those of the part.
    """

    teacher_sha256: str
    dataset: dict[str, Any]
    num_samples: int
    labels_sha256: str
    layers: tuple[LayerPlan, ...]
    views: ViewPlan
    samples_per_step: int
    chunk_size: int
    autocast: str | None
    storage: StoragePlan
    subset: dict[str, int] | None = None
    logits: str | None = None  # --logits (format 1.3): mean, full, topk:K or sample:K[:T]; None: none
    num_classes: int | None = None  # C, the width of the logits (recorded with --logits only)

    @property
    def logits_shape(self) -> tuple[int, ...] | None:
        """The work folder's float32 logits: [N, C] for mean, [N, K, C] per view; None without."""
        if self.logits is None:
            return None
        n, c = self.num_samples, int(self.num_classes or 0)
        return (n, c) if self.logits.split(":")[0] == "mean" else (n, self.views.per_sample, c)

    # ------------------------------------------------------------------ chunks
    @property
    def num_chunks(self) -> int:
        return (self.num_samples + self.chunk_size - 1) // self.chunk_size

    def chunk_range(self, c: int) -> range:
        """The sample indices of chunk ``c``."""
        return range(c * self.chunk_size, min(self.num_samples, (c + 1) * self.chunk_size))

    def chunks_for_rank(self, rank: int, world: int) -> list[int]:
        """The chunks one of ``world`` processes computes: ``c % world == rank``."""
        return [c for c in range(self.num_chunks) if c % world == rank]

    # ------------------------------------------------------------------ JSON
    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["layers"] = [asdict(lay) for lay in self.layers]
        d["storage"]["tables"] = list(self.storage.tables)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> BuildPlan:
        """The plan ``to_json`` wrote.  Raises KeyError/TypeError on anything else."""
        st = d["storage"]
        return cls(
            teacher_sha256=d["teacher_sha256"],
            dataset=d["dataset"],
            num_samples=d["num_samples"],
            labels_sha256=d["labels_sha256"],
            layers=tuple(LayerPlan(**lay) for lay in d["layers"]),
            views=ViewPlan(**d["views"]),
            samples_per_step=d["samples_per_step"],
            chunk_size=d["chunk_size"],
            autocast=d["autocast"],
            storage=StoragePlan(st["dtype"], st["codec"], tuple(st["tables"])),
            subset=d.get("subset"),  # absent in plans of builds begun before --samples existed
            logits=d.get("logits"),  # absent in plans of builds begun before --logits existed
            num_classes=d.get("num_classes"),
        )

    # ------------------------------------------------------------------ resume
    def same_work(self, other: BuildPlan) -> bool:
        """True if ``other``'s finished chunks are valid for this plan (storage may differ)."""
        return self.changes_from(other) == []

    def changes_from(self, old: BuildPlan) -> list[str]:
        """What differs between an earlier plan ``old`` and this one, in CLI option names
        (storage options are not compared: they apply when the file is written)."""
        out: list[str] = []

        def was(what: str, a: Any, b: Any) -> None:
            if a != b:
                out.append(f"{what} was {a}, now {b}")

        if old.teacher_sha256 != self.teacher_sha256:
            out.append("the teacher's weights differ (another TEACHER file)")
        od, nd = old.dataset, self.dataset
        for key, what in (("name", "DATASET"), ("split", "--split"), ("normalize", "--normalize")):
            was(what, od.get(key), nd.get(key))
        rng = lambda p: "the whole split" if p.subset is None else f"samples {p.subset['start']}:{p.subset['stop']}"  # noqa: E731
        was("--samples/--limit", rng(old), rng(self))
        if od.get("name") == nd.get("name") and old.subset == self.subset:
            was("the number of samples", old.num_samples, self.num_samples)
            if old.num_samples == self.num_samples and old.labels_sha256 != self.labels_sha256:
                out.append("the dataset's labels differ")
        if od != nd and not out:
            out.append("the dataset differs (image shape)")
        if old.layers != self.layers:
            fmt = lambda ls: ", ".join(lay.describe() for lay in ls)  # noqa: E731
            out.append(f"--layer/--r/--seed/--pooling: the layers were {fmt(old.layers)}, now {fmt(self.layers)}")
        ov, nv = old.views, self.views
        was("--views", ov.count, nv.count)
        was("--view-seed", ov.seed, nv.seed)
        if ov.other is not None or nv.other is not None:
            was("--policy/--image-size/--scale/--ratio/--resize", ov.policy.to_dict(), nv.policy.to_dict())
        was("--padding", ov.padding, nv.padding)
        was("flips (--no-flip)", ov.flip, nv.flip)
        was("--replay", ov.replay, nv.replay)
        if ov.per_sample == nv.per_sample:  # with other views, the samples per step change too: not a separate cause
            was("samples per teacher step (--batch-size // views)", old.samples_per_step, self.samples_per_step)
        was("--chunk-size", old.chunk_size, self.chunk_size)
        was("--autocast", old.autocast, self.autocast)
        was("--logits", old.logits or "none", self.logits or "none")
        return out
