"""Train a student from a fingerprint file: a complete script to copy and adapt.

    fpkit build                                               # the embedded demo: embedded-embedded-test.h5
    python examples/train_student.py embedded-embedded-test.h5 --data embedded --epochs 30

    fpkit build teacher.pt cifar100 -o fp.h5                  # your teacher, once
    python examples/train_student.py fp.h5 --data cifar100 --arch resnet20 --epochs 200 --device cuda

The teacher is never loaded.  The loss is CE + lambda(epoch) * sum over the file's layers of
(1 - cos(phi_S, phi_T)) (fpkit.FingerprintDistiller), lambda warmed up linearly over the first fifth
of the run; SGD with momentum and a cosine learning-rate schedule; test top-1 after every epoch.
The training split must be the one the file was built from (FingerprintDataset checks it) and
should be normalised as the build was (pass the build's --normalize).  The embedded sample has
only its 500 test images, so the demo evaluates on the images it trains on.  Writes --out as
``{'model': state_dict, 'arch', 'num_classes', 'epoch', 'test_top1'}`` (torch.load(weights_only=True)).
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
import torchvision.transforms as T

import fpkit
from fpkit import recommended
from fpkit.devices import resolve_device
from fpkit.models import CIFAR_RESNETS, get_cifar_resnet


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("fingerprints", help="fingerprint file written by `fpkit build`")
    p.add_argument("--data", default="embedded", help="the dataset the file was built from (default: embedded)")
    p.add_argument("--root", default="data", help="folder of torchvision datasets (default: data)")
    p.add_argument("--split", default=None, help="split the file was built from (default: train; test for embedded)")
    p.add_argument("--eval-split", default="test", help="split to evaluate on (default: test)")
    p.add_argument("--normalize", default=None, help="as the build's --normalize (default: the dataset's own)")
    p.add_argument("--arch", default="resnet20", choices=list(CIFAR_RESNETS), help="student (default: resnet20)")
    p.add_argument("--table", choices=("sample", "class"), default="sample", help="targets (default: sample)")
    p.add_argument("--replay", action="store_true", help="train on the recorded views (files built with --replay)")
    p.add_argument(
        "--lambda",
        dest="lam",
        type=float,
        default=recommended.LAMBDA,
        help=f"final lambda (default: {recommended.LAMBDA:g}, chosen on validation data: docs/RESULTS.md section 5)",
    )
    p.add_argument("--warmup", type=int, default=None, help="lambda warm-up epochs (default: a fifth of the run)")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.1, help="initial learning rate (default: 0.1)")
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--num-workers", type=int, default=2, help="DataLoader workers (default: 2)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="student.pt", help="checkpoint to write (default: student.pt)")
    return p.parse_args(argv)


def make_loaders(args: argparse.Namespace, device: torch.device):
    """The training FingerprintDataset, its DataLoader, the test DataLoader and the class count."""
    train = fpkit.open_source(args.data, args.root, args.split, normalize=args.normalize)
    test = fpkit.open_source(args.data, args.root, args.eval_split, normalize=args.normalize)
    c, h, w = train.image_shape
    normalize = [T.ToTensor(), T.Normalize(train.mean, train.std)]
    crop_flip = [] if args.replay else [T.RandomCrop((h, w), padding=4), T.RandomHorizontalFlip()]
    data = fpkit.FingerprintDataset(  # checks that this is the data the file describes
        args.fingerprints,
        train.torch_dataset(),
        table=args.table,
        layer="all",
        replay=args.replay,
        transform=T.Compose(crop_flip + normalize),
    )
    workers = dict(num_workers=args.num_workers, pin_memory=device.type == "cuda")
    loader = torch.utils.data.DataLoader(
        data, batch_size=args.batch_size, shuffle=True, drop_last=len(data) > args.batch_size, **workers
    )
    test_loader = torch.utils.data.DataLoader(
        test.torch_dataset(transform=T.Compose(normalize)), batch_size=256, **workers
    )
    return data, loader, test_loader, len(train.classes), c


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader, device: torch.device) -> float:
    """Top-1 accuracy in percent."""
    model.eval()
    correct = seen = 0
    for images, labels in loader:
        logits = model(images.to(device))
        correct += int((logits.argmax(1).cpu() == labels).sum())
        seen += len(labels)
    return 100.0 * correct / max(1, seen)


def train(args: argparse.Namespace) -> float:
    """Train and save the student; returns its final test top-1 (percent)."""
    torch.manual_seed(args.seed)
    device = resolve_device(args.device)
    data, loader, test_loader, num_classes, channels = make_loaders(args, device)
    student = get_cifar_resnet(args.arch, num_classes, in_channels=channels).to(device)
    warmup = recommended.warmup_epochs(args.epochs) if args.warmup is None else args.warmup
    distiller = fpkit.FingerprintDistiller(student, data, lam=fpkit.LinearWarmup(args.lam, warmup))
    opt = torch.optim.SGD(distiller.parameters(), lr=args.lr, momentum=0.9, weight_decay=args.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.epochs)
    print(
        f"{args.arch} on {args.data}: {len(data)} images, layers {list(distiller.layers)}, "
        f"{distiller.loss.schedule}, {device}",
        flush=True,
    )
    top1 = 0.0
    for epoch in range(args.epochs):
        t0 = time.perf_counter()
        distiller.train()
        sums: dict[str, float] = {}
        seen = 0
        for images, labels, phi_t in loader:
            images = images.to(device, non_blocking=True)
            labels = labels.to(device, non_blocking=True)
            loss, parts = distiller(images, labels, phi_t, epoch=epoch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            for key, value in parts.items():
                sums[key] = sums.get(key, 0.0) + value * len(labels)
            seen += len(labels)
        sched.step()
        top1 = evaluate(student, test_loader, device)
        means = "  ".join(f"{key} {value / seen:.4f}" for key, value in sums.items())
        print(
            f"epoch {epoch + 1}/{args.epochs}  {means}  test top-1 {top1:.2f}%  ({time.perf_counter() - t0:.1f} s)",
            flush=True,
        )
    distiller.close()
    state = {k: v.detach().cpu() for k, v in student.state_dict().items()}
    torch.save(
        {"model": state, "arch": args.arch, "num_classes": num_classes, "epoch": args.epochs, "test_top1": top1},
        args.out,
    )
    print(f"wrote {args.out}", flush=True)
    return top1


def main(argv: list[str] | None = None) -> int:
    """Exit status: 0 on success, 1 on an fpkit error (message on stderr), 2 on a usage error."""
    args = parse_args(argv)
    try:
        train(args)
    except fpkit.FpkitError as e:
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
