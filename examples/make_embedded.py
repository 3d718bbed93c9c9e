"""Train fpkit's embedded default teacher and cut its embedded image sample.

Writes, under ``fpkit/data/`` (or ``--out``):

* ``embedded_teacher.pt``: a resnet8 trained on the CIFAR-10 (JPEG q75) train split, saved as
  ``{'model': state_dict, 'arch': 'resnet8', 'num_classes': 10, ...}`` (loads with
  ``torch.load(weights_only=True)``);
* ``embedded_sample.npz``: the first 50 test images of each class (500 in all, class-major),
  ``images`` uint8 [500, 32, 32, 3] HWC RGB, ``labels`` int64, ``classes``, ``files``.

Usage (from the checkout root, CPU only, about 15-20 minutes on 2 cores)::

    python examples/make_embedded.py --data .data/cifar10-jpeg --epochs 15

The data folder is the ImageFolder layout of ``cifar10-jpeg.tar.zst``: ``{train,test}/<class>/
NNNN.jpg`` with class folders sorted alphabetically = CIFAR-10 label indices.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fpkit.models import resnet8  # noqa: E402

MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)
SAMPLE_PER_CLASS = 50


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _classes(split_dir: Path) -> list[str]:
    classes = sorted(p.name for p in split_dir.iterdir() if p.is_dir())
    if len(classes) != 10:
        raise SystemExit(f"expected 10 class folders in {split_dir}, found {len(classes)}")
    return classes


def _decode(paths: list[Path]) -> np.ndarray:
    """Decode JPEGs into uint8 [N, 32, 32, 3] (HWC, RGB as PIL decodes them)."""
    out = np.empty((len(paths), 32, 32, 3), dtype=np.uint8)
    for i, p in enumerate(paths):
        with Image.open(p) as im:
            out[i] = np.asarray(im.convert("RGB"))
    return out


def _load_split(root: Path, split: str) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    split_dir = root / split
    classes = _classes(split_dir)
    paths: list[Path] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        files = sorted((split_dir / name).glob("*.jpg"))
        paths += files
        labels += [label] * len(files)
    images = _decode(paths)
    rel = [str(p.relative_to(root)) for p in paths]
    return images, np.asarray(labels, dtype=np.int64), classes, rel


def _augment(batch: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """RandomCrop(32, padding=4) with zero padding + RandomHorizontalFlip on uint8 NCHW."""
    n = batch.shape[0]
    padded = F.pad(batch, (4, 4, 4, 4))
    oy = torch.randint(0, 9, (n,), generator=gen)
    ox = torch.randint(0, 9, (n,), generator=gen)
    ar = torch.arange(32)
    rows = (oy[:, None] + ar)[:, None, :, None]  # [n,1,32,1]
    cols = (ox[:, None] + ar)[:, None, None, :]  # [n,1,1,32]
    idx_n = torch.arange(n)[:, None, None, None]
    idx_c = torch.arange(batch.shape[1])[None, :, None, None]
    cropped = padded[idx_n, idx_c, rows, cols]
    flip = torch.rand(n, generator=gen) < 0.5
    return torch.where(flip[:, None, None, None], cropped.flip(3), cropped)


def _normalize(batch: torch.Tensor) -> torch.Tensor:
    x = batch.float().div_(255.0)
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return (x - mean) / std


@torch.no_grad()
def _evaluate(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    model.eval()
    correct = 0
    for i in range(0, len(images), 1000):
        logits = model(_normalize(images[i : i + 1000]))
        correct += int((logits.argmax(1) == labels[i : i + 1000]).sum())
    return 100.0 * correct / len(images)


def _atomic_save(obj: object, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=".data/cifar10-jpeg", help="CIFAR-10 JPEG folder")
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "fpkit" / "data"))
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    root = Path(args.data)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    t0 = time.time()
    test_np, test_y_np, classes, test_files = _load_split(root, "test")
    train_np, train_y_np, train_classes, _ = _load_split(root, "train")
    if train_classes != classes:
        raise SystemExit("train and test class folders differ")
    _log(f"decoded {len(train_np)} train / {len(test_np)} test images in {time.time() - t0:.1f}s")

    # The sample: first 50 files of each test class folder, class-major.
    keep = [i for i, f in enumerate(test_files) if int(Path(f).stem) < SAMPLE_PER_CLASS]
    sample_path = out / "embedded_sample.npz"
    tmp = out / "embedded_sample.tmp.npz"
    np.savez_compressed(
        tmp,
        images=test_np[keep],
        labels=test_y_np[keep],
        classes=np.asarray(classes),
        files=np.asarray([test_files[i] for i in keep]),
    )
    os.replace(tmp, sample_path)
    _log(f"wrote {sample_path} ({sample_path.stat().st_size} bytes, {len(keep)} images)")

    train_x = torch.from_numpy(train_np).permute(0, 3, 1, 2).contiguous()
    train_y = torch.from_numpy(train_y_np)
    test_x = torch.from_numpy(test_np).permute(0, 3, 1, 2).contiguous()
    test_y = torch.from_numpy(test_y_np)

    model = resnet8(num_classes=10)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=False)
    batch = 128
    steps_per_epoch = math.ceil(len(train_x) / batch)
    total = steps_per_epoch * args.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1.0 + math.cos(math.pi * s / total)))
    gen = torch.Generator().manual_seed(0)
    t_train = time.time()
    acc = 0.0
    for epoch in range(args.epochs):
        model.train()
        te = time.time()
        perm = torch.randperm(len(train_x), generator=gen)
        loss_sum, seen = 0.0, 0
        for s in range(steps_per_epoch):
            idx = perm[s * batch : (s + 1) * batch]
            x = _normalize(_augment(train_x[idx], gen))
            loss = F.cross_entropy(model(x), train_y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += float(loss.detach()) * len(idx)
            seen += len(idx)
        acc = _evaluate(model, test_x, test_y)
        _log(
            f"epoch {epoch + 1}/{args.epochs}: train loss {loss_sum / seen:.4f}, "
            f"test top-1 {acc:.2f}%, {time.time() - te:.1f}s"
        )
    train_s = time.time() - t_train

    state_dict = {k: v.detach().clone() for k, v in model.state_dict().items()}
    teacher_path = out / "embedded_teacher.pt"
    _atomic_save(
        {
            "model": state_dict,
            "arch": "resnet8",
            "num_classes": 10,
            "trained_by": "examples/make_embedded.py",
            "data": "CIFAR-10 (JPEG q75) train split",
            "test_top1": round(acc, 2),
            "epochs": args.epochs,
            "mean": list(MEAN),
            "std": list(STD),
        },
        teacher_path,
    )
    torch.load(teacher_path, map_location="cpu", weights_only=True)  # self-check
    _log(f"wrote {teacher_path} (test top-1 {acc:.2f}%, training {train_s:.0f}s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
