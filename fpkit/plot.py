"""A picture of what a fingerprint file holds (matplotlib is an optional extra: fpkit[plot])."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ._text import printable
from .errors import ConfigError, FpkitFileNotFoundError
from .format import FingerprintFile


def class_similarity(fp: FingerprintFile, layer: str | None = None) -> np.ndarray:
    """Cosine similarity [C, C] between the per-class fingerprints (mean of the per-sample table
    when the file has no class table)."""
    table = class_similarity_table(fp, fp.layer(layer).name)
    unit = _unit(table)
    return unit @ unit.T


def _matplotlib():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise ConfigError("--plot needs matplotlib; install it with pip install 'fpkit[plot]'") from e
    return plt


def plot_format(path: str | os.PathLike) -> str:
    """The image format ``path``'s suffix names (png, jpg, svg, pdf, ...; png for a name without
    a suffix), checked before any work: the suffix must be one matplotlib writes and the folder
    must exist.  The picture goes to exactly this name.

    Raises:
        ConfigError: matplotlib is missing, or the suffix is not an image format it writes.
        FpkitFileNotFoundError: the folder does not exist.
    """
    _matplotlib()
    from matplotlib.backend_bases import FigureCanvasBase

    p = Path(path)
    kinds = FigureCanvasBase.get_supported_filetypes()
    fmt = p.suffix[1:].lower() or "png"
    if fmt not in kinds:
        raise ConfigError(
            f"--plot {printable(str(p))}: {p.suffix!r} is not an image format matplotlib writes (the suffix sets "
            f"the format); use one of {', '.join('.' + k for k in sorted(kinds))}, e.g. .png"
        )
    folder = p.parent
    if not folder.is_dir():
        raise FpkitFileNotFoundError(
            f"--plot {printable(str(p))}: the folder {printable(str(folder))} does not exist; create it or "
            "choose another path"
        )
    return fmt


def plot_file(fp: FingerprintFile, png: str | os.PathLike, layer: str | None = None) -> None:
    """Write a picture in the format the name's suffix names (see :func:`plot_format`): the
    per-class cosine-similarity matrix, its colours spanning the matrix's own range (a trained
    teacher's class fingerprints are all alike to 0.5-0.95), and, with a per-sample table, the
    distribution of each sample's cosine to its own class fingerprint.

    Raises:
        ConfigError: matplotlib is not installed (pip install 'fpkit[plot]'), or an unknown suffix.
        FpkitFileNotFoundError: the folder does not exist.
    """
    fmt = plot_format(png)
    plt = _matplotlib()
    lay = fp.layer(layer)
    sim = class_similarity(fp, lay.name)
    has_sample = "sample" in lay.tables
    fig, axes = plt.subplots(1, 2 if has_sample else 1, figsize=(12 if has_sample else 6.5, 5.5), squeeze=False)
    ax = axes[0, 0]
    lo, hi = float(sim.min()), float(sim.max())
    if hi - lo < 1e-6:  # all alike: a small span around the value, so that the bar still reads
        lo, hi = lo - 1e-3, hi + 1e-3
    im = ax.imshow(sim, vmin=lo, vmax=hi, cmap="viridis")
    c = fp.num_classes
    if c <= 20:
        names = [_label(n) for n in fp.classes]
        ax.set_xticks(range(c), names, rotation=90, fontsize=8)
        ax.set_yticks(range(c), names, fontsize=8)
    ax.set_title(f"per-class fingerprint cosine similarity\nlayer {_label(lay.name)}, r={lay.r}")
    bar = fig.colorbar(im, ax=ax, fraction=0.046)
    bar.set_label(f"cosine; colours span this matrix's range {lo:.3f} to {hi:.3f}, not -1 to 1")
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
    fig.suptitle(_label(f"{os.path.basename(fp.path)}: teacher {m.teacher.arch}, {m.dataset.name}/{m.dataset.split}"))
    fig.tight_layout()
    fig.savefig(png, dpi=110, format=fmt, bbox_inches="tight")  # exactly this name, labels kept
    plt.close(fig)


def class_similarity_table(fp: FingerprintFile, layer: str) -> np.ndarray:
    lay = fp.layer(layer)
    if "class" in lay.tables:
        return fp.table("class", layer).astype(np.float64)
    sample = fp.table("sample", layer).astype(np.float64)
    table = np.zeros((fp.num_classes, lay.r))
    np.add.at(table, fp.labels, sample)
    return table / np.maximum(fp.class_counts, 1)[:, None]


def _label(s: str) -> str:
    """A name from the file as plot text: non-printables escaped (fpkit/_text.py) and ``$``
    escaped, so that matplotlib does not read it as mathtext."""
    return printable(s).replace("$", r"\$")


def _unit(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(n > 0, n, 1.0)
