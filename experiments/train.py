"""Train the teacher and every student of the comparison table, from nothing.

One script, two subcommands::

    python experiments/train.py teacher [--arch resnet56] [common options]
    python experiments/train.py student --method METHOD [common options]
        kd:                --teacher runs/teacher/teacher.pt   (the live teacher, Hinton KD)
        fp-sample/fp-class --fingerprints teacher-cifar100-train.h5   (the teacher is never loaded)
        relational:        --fingerprints FILE   (pairwise-cosine loss; works on a --redact file)
        fp-replay:         --fingerprints FILE built with --replay
        file-kd, fp-kd:    --fingerprints FILE built with --logits mean (or --replay --logits full|topk:K)

Methods (student = resnet20 by default, tapped at ``layer3`` like the fingerprint file):

* ``ce``: cross-entropy only.
* ``kd``: ``ce_weight * CE + kd_weight * KD(T)``, RepDistiller's 0.1 / 0.9 and T = 4, teacher run live.
* ``fp-sample`` / ``fp-class``: ``CE + lambda(epoch) * sum_l w_l * (1 - cos(phi_S, phi_T))`` with
  ``phi_S = normalize(pool(layer(x))) [@ adapter] @ R`` (:class:`fpkit.FingerprintHead`, R from the
  file) and ``phi_T`` the file's per-sample or per-class row; lambda warms up linearly.
* ``relational``: ``CE + lambda(epoch) * sum_l w_l * relational_loss(pool(layer(x)), phi_T)``.
* ``fp-replay``: fp-sample against each recorded view's own fingerprint: the loader shows the
  file's recorded views (``--replay`` builds) instead of fresh random crops.
* ``file-kd``: ``ce_weight * CE + kd_weight * file_kd_loss(z, T)`` with the stored logits ``z`` (the
  kd weights and T options): ``mean`` logits on fresh views, or per-view ``full`` / ``topk:K``
  logits on the replayed views; the teacher is never loaded.
* ``fp-kd``: fp-sample (or fp-replay on a per-view file) plus file-kd's term:
  ``ce_weight * CE + kd_weight * KD(T) + lambda(epoch) * (1 - cos)``.

The fingerprint methods are one :class:`fpkit.FingerprintDistiller` each (``kind="cosine"`` or
``"relational"``); this script adds the recipes, the two data paths, live KD and the logs.

Recipes (``--recipe``): ``seed`` = 200 epochs, SGD lr 0.1, momentum 0.9, milestones 60/120/160,
gamma 0.2, batch 128, weight decay 5e-4, lambda warm-up 40 epochs; ``repdistiller`` = 240
epochs, lr 0.05, milestones 150/180/210, gamma 0.1, batch 64, weight decay 5e-4, warm-up 48
epochs (the same fifth of the run).  ``--epochs E`` shortens a run and scales the milestones and
the warm-up by ``E / recipe epochs``.

Data: ``--loader tensor`` (default) decodes the split once into a uint8 tensor on the device
(:meth:`fpkit.datasets.ImageSource.load_all`) and cuts RandomCrop(padding 4) + flip views on the
device per batch (:mod:`fpkit.augment`, pixel-identical to torchvision); ``--loader torch`` is the
plain DataLoader + torchvision transforms path.  Either way fingerprint targets come only after
the dataset has been checked against the file (:class:`fpkit.FingerprintDataset` raises
MismatchError).

Output: ``--out DIR`` gets ``teacher.pt`` / ``student.pt`` (``{'model': state_dict, 'arch', 'epoch',
'test_top1', ...}``, loadable with ``torch.load(weights_only=True)`` and by
:func:`fpkit.teachers.load_teacher`) and ``log.jsonl`` (or ``--log FILE``): one JSON line per epoch
and a final line ``{"final": true, ...}``, which is also printed on stdout.  Accuracies are in
percent.  ``teacher_forwards`` counts teacher image forwards spent on the student: images x epochs
for kd, the file's N x views-per-sample for the fingerprint methods, 0 for ce.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fpkit.augment import ViewPolicy, make_views
from fpkit.datasets import ImageSource, open_source
from fpkit.devices import resolve_device
from fpkit.distiller import FingerprintDistiller
from fpkit.errors import ConfigError, FpkitError, MismatchError
from fpkit.fingerprint_dataset import FingerprintDataset
from fpkit.format import open_fingerprints
from fpkit.losses import LinearWarmup, TopKTarget, file_kd_loss, kd_loss
from fpkit.models import CIFAR_RESNETS, DEFAULT_LAYER, get_cifar_resnet
from fpkit.teachers import load_teacher

METHODS = ("ce", "kd", "fp-sample", "fp-class", "relational", "fp-replay", "file-kd", "fp-kd")
FP_METHODS = ("fp-sample", "fp-class", "relational", "fp-replay", "fp-kd")  # a fingerprint term
FILE_METHODS = (*FP_METHODS, "file-kd")  # read a fingerprint file (--fingerprints)
KD_METHODS = ("kd", "file-kd", "fp-kd")  # a KD term: kd_ce_weight * CE + kd_weight * KD(T)
REPLAY_ONLY = ("fp-replay",)  # always replays the file's recorded views
EVAL_BATCH = 1000


# --------------------------------------------------------------------------- recipes


@dataclass(frozen=True)
class Recipe:
    """Optimiser and schedule of a training run."""

    epochs: int
    lr: float
    milestones: tuple[int, ...]
    gamma: float
    batch_size: int
    weight_decay: float
    momentum: float
    warmup: int

    def shortened(self, epochs: int | None) -> Recipe:
        """The recipe run for ``epochs`` instead, milestones and warm-up scaled proportionally.

        Scaled milestones stay strictly increasing (a repeated milestone would decay twice) and
        only those inside the run are kept.
        """
        if epochs is None or epochs == self.epochs:
            return self
        if epochs < 1:
            raise ConfigError(f"--epochs must be >= 1, got {epochs}")
        scale = epochs / self.epochs
        milestones: list[int] = []
        for m in self.milestones:
            m = max(round(m * scale), milestones[-1] + 1 if milestones else 1)
            if m < epochs:
                milestones.append(m)
        return replace(self, epochs=epochs, milestones=tuple(milestones), warmup=round(self.warmup * scale))


RECIPES = {
    "seed": Recipe(200, 0.1, (60, 120, 160), 0.2, 128, 5e-4, 0.9, warmup=40),
    "repdistiller": Recipe(240, 0.05, (150, 180, 210), 0.1, 64, 5e-4, 0.9, warmup=48),
}


def make_recipe(args: argparse.Namespace) -> Recipe:
    """The preset named by --recipe with --epochs / --lr / --batch-size / --warmup applied."""
    recipe = RECIPES[args.recipe].shortened(args.epochs)
    if args.lr is not None:
        recipe = replace(recipe, lr=args.lr)
    if args.batch_size is not None:
        if args.batch_size < 1:
            raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
        recipe = replace(recipe, batch_size=args.batch_size)
    if getattr(args, "warmup", None) is not None:
        recipe = replace(recipe, warmup=args.warmup)
    return recipe


# --------------------------------------------------------------------------- setup helpers


def configure_threads(args: argparse.Namespace, device: torch.device) -> None:
    """--threads N wins; on the CPU with DataLoader workers, leave a core per worker."""
    if args.threads:
        torch.set_num_threads(args.threads)
    elif device.type == "cpu" and args.loader == "torch" and args.num_workers > 0:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        torch.set_num_threads(max(1, cores - args.num_workers))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int) -> int:
    """A 63-bit seed for the views of one epoch, independent of the build's view seeds."""
    state = np.random.SeedSequence([seed, epoch, 0x5EED]).generate_state(2, np.uint32)
    return (int(state[0]) << 31 | int(state[1]) >> 1) & (2**63 - 1)


def parse_layer_weights(spec: str | None) -> dict[str, float] | None:
    """'layer3=1.0,layer2=0.2' -> {'layer3': 1.0, 'layer2': 0.2}; None stays None."""
    if spec is None:
        return None
    weights: dict[str, float] = {}
    for item in spec.split(","):
        name, sep, value = item.partition("=")
        try:
            weights[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or not name.strip():
            raise ConfigError(f"--layer-weights must look like layer3=1.0,layer2=0.2; got {spec!r}")
    return weights


def default_layer_weights(layers: list[str]) -> dict[str, float]:
    """The writeup's weights: 1.0 for layer3 (or the file's first layer), 0.2 for any other."""
    main = DEFAULT_LAYER if DEFAULT_LAYER in layers else layers[0]
    return {name: 1.0 if name == main else 0.2 for name in layers}


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# --------------------------------------------------------------------------- data


@dataclass
class Data:
    """The train and test splits of a run and how their pixels are normalised."""

    train: ImageSource
    test: ImageSource
    mean: torch.Tensor
    std: torch.Tensor

    @property
    def num_classes(self) -> int:
        return len(self.train.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.train.image_shape


def open_data(args: argparse.Namespace, device: torch.device) -> Data:
    """Open --data's train and test splits through fpkit.datasets.open_source."""
    kw = dict(download=not args.no_download, normalize=args.normalize)
    train = open_source(args.data, args.root, "train", **kw)
    test = open_source(args.data, args.root, "test", **kw)
    if test.classes != train.classes:
        raise MismatchError(
            f"{args.data}: the test split has classes {test.classes[:5]}... but the train split "
            f"{train.classes[:5]}...; both splits need the same class folders"
        )
    return Data(
        train,
        test,
        torch.tensor(train.mean, dtype=torch.float32, device=device),
        torch.tensor(train.std, dtype=torch.float32, device=device),
    )


def unaugmented(images: torch.Tensor, data: Data) -> torch.Tensor:
    """ToTensor + Normalize of a uint8 batch [B, C, H, W]: the identity view of fpkit.augment.make_views."""
    identity = torch.zeros(images.shape[0], 1, 3, dtype=torch.int16, device=images.device)
    return make_views(images, identity, 0, data.mean, data.std)


def batch_ranges(n: int, batch_size: int) -> list[tuple[int, int]]:
    """[start, end) of each training batch; a last batch of one sample is dropped (BatchNorm and
    the relational loss need two)."""
    ranges = [(s, min(n, s + batch_size)) for s in range(0, n, batch_size)]
    if len(ranges) > 1 and ranges[-1][1] - ranges[-1][0] == 1:
        ranges.pop()
    return ranges


Targets = dict[str, torch.Tensor]


class BatchTargets(NamedTuple):
    """What a batch carries from the file: ``fp`` ``{layer: [B, r]}`` fingerprints (None for
    file-kd) and ``logits`` the stored logit target (a tensor [B, C] or a TopKTarget; None
    without a KD term from the file)."""

    fp: Targets | None
    logits: Any = None


Batch = tuple[torch.Tensor, torch.Tensor, "BatchTargets | None"]


class FileTargets:
    """Teacher targets of a fingerprint file, checked against the training split.

    Construction builds a :class:`FingerprintDataset` over the split (which raises MismatchError
    when the split is not the one the file describes) and keeps the float32 tables the method needs
    on the device: the fingerprint tables of the chosen layers (per sample, per class or per
    recorded view) and, with ``logits``, the stored logits (mean [N, C], full [N, K, C] or top-k
    values and indices [N, K, k]).  ``replay``: the loader shows the file's recorded views (their
    ``view_params``) instead of drawing fresh ones, so per-view targets match the pixels.
    """

    def __init__(
        self,
        path: str,
        source: ImageSource,
        table: str | None,
        layers: list[str] | None,
        device: torch.device,
        *,
        logits: bool = False,
        replay: bool = False,
    ):
        self.path = path
        self.table = table or "sample"
        self.fp = open_fingerprints(path, load_views=True)
        self.layers = (layers or self.fp.layer_names) if table is not None else []
        for name in self.layers:
            self.fp.layer(name)  # ConfigError naming the file's layers
        if logits and self.fp.logits_kind is None:
            raise ConfigError(f"{path} holds no stored logits; rebuild it with `fpkit build --logits mean|full|topk:K`")
        if logits and self.fp.logits_kind == "sample":
            raise ConfigError(f"{path} holds sampled logits (sample:K); this harness trains on mean, full or topk:K")
        self.logit_kind = self.fp.logits_kind if logits else None
        per_view_logits = self.logit_kind in ("full", "topk")
        self.replay = replay or per_view_logits
        if self.replay and self.fp.view_params is None:
            raise ConfigError(f"{path} holds no recorded views; rebuild it with `fpkit build --replay`")
        wants = ("fingerprint", "logits") if self.logit_kind else ("fingerprint",)
        self.dataset = FingerprintDataset(
            self.fp,
            source.torch_dataset(),
            table="sample" if self.replay else self.table,
            layer="all",
            replay=self.replay,
            targets=wants,
        )
        kind = "views" if self.replay else self.table
        self.tables = {name: torch.from_numpy(self.fp.table(kind, name)).to(device) for name in self.layers}
        self.logits: Any = None
        if self.logit_kind in ("mean", "full"):
            self.logits = torch.from_numpy(self.fp.logit_targets()).to(device)
        elif self.logit_kind == "topk":
            values, indices = self.fp.logit_targets()
            self.logits = (torch.from_numpy(values).to(device), torch.from_numpy(indices.astype(np.int64)).to(device))
        self.view_params = torch.from_numpy(self.fp.view_params).to(device) if self.replay else None

    @property
    def views(self) -> int:
        """Recorded views per image (the file's K)."""
        return int(self.fp.metadata.views.per_sample)

    @property
    def padding(self) -> int:
        return int(self.fp.metadata.views.policy["padding"])

    def check_all_pixels(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        """Compare every decoded image and label with the file's (the construction checked a sample):
        a FingerprintDataset over the decoded split, checking all N samples (none for the class table)."""
        decoded = torch.utils.data.TensorDataset(images, labels)
        table = "sample" if self.replay else self.table
        FingerprintDataset(self.fp, decoded, table=table, layer="all", check_samples=len(decoded))

    def gather(self, idx: torch.Tensor, labels: torch.Tensor, view: torch.Tensor | None = None) -> BatchTargets:
        """The batch's targets: rows ``idx`` (or ``labels`` for the class table), view ``view`` when replaying."""
        if self.replay:
            fp = {name: t[idx, view] for name, t in self.tables.items()}
        else:
            rows = idx if self.table == "sample" else labels
            fp = {name: t[rows] for name, t in self.tables.items()}
        z: Any = None
        if self.logit_kind == "mean":
            z = self.logits[idx]
        elif self.logit_kind == "full":
            z = self.logits[idx, view]
        elif self.logit_kind == "topk":
            z = TopKTarget(self.logits[0][idx, view], self.logits[1][idx, view])
        return BatchTargets(fp if self.layers else None, z)

    @property
    def teacher_forwards(self) -> int:
        """Teacher image forwards the file's build spent: N x views per sample."""
        return self.views * self.fp.num_samples

    @property
    def size_bytes(self) -> int:
        return os.path.getsize(self.path)


class TensorLoader:
    """The fast path: the split decoded once to uint8 on the device, views cut there per batch.

    Each epoch draws a shuffled order and one RandomCrop + flip view per image from
    :meth:`fpkit.augment.ViewPolicy.sample_views` with a per-epoch seed, cut by
    :func:`fpkit.augment.make_views` (pixel-identical to torchvision's pipeline).
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        data: Data,
        batch_size: int,
        policy: ViewPolicy,
        seed: int,
        targets: FileTargets | None = None,
    ):
        self.images, self.labels = images, labels
        self.data, self.batch_size, self.policy, self.seed = data, batch_size, policy, seed
        self.targets = targets

    def __len__(self) -> int:
        return len(batch_ranges(len(self.labels), self.batch_size))

    def epoch(self, epoch: int) -> Iterator[Batch]:
        n, dev = len(self.labels), self.images.device
        gen = torch.Generator().manual_seed(epoch_seed(self.seed, epoch) & 0xFFFFFFFF)
        order = torch.randperm(n, generator=gen).to(dev)
        replay = self.targets is not None and self.targets.replay
        if replay:  # one of the file's K recorded views per image, uniformly, seeded per epoch
            view = torch.randint(self.targets.views, (n,), generator=gen).to(dev)
            params = self.targets.view_params[torch.arange(n, device=dev), view].unsqueeze(1)
        else:
            params = torch.from_numpy(self.policy.sample_views(np.arange(n), 1, epoch_seed(self.seed, epoch))).to(dev)
        for s, e in batch_ranges(n, self.batch_size):
            idx = order[s:e]
            x = make_views(self.images[idx], params[idx], self.policy.padding, self.data.mean, self.data.std)
            y = self.labels[idx]
            if self.targets is None:
                yield x, y, None
            else:
                yield x, y, self.targets.gather(idx, y, view[idx] if replay else None)


class TorchLoader:
    """The plain path: torchvision transforms in DataLoader workers.

    With a fingerprint file, the dataset is a :class:`FingerprintDataset` yielding
    ``(image, label, {layer: target})``.
    """

    def __init__(
        self,
        data: Data,
        batch_size: int,
        padding: int,
        seed: int,
        num_workers: int,
        device: torch.device,
        targets: FileTargets | None = None,
    ):
        from torchvision import transforms

        c, h, w = data.image_shape
        tf = transforms.Compose(
            [
                transforms.RandomCrop((h, w), padding=padding),
                transforms.RandomHorizontalFlip(),
                transforms.ToTensor(),
                transforms.Normalize(data.train.mean, data.train.std),
            ]
        )
        if targets is None:
            self.dataset = data.train.torch_dataset(transform=tf)
        else:
            self.dataset = FingerprintDataset(
                targets.fp, data.train.torch_dataset(), table=targets.table, layer="all", transform=tf, check_samples=0
            )
        self.layers = targets.layers if targets is not None else []
        n = len(self.dataset)
        self.loader = torch.utils.data.DataLoader(
            self.dataset,
            batch_size=batch_size,
            shuffle=True,
            num_workers=num_workers,
            drop_last=n > batch_size and n % batch_size == 1,
            pin_memory=device.type == "cuda",
            generator=torch.Generator().manual_seed(seed),
            persistent_workers=num_workers > 0,
        )
        self.device = device

    def __len__(self) -> int:
        return len(self.loader)

    def epoch(self, epoch: int) -> Iterator[Batch]:
        cuda = self.device.type == "cuda"
        for item in self.loader:
            x = item[0].to(self.device, non_blocking=cuda)
            y = torch.as_tensor(item[1]).to(self.device, non_blocking=cuda)
            targets = None
            if len(item) == 3:
                targets = BatchTargets({name: item[2][name].to(self.device, non_blocking=cuda) for name in self.layers})
            yield x, y, targets


def make_train_loader(
    args: argparse.Namespace, data: Data, recipe: Recipe, device: torch.device, targets: FileTargets | None
):
    """TensorLoader (--loader tensor) or TorchLoader (--loader torch)."""
    if targets is not None and targets.replay and targets.padding != args.padding:
        raise MismatchError(
            f"{targets.path} recorded views with padding {targets.padding}, this run uses --padding {args.padding}; "
            f"pass --padding {targets.padding}"
        )
    if args.loader == "torch":
        return TorchLoader(data, recipe.batch_size, args.padding, args.seed, args.num_workers, device, targets)
    images = data.train.load_all(args.num_workers)
    labels = torch.from_numpy(data.train.labels)
    if targets is not None:
        targets.check_all_pixels(images, labels)
    return TensorLoader(
        images.to(device),
        labels.to(device),
        data,
        recipe.batch_size,
        ViewPolicy(args.padding, flip=True),
        args.seed,
        targets,
    )


def make_test_batches(args: argparse.Namespace, data: Data, device: torch.device):
    """A function returning an iterator of normalised, unaugmented test batches (x, y)."""
    if args.loader == "torch":
        from torchvision import transforms

        tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize(data.test.mean, data.test.std)])
        loader = torch.utils.data.DataLoader(
            data.test.torch_dataset(transform=tf), batch_size=EVAL_BATCH, num_workers=args.num_workers
        )
        return lambda: ((x.to(device), torch.as_tensor(y).to(device)) for x, y in loader)
    images = data.test.load_all(args.num_workers).to(device)
    labels = torch.from_numpy(data.test.labels).to(device)
    return lambda: (
        (unaugmented(images[s : s + EVAL_BATCH], data), labels[s : s + EVAL_BATCH])
        for s in range(0, len(labels), EVAL_BATCH)
    )


def _pixel_key(image: torch.Tensor) -> bytes:
    return hashlib.blake2b(image.contiguous().numpy().tobytes(), digest_size=16).digest()


def select_validation(
    val_source: ImageSource, train_images: torch.Tensor, per_class: int, seed: int, chunk: int = 256
) -> np.ndarray:
    """Indices into ``val_source`` of ``per_class`` images of every class, none a training image.

    Disjointness is by pixels: a candidate whose uint8 pixels equal any training image's is never
    taken (so a subset folder of hard links, a copy or the very same split are all handled).  Per
    class, the candidates are visited in the order of ``np.random.default_rng(seed)``'s permutation
    and only those visited are decoded, so the choice depends on the seed and the two splits alone.

    Raises:
        ConfigError: a class has fewer than ``per_class`` images outside the training set.
    """
    if per_class < 1:
        raise ConfigError(f"--val-per-class must be >= 1, got {per_class}")
    train_keys = {_pixel_key(img) for img in train_images}
    rng = np.random.default_rng(seed)
    chosen: list[np.ndarray] = []
    for c in range(len(val_source.classes)):
        order = rng.permutation(np.flatnonzero(val_source.labels == c))
        keep: list[int] = []
        for s in range(0, len(order), chunk):
            idx = order[s : s + chunk]
            for i, img in zip(idx, val_source.get_batch(idx)):
                if _pixel_key(img) not in train_keys:
                    keep.append(int(i))
                    if len(keep) == per_class:
                        break
            if len(keep) == per_class:
                break
        if len(keep) < per_class:
            raise ConfigError(
                f"class {val_source.classes[c]!r} of {val_source.name} ({val_source.split}) has only {len(keep)} "
                f"images outside the training set, {per_class} asked; point --val-data at the full split "
                "(e.g. imagefolder:.data/cifar10-jpeg) or lower --val-per-class"
            )
        chosen.append(np.sort(np.asarray(keep, dtype=np.int64)))
    return np.concatenate(chosen)


@dataclass
class Validation:
    """The validation images of a run (decoded, on the device) and where they came from."""

    images: torch.Tensor
    labels: torch.Tensor
    indices: np.ndarray
    spec: str
    split: str
    seed: int

    def batches(self, data: Data):
        return lambda: (
            (unaugmented(self.images[s : s + EVAL_BATCH], data), self.labels[s : s + EVAL_BATCH])
            for s in range(0, len(self.labels), EVAL_BATCH)
        )

    def summary(self) -> dict[str, Any]:
        digest = hashlib.sha256(self.indices.tobytes()).hexdigest()[:16]
        return {
            "val_data": self.spec,
            "val_split": self.split,
            "val_seed": self.seed,
            "val_images": len(self.indices),
            "val_indices_sha256": digest,
        }


def make_validation(args: argparse.Namespace, data: Data, device: torch.device) -> Validation | None:
    """--val-per-class images per class from --val-data's --val-split, disjoint from the training split."""
    if not args.val_per_class:
        return None
    spec = args.val_data or args.data
    source = open_source(spec, args.root, args.val_split, download=not args.no_download, normalize=args.normalize)
    if source.classes != data.train.classes:
        raise MismatchError(
            f"--val-data {spec} has classes {source.classes[:5]}... but the training split "
            f"{data.train.classes[:5]}...; both need the same class folders"
        )
    if source.image_shape != data.train.image_shape:
        raise MismatchError(
            f"--val-data {spec} has images {source.image_shape}, the training split {data.train.image_shape}"
        )
    idx = select_validation(source, data.train.load_all(args.num_workers), args.val_per_class, args.val_seed)
    images = source.get_batch(idx).to(device)
    labels = torch.from_numpy(source.labels[idx]).to(device)
    return Validation(images, labels, idx, spec, args.val_split, args.val_seed)


# --------------------------------------------------------------------------- objectives


class Objective:
    """A training loss: ``step(model, x, labels, targets, epoch) -> (loss, parts, logits)``.

    ``step`` runs the student's forward pass itself (the fingerprint methods tap it); ``parts`` maps
    names to floats or 0-d tensors, averaged over the epoch for the log.
    """

    teacher_forwards = 0
    schedule: LinearWarmup | None = None  # the fingerprint methods' lambda warm-up

    def parameters(self) -> list[nn.Parameter]:
        """Extra trainable parameters (adapters) to optimise along with the student."""
        return []

    def step(self, model, x, labels, targets, epoch):
        raise NotImplementedError

    def close(self) -> None:
        """Release what the objective holds on the model (the fingerprint methods' tap)."""


class CrossEntropy(Objective):
    """CE only (the teacher, and the ``ce`` student)."""

    def step(self, model, x, labels, targets, epoch):
        logits = model(x)
        ce = F.cross_entropy(logits, labels)
        return ce, {"ce": ce.detach()}, logits


class LiveKD(Objective):
    """Hinton KD against a teacher run live on the same augmented batch."""

    def __init__(self, teacher: nn.Module, T: float, ce_weight: float, kd_weight: float):
        self.teacher, self.T, self.ce_weight, self.kd_weight = teacher, T, ce_weight, kd_weight
        self.teacher_forwards = 0

    def step(self, model, x, labels, targets, epoch):
        logits = model(x)
        with torch.no_grad():
            teacher_logits = self.teacher(x)
        self.teacher_forwards += x.shape[0]
        ce = F.cross_entropy(logits, labels)
        kd = kd_loss(logits, teacher_logits, T=self.T)
        total = self.ce_weight * ce + self.kd_weight * kd
        return total, {"ce": ce.detach(), "kd": kd.detach(), "total": total.detach()}, logits


class FileKD(Objective):
    """KD from the file's stored logits: ``kd_ce_weight * CE + kd_weight * file_kd_loss(z, T)``, the
    same weighting as live KD; the teacher is not loaded (file-kd)."""

    def __init__(self, T: float, ce_weight: float, kd_weight: float, teacher_forwards: int):
        self.T, self.ce_weight, self.kd_weight = T, ce_weight, kd_weight
        self.teacher_forwards = teacher_forwards

    def step(self, model, x, labels, targets, epoch):
        logits = model(x)
        ce = F.cross_entropy(logits, labels)
        kd = file_kd_loss(logits, targets.logits, T=self.T)
        total = self.ce_weight * ce + self.kd_weight * kd
        return total, {"ce": ce.detach(), "kd": kd.detach(), "total": total.detach()}, logits


class Fingerprint(Objective):
    """CE + lambda(epoch) * sum_l w_l * term_l against stored teacher fingerprints: a FingerprintDistiller.

    ``kind="cosine"``: term = 1 - cos(FingerprintHead_l(feats), phi_T) (fp-sample, fp-class,
    fp-replay, fp-kd).  ``kind="relational"``: term = relational_loss(pool(feats), phi_T); needs no R.
    With ``kd`` = (T, ce_weight, kd_weight) (fp-kd) the CE term is reweighted and the stored-logit KD
    term added, as in file-kd: ``ce_weight * CE + kd_weight * KD(T) + lambda * fingerprint term``.
    """

    def __init__(
        self, distiller: FingerprintDistiller, teacher_forwards: int, kd: tuple[float, float, float] | None = None
    ):
        self.distiller = distiller
        self.teacher_forwards = teacher_forwards
        self.kd = kd

    def parameters(self) -> list[nn.Parameter]:
        return list(self.distiller.heads.parameters())

    def step(self, model, x, labels, targets, epoch):
        out = self.distiller.compute(x, labels, targets.fp, epoch=epoch)
        if self.kd is None:
            return out.loss, out.parts, out.logits
        T, ce_weight, kd_weight = self.kd
        ce = F.cross_entropy(out.logits, labels)  # out.loss = CE + lambda * term
        kd = file_kd_loss(out.logits, targets.logits, T=T)
        total = out.loss + (ce_weight - 1.0) * ce + kd_weight * kd
        return total, {**out.parts, "kd": kd.detach(), "total": total.detach()}, out.logits

    def close(self) -> None:
        self.distiller.close()


def load_live_teacher(args: argparse.Namespace, data: Data, device: torch.device) -> nn.Module:
    """The kd teacher, safely loaded (weights only), frozen, in eval mode on the device."""
    teacher = load_teacher(args.teacher, arch=args.teacher_arch, in_channels=data.image_shape[0])
    if teacher.num_classes is not None and teacher.num_classes != data.num_classes:
        raise MismatchError(
            f"teacher {args.teacher} has {teacher.num_classes} outputs but {data.train.name} has "
            f"{data.num_classes} classes; pick the matching teacher or dataset"
        )
    return teacher.model.to(device).eval()


def make_objective(
    args: argparse.Namespace,
    model: nn.Module,
    data: Data,
    recipe: Recipe,
    device: torch.device,
    targets: FileTargets | None,
) -> Objective:
    """The loss of --method (teacher mode: CE)."""
    method = getattr(args, "method", "ce")
    if method == "ce":
        return CrossEntropy()
    if method == "kd":
        return LiveKD(load_live_teacher(args, data, device), args.kd_T, args.kd_ce_weight, args.kd_weight)
    assert targets is not None
    if method == "file-kd":
        return FileKD(args.kd_T, args.kd_ce_weight, args.kd_weight, targets.teacher_forwards)
    weights = dict(args.layer_weights or default_layer_weights(targets.layers))
    kind = "relational" if method == "relational" else "cosine"
    probe = torch.zeros(2, *data.image_shape, device=device)  # widths of the student's tapped layers
    distiller = FingerprintDistiller(
        model,
        targets.dataset,
        lam=LinearWarmup(args.lam, recipe.warmup),
        layer_weights=weights,
        kind=kind,
        example_input=probe,
    )
    kd = (args.kd_T, args.kd_ce_weight, args.kd_weight) if method == "fp-kd" else None
    objective = Fingerprint(distiller, targets.teacher_forwards, kd)
    objective.schedule = distiller.loss.schedule
    return objective


# --------------------------------------------------------------------------- training


def train_epoch(model, objective, loader, optimizer, epoch: int) -> dict[str, Any]:
    """One pass over the training batches; returns the loss, its parts and top-1 (percent)."""
    model.train()
    sums: dict[str, Any] = {}
    loss_sum, correct, seen = 0.0, 0, 0
    for x, y, targets in loader.epoch(epoch):
        loss, parts, logits = objective.step(model, x, y, targets, epoch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        b = y.shape[0]
        loss_sum = loss_sum + loss.detach() * b
        correct = correct + (logits.detach().argmax(1) == y).sum()
        seen += b
        for k, v in parts.items():
            sums[k] = sums.get(k, 0.0) + v * b
    if seen == 0:
        raise ConfigError("the training split gave no batch; use a larger dataset or a smaller --batch-size")
    return {
        "train_loss": float(loss_sum) / seen,
        "parts": {k: float(v) / seen for k, v in sums.items()},
        "train_top1": 100.0 * float(correct) / seen,
    }


@torch.no_grad()
def evaluate(model: nn.Module, test_batches) -> float:
    """Top-1 accuracy (percent) on the unaugmented test split."""
    model.eval()
    correct, seen = 0, 0
    for x, y in test_batches():
        correct = correct + (model(x).argmax(1) == y).sum()
        seen += y.shape[0]
    return 100.0 * float(correct) / max(1, seen)


def save_checkpoint(path: Path, model: nn.Module, info: Mapping[str, Any]) -> None:
    """RepDistiller-style {'model': state_dict, ...}, plain types only (weights_only loadable),
    written to a temporary name and renamed into place."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"model": state, **info}, tmp)
    os.replace(tmp, path)


class JsonLog:
    """JSON lines to a file (truncated at start), flushed after every line."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.fh = open(path, "w", encoding="utf-8")

    def write(self, record: Mapping[str, Any]) -> str:
        line = json.dumps(record, sort_keys=False)
        self.fh.write(line + "\n")
        self.fh.flush()
        return line

    def close(self) -> None:
        self.fh.close()


def default_out(args: argparse.Namespace) -> Path:
    if args.mode == "teacher":
        return Path("runs") / f"teacher-{args.arch}-s{args.seed}"
    return Path("runs") / f"{args.method}-{args.arch}-s{args.seed}"


def fit(args: argparse.Namespace) -> dict[str, Any]:
    """Run teacher or student training as ``args`` says; return the final log record."""
    t0 = time.perf_counter()
    device = resolve_device(args.device)
    configure_threads(args, device)
    seed_everything(args.seed)
    recipe = make_recipe(args)
    method = "teacher" if args.mode == "teacher" else args.method
    out = Path(args.out) if args.out else default_out(args)
    out.mkdir(parents=True, exist_ok=True)
    say = (lambda msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))

    data = open_data(args, device)
    targets = None
    if method in FILE_METHODS:
        table = {"fp-class": "class", "relational": args.table, "file-kd": None}.get(method, "sample")
        layers = list(args.layer_weights) if args.layer_weights else None
        targets = FileTargets(
            args.fingerprints,
            data.train,
            table,
            layers,
            device,
            logits=method in ("file-kd", "fp-kd"),
            replay=method in REPLAY_ONLY,
        )
        warn_normalization(targets, data, say)

    c, _, _ = data.image_shape
    model = get_cifar_resnet(args.arch, data.num_classes, in_channels=c).to(device)
    objective = make_objective(args, model, data, recipe, device, targets)
    train_loader = make_train_loader(args, data, recipe, device, targets)
    test_batches = make_test_batches(args, data, device)
    optimizer = torch.optim.SGD(
        list(model.parameters()) + objective.parameters(),
        lr=recipe.lr,
        momentum=recipe.momentum,
        weight_decay=recipe.weight_decay,
    )
    validation = make_validation(args, data, device)
    log = JsonLog(Path(args.log) if args.log else out / "log.jsonl")
    say(
        f"[train] {method}: {args.arch} ({count_params(model):,} parameters) on {data.train.name}, "
        f"{len(data.train)} train / {len(data.test)} test images, {recipe.epochs} epochs, recipe {args.recipe}, "
        f"{device}, loader {args.loader}"
        + (f", {len(validation.indices)} validation images from {validation.spec}" if validation else "")
    )

    best = test_top1 = 0.0
    val_top1 = best_val = best_val_epoch = None
    try:
        epoch = 0
        while epoch < recipe.epochs:
            t_epoch = time.perf_counter()
            lr = recipe.lr * recipe.gamma ** sum(m <= epoch for m in recipe.milestones)  # MultiStepLR
            for group in optimizer.param_groups:
                group["lr"] = lr
            stats = train_epoch(model, objective, train_loader, optimizer, epoch)
            record = {"epoch": epoch + 1, "lr": lr, **stats}
            if validation is not None:
                val_top1 = evaluate(model, validation.batches(data))
                if best_val is None or val_top1 > best_val:
                    best_val, best_val_epoch = val_top1, epoch + 1
                record["val_top1"] = val_top1
            else:
                test_top1 = evaluate(model, test_batches)
                best = max(best, test_top1)
                record["test_top1"] = test_top1
            record["seconds"] = round(time.perf_counter() - t_epoch, 3)
            if epoch == 0 and args.time_budget:
                recipe = budget_recipe(args, recipe, time.perf_counter() - t0, record["seconds"], objective)
                record["budget_epochs"] = recipe.epochs
            log.write(record)
            shown = f"val {val_top1:.2f}" if validation is not None else f"test {test_top1:.2f}"
            say(
                f"[train] epoch {epoch + 1}/{recipe.epochs} lr {lr:.4g} loss {stats['train_loss']:.4f} "
                f"train {stats['train_top1']:.2f} {shown} ({record['seconds']:.1f} s)"
            )
            epoch += 1
        if validation is not None:  # the test split, looked at once, at the end
            test_top1 = best = evaluate(model, test_batches)
        name = "teacher.pt" if args.mode == "teacher" else "student.pt"
        save_checkpoint(
            out / name,
            model,
            {
                "arch": args.arch,
                "num_classes": data.num_classes,
                "epoch": recipe.epochs,
                "test_top1": test_top1,
                "best_top1": best,
                "method": method,
                "dataset": data.train.name,
                "recipe": args.recipe,
                "seed": args.seed,
            },
        )
        final = {
            "final": True,
            "method": method,
            "test_top1": test_top1,
            "best_top1": best,
            "teacher_forwards": objective.teacher_forwards,
            "fingerprint_bytes": targets.size_bytes if targets is not None else 0,
            **(
                {
                    "val_top1": val_top1,
                    "best_val_top1": best_val,
                    "best_val_epoch": best_val_epoch,
                    **validation.summary(),
                }
                if validation is not None
                else {}
            ),
            "hparams": hparams(args),
            "wall_seconds": round(time.perf_counter() - t0, 3),
            "epochs": recipe.epochs,
            "recipe": args.recipe,
            "seed": args.seed,
            "arch": args.arch,
            "data": args.data,
            "checkpoint": str(out / name),
        }
        print(log.write(final), flush=True)
        return final
    finally:
        log.close()
        objective.close()


def hparams(args: argparse.Namespace) -> dict[str, Any]:
    """The method's own settings, for selection by validation accuracy (collect_results.py)."""
    method = getattr(args, "method", "teacher")
    out: dict[str, Any] = {}
    if method in KD_METHODS:
        out.update(kd_T=args.kd_T, kd_weight=args.kd_weight, kd_ce_weight=args.kd_ce_weight)
    if method in FP_METHODS:
        out.update({"lambda": args.lam, "warmup": args.warmup})
    return out


def budget_recipe(args: argparse.Namespace, recipe: Recipe, elapsed: float, first_epoch: float, objective) -> Recipe:
    """--time-budget: the epochs that fit, from the measured first epoch (at most the recipe's).

    The first epoch ran at the recipe's initial learning rate, which every shortened recipe shares;
    milestones and the lambda warm-up are rescaled to the new length (an explicit --warmup stays).
    """
    left = args.time_budget - elapsed - first_epoch  # one epoch's margin for the final test pass
    epochs = max(1, min(recipe.epochs, 1 + int(left // max(first_epoch, 1e-6))))
    new = argparse.Namespace(**{**vars(args), "epochs": epochs})
    fitted = make_recipe(new)
    if objective.schedule is not None:
        objective.schedule.warmup_epochs = fitted.warmup
    return fitted


def warn_normalization(targets: FileTargets, data: Data, say) -> None:
    """The student may normalise differently from the teacher's build, but it is usually a slip."""
    built = targets.fp.metadata.dataset.normalize
    if tuple(built.mean) != tuple(data.train.mean) or tuple(built.std) != tuple(data.train.std):
        say(
            f"[train] warning: {targets.path} was built with normalisation mean {list(built.mean)} std "
            f"{list(built.std)}, this run uses {list(data.train.mean)} {list(data.train.std)}; "
            "pass the same --normalize as the build"
        )


# --------------------------------------------------------------------------- command line


def _common_options() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("data")
    g.add_argument(
        "--data",
        default="cifar100",
        metavar="SPEC",
        help="cifar10, cifar100, fashionmnist, imagefolder:PATH or synthetic[:NxC] (default: cifar100)",
    )
    g.add_argument("--root", default="data", metavar="DIR", help="folder holding torchvision datasets (default: data)")
    g.add_argument(
        "--normalize",
        default=None,
        metavar="SPEC",
        help="cifar10, cifar100, fashionmnist, imagenet, none or m1,m2,m3:s1,s2,s3 "
        "(default: the dataset's own; imagenet for image folders)",
    )
    g.add_argument("--no-download", action="store_true", help="never try to download a missing dataset")
    g.add_argument(
        "--loader",
        choices=("tensor", "torch"),
        default="tensor",
        help="tensor: decode once, keep uint8 on the device, augment there (default); "
        "torch: DataLoader + torchvision transforms",
    )
    g.add_argument(
        "--num-workers", type=int, default=0, metavar="N", help="DataLoader workers (decoding / augmentation)"
    )
    g.add_argument(
        "--padding", type=int, default=4, metavar="PX", help="RandomCrop zero padding in pixels (default: 4)"
    )
    g = p.add_argument_group("optimisation")
    g.add_argument("--recipe", choices=sorted(RECIPES), default="seed", help="preset (default: seed)")
    g.add_argument(
        "--epochs", type=int, default=None, metavar="E", help="shorten the run; milestones and warm-up scale along"
    )
    g.add_argument("--lr", type=float, default=None, metavar="LR", help="override the recipe's learning rate")
    g.add_argument("--batch-size", type=int, default=None, metavar="B", help="override the recipe's batch size")
    g = p.add_argument_group("run")
    g.add_argument("--device", default="auto", metavar="DEV", help="cpu, cuda, cuda:N or auto (default)")
    g.add_argument("--threads", type=int, default=0, metavar="N", help="torch CPU threads (default: torch's choice)")
    g.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (default: 0)")
    g.add_argument(
        "--out",
        default=None,
        metavar="DIR",
        help="output folder for the checkpoint and log.jsonl (default: runs/<method>-<arch>-s<seed>)",
    )
    g.add_argument("--log", default=None, metavar="FILE", help="JSON-lines log file (default: OUT/log.jsonl)")
    g.add_argument(
        "--time-budget",
        type=float,
        default=None,
        metavar="S",
        help="seconds for the whole run: the number of epochs (at most --epochs / the recipe's) is derived "
        "from the measured first epoch; milestones and warm-up scale along",
    )
    g = p.add_argument_group("validation")
    g.add_argument(
        "--val-per-class",
        type=int,
        default=0,
        metavar="N",
        help="evaluate every epoch on N images per class of --val-data, none of them a training image "
        "(compared by pixels); the test split is then evaluated once, at the end (default: 0 = no validation)",
    )
    g.add_argument(
        "--val-data", default=None, metavar="SPEC", help="where validation images come from (default: --data)"
    )
    g.add_argument("--val-split", default="train", help="split of --val-data (default: train)")
    g.add_argument("--val-seed", type=int, default=0, metavar="S", help="seed of the validation draw (default: 0)")
    g.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    return p


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser: subcommands ``teacher`` and ``student``."""
    parser = argparse.ArgumentParser(
        prog="train.py",
        description="Train the teacher or a student of fpkit's comparison table.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="mode", required=True, metavar="{teacher,student}")
    common = _common_options()
    archs = ", ".join(CIFAR_RESNETS)
    t = sub.add_parser("teacher", parents=[common], help="train a CIFAR ResNet teacher with cross-entropy")
    t.add_argument(
        "--arch",
        choices=list(CIFAR_RESNETS),
        default="resnet56",
        metavar="ARCH",
        help=f"teacher architecture (default: resnet56; one of {archs})",
    )
    s = sub.add_parser("student", parents=[common], help="train a student with one distillation method")
    s.add_argument("--method", choices=METHODS, required=True, help=", ".join(METHODS))
    s.add_argument(
        "--arch",
        choices=list(CIFAR_RESNETS),
        default="resnet20",
        metavar="ARCH",
        help=f"student architecture (default: resnet20; one of {archs})",
    )
    g = s.add_argument_group("kd (live kd, and the stored-logit KD of file-kd and fp-kd)")
    g.add_argument("--teacher", default=None, metavar="PATH", help="teacher checkpoint (kd only)")
    g.add_argument(
        "--teacher-arch", default=None, metavar="ARCH", help="teacher architecture if the checkpoint does not say"
    )
    g.add_argument("--kd-T", dest="kd_T", type=float, default=4.0, metavar="T", help="KD temperature (default: 4)")
    g.add_argument("--kd-ce-weight", type=float, default=0.1, metavar="W", help="weight of CE in kd (default: 0.1)")
    g.add_argument("--kd-weight", type=float, default=0.9, metavar="W", help="weight of the KD term (default: 0.9)")
    g = s.add_argument_group("fingerprints")
    g.add_argument(
        "--fingerprints",
        default=None,
        metavar="FILE",
        help="fingerprint file (every method but ce and kd; file-kd and fp-kd need one built with --logits)",
    )
    g.add_argument(
        "--lambda", dest="lam", type=float, default=0.1, metavar="L", help="final distillation weight (default: 0.1)"
    )
    g.add_argument(
        "--warmup",
        type=int,
        default=None,
        metavar="E",
        help="lambda warm-up epochs (default: the recipe's, scaled with --epochs)",
    )
    g.add_argument(
        "--layer-weights",
        type=str,
        default=None,
        metavar="SPEC",
        help="e.g. layer3=1.0,layer2=0.2 (default: every layer of the file; 1.0 for layer3, 0.2 others)",
    )
    g.add_argument(
        "--table",
        choices=("sample", "class"),
        default="sample",
        help="fingerprint table of the relational method (default: sample)",
    )
    parser.subcommands = {"teacher": t, "student": s}
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse and cross-check the options (argparse errors exit with status 2)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    sub = parser.subcommands[args.mode]
    if args.mode == "student":
        if args.method == "kd" and not args.teacher:
            sub.error("--method kd needs --teacher PATH (the live teacher's checkpoint)")
        if args.method in FILE_METHODS and not args.fingerprints:
            sub.error(f"--method {args.method} needs --fingerprints FILE (build one with `fpkit build`)")
        if args.method not in FILE_METHODS and args.fingerprints:
            sub.error(f"--fingerprints is for {', '.join(FILE_METHODS)}, not {args.method}")
        if args.method in ("fp-replay", "file-kd", "fp-kd") and args.loader == "torch":
            sub.error(f"--method {args.method} runs with --loader tensor only")
        if args.method != "kd" and args.teacher:
            sub.error(f"--teacher is for --method kd only; {args.method} never loads the teacher")
        try:
            args.layer_weights = parse_layer_weights(args.layer_weights)
        except ConfigError as e:
            sub.error(str(e))
    if args.num_workers < 0 or args.threads < 0 or args.padding < 0 or args.val_per_class < 0:
        sub.error("--num-workers, --threads, --padding and --val-per-class must be >= 0")
    if args.time_budget is not None and args.time_budget <= 0:
        sub.error("--time-budget must be > 0")
    return args


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point: 0 on success, 1 on an fpkit error, 2 on a usage error."""
    args = parse_args(argv)
    try:
        fit(args)
    except FpkitError as e:
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
