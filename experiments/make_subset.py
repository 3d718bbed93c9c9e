"""Make a smaller ImageFolder copy of a dataset: the first K images of every class folder.

Used by the reduced CPU protocol in docs/RESULTS.md, e.g.::

    python experiments/make_subset.py .data/cifar10-jpeg .data/cifar10-10k --train-per-class 1000

Files are hard-linked when possible (no extra space), copied otherwise; the test split is kept
whole unless --test-per-class is given.  The k-th file of a class folder stays the k-th.
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path


def link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def make_subset(src: Path, dst: Path, split: str, per_class: int | None) -> int:
    count = 0
    for cls in sorted(p for p in (src / split).iterdir() if p.is_dir()):
        out = dst / split / cls.name
        out.mkdir(parents=True, exist_ok=True)
        files = sorted(cls.iterdir())
        for f in files if per_class is None else files[:per_class]:
            target = out / f.name
            if not target.exists():
                link_or_copy(f, target)
            count += 1
    return count


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src", type=Path)
    ap.add_argument("dst", type=Path)
    ap.add_argument("--train-per-class", type=int, required=True)
    ap.add_argument("--test-per-class", type=int, default=None)
    a = ap.parse_args()
    n_train = make_subset(a.src, a.dst, "train", a.train_per_class)
    n_test = make_subset(a.src, a.dst, "test", a.test_per_class)
    print(f"{a.dst}: {n_train} train and {n_test} test images")


if __name__ == "__main__":
    main()
