"""A picture of what a fingerprint file holds (matplotlib is an optional extra: fpkit[plot])."""

from __future__ import annotations

import os

import numpy as np

from .errors import ConfigError
from .format import FingerprintFile


def class_similarity(fp: FingerprintFile, layer: str | None = None) -> np.ndarray:
    """Cosine similarity [C, C] between the per-class fingerprints (mean of the per-sample table
    when the file has no class table)."""
    table = class_similarity_table(fp, fp.layer(layer).name)
    unit = _unit(table)
    return unit @ unit.T


def plot_file(fp: FingerprintFile, png: str | os.PathLike, layer: str | None = None) -> None:
    """Write a PNG: the per-class cosine-similarity matrix and, with a per-sample table, the
    distribution of each sample's cosine to its own class fingerprint.

    Raises:
        ConfigError: matplotlib is not installed (pip install 'fpkit[plot]').
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise ConfigError("--plot needs matplotlib; install it with pip install 'fpkit[plot]'") from e
    lay = fp.layer(layer)
    sim = class_similarity(fp, lay.name)
    has_sample = "sample" in lay.tables
    fig, axes = plt.subplots(1, 2 if has_sample else 1, figsize=(12 if has_sample else 6.5, 5.5), squeeze=False)
    ax = axes[0, 0]
    im = ax.imshow(sim, vmin=-1, vmax=1, cmap="RdBu_r")
    c = fp.num_classes
    if c <= 20:
        ax.set_xticks(range(c), fp.classes, rotation=90, fontsize=8)
        ax.set_yticks(range(c), fp.classes, fontsize=8)
    ax.set_title(f"per-class fingerprint cosine similarity\nlayer {lay.name}, r={lay.r}")
    fig.colorbar(im, ax=ax, fraction=0.046)
    if has_sample:
        sample = fp.table("sample", lay.name).astype(np.float64)
        cls = class_similarity_table(fp, lay.name)
        own = np.sum(_unit(sample) * _unit(cls)[fp.labels], axis=1)
        ax2 = axes[0, 1]
        spread = float(np.ptp(own)) if own.size else 0.0
        ax2.hist(own, bins=50 if spread > 1e-6 else 1, color="#4477aa")  # one bin when all are equal
        ax2.set_xlabel("cosine(sample fingerprint, its class fingerprint)")
        ax2.set_ylabel("samples")
        ax2.set_title(f"{fp.num_samples:,} samples; median {np.median(own):.3f}")
    m = fp.metadata
    fig.suptitle(f"{os.path.basename(fp.path)}: teacher {m.teacher.arch}, {m.dataset.name}/{m.dataset.split}")
    fig.tight_layout()
    fig.savefig(png, dpi=110, format="png", bbox_inches="tight")  # exactly this name, labels kept
    plt.close(fig)


def class_similarity_table(fp: FingerprintFile, layer: str) -> np.ndarray:
    lay = fp.layer(layer)
    if "class" in lay.tables:
        return fp.table("class", layer).astype(np.float64)
    sample = fp.table("sample", layer).astype(np.float64)
    table = np.zeros((fp.num_classes, lay.r))
    np.add.at(table, fp.labels, sample)
    return table / np.maximum(fp.class_counts, 1)[:, None]


def _unit(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(n > 0, n, 1.0)
