"""Diagnoses of builds that succeed but are probably not what the user wanted.

``fpkit build`` prints them as ``[fpkit build] warning: ...`` lines and ``fpkit inspect`` shows
them (computed from the file alone) under ``warnings``.  They are advice, never errors:
``fpkit verify`` stays about the file's integrity.

The rules, and why these thresholds:

* **Teacher near chance.** The teacher's top-1 on the built views is ``p``; chance is ``1/C``.
  Warn when ``p < max(1.5/C, 1/C + 3 * sqrt((1/C)(1 - 1/C) / N))``: the accuracy is less than
  half as far again above chance, or it is not 3 binomial standard errors above chance.  The
  standard error counts the N images, not the N*K views, since the views of one image are
  strongly correlated; this only makes the rule more cautious.  Measured on the 500 embedded
  CIFAR-10 test images (C = 10, threshold 0.15): the embedded trained resnet8 has 0.802, a
  random-init resnet8 0.100.
* **Collapsed class fingerprints.** The mean pairwise cosine of the per-class rows (the class
  table, or the class means of the sample table).  Warn above 0.98.  Measured on the embedded
  images at the default layer (layer3): the embedded trained resnet8 gives 0.746 (largest pair
  0.957), a random-init resnet8 0.996 (smallest pair 0.986).  Layers far from the classifier
  of a trained teacher can also exceed it (the embedded teacher's layer1: 0.990, layer2: 0.961);
  the warning says so.
* **r far larger than d.** ``r > 4 d``: a projection with ``r >= d`` already keeps the
  normalised features' directions exactly (R is of full rank d), so a wider one only adds bytes.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

CHANCE_FACTOR = 1.5
"""Warn when the teacher's top-1 is below this multiple of chance (1/C)..."""
CHANCE_STANDARD_ERRORS = 3.0
"""... or not this many binomial standard errors (over the N images) above chance."""
COLLAPSE_COSINE = 0.98
"""Warn when the mean pairwise cosine of the per-class fingerprints exceeds this."""
WIDE_R_FACTOR = 4
"""Warn when r exceeds this multiple of the layer's width d."""


def chance_threshold(num_classes: int, num_samples: int) -> float:
    """The top-1 below which the teacher counts as near chance (see the module's rules)."""
    p = 1.0 / num_classes
    se = math.sqrt(p * (1 - p) / max(1, num_samples))
    return max(CHANCE_FACTOR * p, p + CHANCE_STANDARD_ERRORS * se)


def near_chance_warning(top1: float | None, num_classes: int, num_samples: int) -> str | None:
    """A sentence if the teacher's top-1 ``top1`` over ``num_samples`` images is near chance."""
    if top1 is None or num_classes < 2:
        return None
    limit = chance_threshold(num_classes, num_samples)
    if top1 >= limit:
        return None
    return (
        f"the teacher's top-1 on the built views is {top1:.4f}, near chance (1/{num_classes} = "
        f"{1 / num_classes:.4f}; fpkit warns below {limit:.4f}): is it trained, is it the teacher of this "
        "dataset, and does the input normalisation match its training?"
    )


def mean_pairwise_cosine(rows: np.ndarray) -> float | None:
    """Mean cosine over distinct pairs of the non-zero rows of ``rows`` (None with fewer than 2)."""
    x = np.asarray(rows, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1)
    x = x[norms > 0] / norms[norms > 0, None]
    c = len(x)
    if c < 2:
        return None
    s = x.sum(axis=0)
    return float((s @ s - c) / (c * (c - 1)))  # sum over i != j of x_i . x_j, from |sum x|^2


def collapse_warning(class_rows: np.ndarray, layer: str) -> str | None:
    """A sentence if the per-class fingerprints of ``layer`` are nearly all the same direction."""
    cos = mean_pairwise_cosine(class_rows)
    if cos is None or cos <= COLLAPSE_COSINE:
        return None
    return (
        f"the class fingerprints of layer {layer} have collapsed: their mean pairwise cosine is {cos:.4f} "
        f"(fpkit warns above {COLLAPSE_COSINE}), so they barely tell the classes apart; an untrained or "
        "random teacher gives this, and so can a layer far from the classifier (try the default layer)"
    )


def wide_projection_warning(layer: str, d: int, r: int, layer_bytes: int) -> str | None:
    """A sentence if ``r`` is far larger than ``d``; ``layer_bytes`` is what the layer's tables
    and projection take in the file."""
    if r <= WIDE_R_FACTOR * d:
        return None
    return (
        f"--r {r} is more than {WIDE_R_FACTOR}x the width d={d} of layer {layer}: layer {layer} takes "
        f"{layer_bytes / 1e6:,.1f} MB in the file, while any r >= d already keeps the feature directions "
        f"exactly (--r {d} would do; 128 is the usual choice)"
    )


def layer_bytes(d: int, r: int, stored: bool, kinds: Sequence[str], n: int, c: int, k: int | None, dtype: str) -> int:
    """Bytes a layer's projection and tables take (values only; formats/SPEC.md section 4)."""
    from .format.layout import FileShape, layer_datasets

    return sum(ds.nbytes for ds in layer_datasets(0, d, r, stored, kinds, FileShape(n, c, k, dtype)))


def result_warnings(fp) -> list[str]:
    """The diagnoses of a built file's content: teacher near chance, collapsed class fingerprints."""
    from .plot import class_similarity_table

    out = []
    acc = fp.metadata.teacher.accuracy
    w = near_chance_warning(acc.top1 if acc is not None else None, fp.num_classes, fp.num_samples)
    if w:
        out.append(w)
    for lay in fp.layers:
        w = collapse_warning(class_similarity_table(fp, lay.name), lay.name)
        if w:
            out.append(w)
    return out


def file_warnings(fp) -> list[str]:
    """Every diagnosis that can be made from a file alone (``fpkit inspect``)."""
    out = result_warnings(fp)
    m = fp.metadata
    for lay, lm in zip(fp.layers, m.layers):
        nbytes = 0
        for info in lm.tables.values():
            for path in (info.dataset, info.scale):
                if path:
                    ds = m.datasets[path]
                    nbytes += int(np.prod(ds.shape, dtype=np.int64)) * np.dtype(ds.dtype).itemsize
        if lay.projection_stored:
            nbytes += lay.d * lay.r * 4
        w = wide_projection_warning(lay.name, lay.d, lay.r, nbytes)
        if w:
            out.append(w)
    return out
