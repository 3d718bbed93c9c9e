"""FingerprintDataset: pair a plain image dataset with the fingerprints a file stores for it.

The wrapped dataset must yield ``(image, label)`` in the order the file was built from (for
fpkit's own sources, :meth:`fpkit.datasets.ImageSource.torch_dataset` gives exactly that), without
transforms of its own; ``transform`` is applied here.  A file built from part of a split
(``fpkit build --samples A:B`` or ``--limit N``; ``dataset.subset`` in the file) accepts either the
whole split, of which item i is then sample ``A + i``, or the samples already cut out (exactly
the file's N).  Construction checks that the dataset is
the one the file describes and raises :class:`~fpkit.errors.MismatchError` saying what differs.

The object holds the tables as numpy arrays and no HDF5 handle, so DataLoader workers (fork or
spawn) can use it directly.  The file is read and verified once, here; its arrays then move to
shared memory (:mod:`fpkit.shared_tables`), so 8 workers map one copy of the tables instead of
unpickling 8 (spawn, forkserver).
"""

from __future__ import annotations

import os
from typing import Any, Callable

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image

from .errors import ConfigError, MismatchError
from .format import FingerprintFile, open_fingerprints
from .format.digests import labels_sha256, sample_digest
from .shared_tables import share_file
from .views import Policy, ViewPolicy, policy_from_dict, replay_tensor


class FingerprintDataset(torch.utils.data.Dataset):
    """``(image, label, target)`` for student training, target = the teacher's fingerprint.

    Args:
        fp: a fingerprint file path or an opened :class:`FingerprintFile`.
        dataset: map-style dataset yielding ``(image, label)`` in file order, no transform: the
            file's N samples, or, for a file built from samples A:B of a split, the whole split
            (item i is then ``dataset[A + i]``).
        table: "sample" (per-sample fingerprint), "class" (the fingerprint of the label's class),
            or "index" (the target is the sample index, for gathering from a table kept on the
            GPU: see :meth:`target_table`).
        layer: a layer name, None for the file's first layer, or "all" for a dict
            ``{layer: tensor [r]}``.
        transform: applied to the image (after the replayed crop/flip in replay mode).
        replay: pick one recorded view per item (uniformly, from torch's RNG), cut exactly that
            crop and flip from the image, and return that view's own fingerprint.  Needs a file
            built with ``--replay``; ``transform`` should then hold no random crop or flip.
        check_samples: how many samples (evenly spaced) to compare pixel by pixel against the
            file's per-sample digests; 0 skips the check.
        targets: ``("fingerprint",)`` (default: items are ``(image, label, fingerprint)``),
            ``("logits",)`` (``(image, label, logits)``) or ``("fingerprint", "logits")``
            (``(image, label, fingerprint, logits)``), for a file with a logit table (format 1.3,
            ``fpkit build --logits``).  The logit target is a float32 tensor [C] (``mean``: the
            sample's, whatever view is shown; ``full``: the replayed view's), a
            :class:`~fpkit.losses.TopKTarget` or a :class:`~fpkit.losses.SampledTarget` of the
            replayed view (per-view kinds need ``replay=True``); give it to
            :func:`fpkit.losses.file_kd_loss`.

    Raises:
        MismatchError: the dataset is not the one the file describes (the message says how).
        ConfigError: the file lacks the table asked for, or the options contradict each other.
    """

    def __init__(
        self,
        fp: str | os.PathLike | FingerprintFile,
        dataset: Any,
        *,
        table: str = "sample",
        layer: str | None = None,
        transform: Callable | None = None,
        replay: bool = False,
        check_samples: int = 16,
        targets: tuple[str, ...] = ("fingerprint",),
    ):
        self.fp = fp if isinstance(fp, FingerprintFile) else open_fingerprints(fp, load_views=replay)
        self.dataset = dataset
        self.offset = 0 if table == "class" else _offset(self.fp, len(dataset))  # class rows: any dataset
        self.transform = transform
        self.replay = replay
        if table not in ("sample", "class", "index"):
            raise ConfigError(f"table must be 'sample', 'class' or 'index', got {table!r}")
        self.table_kind = table
        self.layers = self.fp.layer_names if layer == "all" else [self.fp.layer(layer).name]
        self.all_layers = layer == "all"
        if replay:
            if self.fp.view_params is None:
                raise ConfigError(f"{self.fp.path} holds no recorded views; rebuild it with `fpkit build --replay`")
            if table != "sample":
                raise ConfigError("replay returns each view's own fingerprint: use table='sample'")
            self._tables = {n: self.fp.table("views", n) for n in self.layers}
            self.policy = policy_from_dict(self.fp.metadata.views.policy)
            self.padding = getattr(self.policy, "padding", 0)
        elif table != "index":
            self._tables = {n: self.fp.table(table, n) for n in self.layers}
        else:
            self._tables = {}
        self.targets = _check_targets(self.fp, tuple(targets), replay)
        self._logit_kind = self.fp.logits_kind if "logits" in self.targets else None
        logit_arrays = self.fp.logit_targets() if self._logit_kind else ()
        logit_arrays = logit_arrays if isinstance(logit_arrays, tuple) else (logit_arrays,)
        shared = share_file(self.fp, {**self._tables, **{("logits", j): a for j, a in enumerate(logit_arrays)}})
        self._tables = {n: shared[n] for n in self._tables}  # one copy for every DataLoader worker
        self._logits = [shared[("logits", j)] for j in range(len(logit_arrays))]
        self._check_dataset(check_samples if table != "class" else 0)

    # ------------------------------------------------------------------ checks
    def _check_dataset(self, check_samples: int) -> None:
        fp, ds = self.fp, self.dataset
        where = f"the dataset does not match {fp.path}"
        if (sub := fp.metadata.dataset.subset) is not None:
            where += f" (samples {sub.start}:{sub.stop} of a split of {sub.source_num_samples})"
        classes = getattr(ds, "classes", None)
        if classes is not None and list(classes) != fp.classes:
            if len(classes) != fp.num_classes:
                raise MismatchError(f"{where}: it has {len(classes)} classes, the file {fp.num_classes}")
            i = next(j for j, (a, b) in enumerate(zip(classes, fp.classes)) if a != b)
            raise MismatchError(f"{where}: class {i} is {classes[i]!r} there and {fp.classes[i]!r} in the file")
        if self.table_kind == "class":
            return
        a = self.offset
        targets = getattr(ds, "targets", None)
        if targets is not None:
            labels = np.asarray(targets, dtype=np.int64)[a : a + fp.num_samples]
            if labels_sha256(labels) != fp.metadata.dataset.labels_sha256:
                i = int(np.nonzero(labels != fp.labels)[0][0])
                raise MismatchError(
                    f"{where}: label of sample {i} is {labels[i]} there and {fp.labels[i]} in the "
                    "file (a different split, order or relabelling)"
                )
        n = fp.num_samples
        for i in np.unique(np.linspace(0, n - 1, num=min(check_samples, n)).astype(int)):
            img, label = ds[a + int(i)]
            if int(label) != int(fp.labels[i]):
                raise MismatchError(
                    f"{where}: label of sample {i} is {int(label)} there and {fp.labels[i]} in the file"
                )
            pixels = _pixels(img)
            if pixels is None:
                raise MismatchError(
                    f"{where}: sample {i} is a {type(img).__name__}, not a raw image; pass the dataset "
                    "without a transform and give transform= to FingerprintDataset "
                    "(or check_samples=0 to skip this check)"
                )
            if sample_digest(pixels) != int(fp.sample_digests[i]):
                raise MismatchError(
                    f"{where}: the pixels of sample {i} differ from those the file was built from "
                    "(different images or a different order)"
                )

    # ------------------------------------------------------------------ access
    def __len__(self) -> int:
        return len(self.dataset) if self.table_kind == "class" else self.fp.num_samples

    def __getitem__(self, i: int):
        if not 0 <= i < len(self):
            raise IndexError(f"index {i} is out of range for {len(self)} samples")
        img, label = self.dataset[self.offset + i]
        j = None
        if self.replay:
            k = self._tables[self.layers[0]].shape[1]
            j = int(torch.randint(k, (1,)).item())
            if isinstance(self.policy, ViewPolicy):
                top, left, flip = (int(v) for v in self.fp.view_params[i, j])
                img = replay_view(img, top, left, flip, self.padding)
            else:
                img = replay_resized(img, self.policy, self.fp.view_params[i, j])
            target = {n: torch.from_numpy(self._tables[n][i, j]) for n in self.layers}
        elif self.table_kind == "index":
            target = {n: i for n in self.layers}
        else:
            row = int(label) if self.table_kind == "class" else i
            target = {n: torch.from_numpy(self._tables[n][row]) for n in self.layers}
        if self.transform is not None:
            img = self.transform(img)
        fp_target = target if self.all_layers else target[self.layers[0]]
        if self._logit_kind is None:
            return img, label, fp_target
        z = self._logit_target(i, j)
        return (img, label, fp_target, z) if "fingerprint" in self.targets else (img, label, z)

    def _logit_target(self, i: int, j: int | None) -> Any:
        """Sample ``i``'s logit target (view ``j`` for the per-view kinds)."""
        from .losses import SampledTarget, TopKTarget

        kind, arrays = self._logit_kind, self._logits
        if kind == "mean":
            return torch.from_numpy(np.array(arrays[0][i]))
        if kind == "full":
            return torch.from_numpy(np.array(arrays[0][i, j]))
        if kind == "topk":
            return TopKTarget(
                torch.from_numpy(np.array(arrays[0][i, j])), torch.from_numpy(arrays[1][i, j].astype(np.int64))
            )
        return SampledTarget(torch.from_numpy(arrays[0][i, j].astype(np.int64)), self.fp.logits_info.spec.temperature)

    def target_table(
        self, device: str | torch.device = "cpu", layer: str | None = None, kind: str = "sample"
    ) -> torch.Tensor:
        """The whole float32 table [N or C, r] as one tensor on ``device``, for gathering targets by
        index inside the training loop (``table[idx]`` with ``table="index"`` batches)."""
        name = layer or self.layers[0]
        return torch.from_numpy(self.fp.table(kind, name)).to(device)

    def projection(self, layer: str | None = None) -> torch.Tensor:
        """The frozen projection R [d, r] of a layer as a float32 tensor (raises RedactedError)."""
        return torch.from_numpy(self.fp.projection(layer or self.layers[0]).copy())


def _check_targets(fp: FingerprintFile, targets: tuple[str, ...], replay: bool) -> tuple[str, ...]:
    """The ``targets`` option checked against the file (ConfigError naming the fix)."""
    if targets not in (("fingerprint",), ("logits",), ("fingerprint", "logits")):
        raise ConfigError(
            f"targets must be ('fingerprint',), ('logits',) or ('fingerprint', 'logits'), got {targets!r}"
        )
    if "logits" in targets:
        if fp.logits_info is None:
            raise ConfigError(
                f"{fp.path} holds no logits; rebuild it with `fpkit build --logits mean` (or full, topk:K, ...)"
            )
        if fp.logits_info.spec.per_view and not replay:
            raise ConfigError(
                f"{fp.path} holds per-view logits ({fp.logits_kind}): pass replay=True to pair each with its view"
            )
    return targets


def _offset(fp: FingerprintFile, size: int) -> int:
    """Where the file's samples start in a dataset of ``size`` items: 0 when it holds exactly the
    file's N, the subset's start when it is the whole source split; else MismatchError."""
    n, sub = fp.num_samples, fp.metadata.dataset.subset
    if size == n:
        return 0
    if sub is not None and size == sub.source_num_samples:
        return sub.start
    where = f"the dataset does not match {fp.path}: it has {size} samples"
    if sub is not None:
        raise MismatchError(
            f"{where}, the file holds samples {sub.start}:{sub.stop} of a split of {sub.source_num_samples}; "
            f"wrap that whole split, or exactly those {n} samples"
        )
    raise MismatchError(f"{where}, the file {n}; wrap the same split the file was built from")


def replay_view(img: Any, top: int, left: int, flip: int, padding: int) -> Any:
    """Cut one recorded view from a PIL image or HWC uint8 array: zero-pad, crop, maybe mirror."""
    if isinstance(img, np.ndarray):
        img = Image.fromarray(img)
    w, h = img.size
    out = TF.crop(TF.pad(img, padding, fill=0), top, left, h, w)
    return TF.hflip(out) if flip else out


def replay_resized(img: Any, policy: Policy, params: np.ndarray) -> Any:
    """Cut one recorded resized-crop or center view (format 1.2) with the build's own resize
    (:func:`fpkit.views.replay_tensor`): a PIL image or HWC uint8 array gives a PIL image, a
    uint8 [C, H, W] tensor a tensor, with exactly the pixels the teacher saw."""
    if isinstance(img, torch.Tensor):
        return replay_tensor(policy, img, params)
    arr = np.asarray(img, dtype=np.uint8)
    hwc = arr[..., None] if arr.ndim == 2 else arr
    out = replay_tensor(policy, torch.from_numpy(np.array(hwc)).permute(2, 0, 1), params)
    out = out.permute(1, 2, 0).numpy()
    return Image.fromarray(out[..., 0] if arr.ndim == 2 else out)


def _pixels(img: Any) -> np.ndarray | None:
    if isinstance(img, Image.Image):
        return np.asarray(img)
    if isinstance(img, np.ndarray) and img.dtype == np.uint8:
        return img
    if isinstance(img, torch.Tensor) and img.dtype == torch.uint8:
        return img.permute(1, 2, 0).numpy() if img.ndim == 3 and img.shape[0] in (1, 3) else img.numpy()
    return None
