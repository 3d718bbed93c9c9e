"""Train a student from a fingerprint file with DistributedDataParallel (torchrun, one process per device).

    torchrun --nproc_per_node 8 examples/train_ddp.py fp.h5 --data cifar100 --epochs 200   # 8 GPUs
    torchrun --nproc_per_node 2 examples/train_ddp.py embedded-embedded-test.h5 --epochs 1  # 2 CPU processes

DDP wraps the FingerprintDistiller, not the student: the distiller runs the student (through its
LayerTap) and the heads, so wrapping it sends every forward through DDP and all-reduces the
gradients of the student and of the heads' adapters alike; a DDP-wrapped student inside the
distiller would be bypassed by the tap.  Each rank reads its own part of every epoch
(DistributedSampler) at --batch-size / world size; DDP averages the gradients of the per-rank mean
losses, which is the gradient of the mean loss over the global batch, so a step is the
single-process step on the same --batch-size (exactly so on CUDA, where BatchNorm is synchronised
with SyncBatchNorm; on the CPU each rank normalises its own part, as SyncBatchNorm needs a GPU).
Every rank opens the file (verified once per rank; its DataLoader workers share that copy,
fpkit/shared_tables.py).  Each rank prints its loss and a SHA-256 of its weights, which must agree.
"""

from __future__ import annotations

import argparse
import hashlib
import os

import torch
import torch.distributed as dist
import torchvision.transforms as T
from torch.nn.parallel import DistributedDataParallel as DDP

import fpkit
from fpkit import recommended
from fpkit.models import CIFAR_RESNETS, get_cifar_resnet


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("fingerprints", help="fingerprint file written by `fpkit build`")
    p.add_argument("--data", default="embedded", help="the dataset the file was built from (default: embedded)")
    p.add_argument("--root", default="data", help="folder of torchvision datasets (default: data)")
    p.add_argument("--split", default=None, help="split the file was built from (default: the source's)")
    p.add_argument("--arch", default="resnet20", choices=list(CIFAR_RESNETS))
    p.add_argument(
        "--lambda",
        dest="lam",
        type=float,
        default=recommended.LAMBDA,
        help=f"final lambda (default: {recommended.LAMBDA:g}, chosen on validation data: docs/RESULTS.md section 5)",
    )
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=128, help="global batch, split over the ranks")
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--num-workers", type=int, default=2, help="DataLoader workers per rank")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (for tests)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="student.pt", help="checkpoint written by rank 0")
    return p.parse_args(argv)


def weights_sha256(model: torch.nn.Module) -> str:
    """SHA-256 of the parameters and buffers, in state_dict order."""
    h = hashlib.sha256()
    for key, value in model.state_dict().items():
        h.update(key.encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    cuda = torch.cuda.is_available()
    dist.init_process_group("nccl" if cuda else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    local = int(os.environ.get("LOCAL_RANK", 0))
    device = torch.device(f"cuda:{local}") if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if args.batch_size % world:
        raise SystemExit(f"--batch-size {args.batch_size} must be a multiple of the {world} processes")
    torch.manual_seed(args.seed)  # same initial weights everywhere (DDP also broadcasts rank 0's)

    train = fpkit.open_source(args.data, args.root, args.split)
    tf = T.Compose([T.RandomCrop(train.image_shape[1:], padding=4), T.RandomHorizontalFlip(), T.ToTensor()])
    data = fpkit.FingerprintDataset(
        args.fingerprints,
        train.torch_dataset(),
        layer="all",
        transform=T.Compose([tf, T.Normalize(train.mean, train.std)]),
    )
    sampler = torch.utils.data.DistributedSampler(data, world, rank, shuffle=True, seed=args.seed, drop_last=True)
    loader = torch.utils.data.DataLoader(
        data, batch_size=args.batch_size // world, sampler=sampler, num_workers=args.num_workers, drop_last=True
    )
    student = get_cifar_resnet(args.arch, len(train.classes), in_channels=train.image_shape[0]).to(device)
    if cuda:
        student = torch.nn.SyncBatchNorm.convert_sync_batchnorm(student)
    distiller = fpkit.FingerprintDistiller(student, data, lam=fpkit.LinearWarmup.for_run(args.epochs, args.lam))
    model = DDP(distiller, device_ids=[local] if cuda else None)
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=5e-4)

    step, loss_sum = 0, torch.zeros((), device=device)
    for epoch in range(args.epochs):
        sampler.set_epoch(epoch)  # a new shuffle each epoch, the same on every rank
        model.train()
        for i, (images, labels, phi_t) in enumerate(loader):
            images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            loss, _parts = model(images, labels, phi_t, epoch=epoch + i / len(loader))
            opt.zero_grad(set_to_none=True)
            loss.backward()  # DDP all-reduces (averages) the gradients here
            opt.step()
            global_loss = loss.detach().clone()
            dist.all_reduce(global_loss)  # mean loss over the global batch, for the log
            loss_sum = global_loss / world
            step += 1
            if args.max_steps is not None and step >= args.max_steps:
                break
        if rank == 0:
            print(f"epoch {epoch + 1}/{args.epochs}  step {step}  loss {float(loss_sum):.4f}", flush=True)
        if args.max_steps is not None and step >= args.max_steps:
            break
    for buffer in student.buffers():  # BatchNorm statistics: rank 0's, as DDP's next forward would make them
        dist.broadcast(buffer, 0)
    print(f"rank {rank}: loss {float(loss_sum):.6f} weights sha256 {weights_sha256(student)}", flush=True)
    distiller.close()
    if rank == 0:
        torch.save({"model": student.state_dict(), "arch": args.arch, "num_classes": len(train.classes)}, args.out)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
