"""``fpkit build`` and FingerprintDataset on real images of varied sizes at 224 pixels (issue 12).

Test data: the first N CIFAR-10 (JPEG q75) training images (N/10 per class), each resized with
PIL (bilinear) to a random H x W, both drawn in [48, 400], every fifth one grayscale, written as
JPEG (quality 90) into a temporary ImageFolder (class subfolders): the varied sizes and modes of
a user's folder, without ImageNet.

1. Build, interleaved (build, bare, decode, views, build, ...), medians reported:

   * build   -- ``fpkit.build.build(BuildOptions(policy="resized-crop", image_size=224, views=K,
                arch="torchvision:resnet18", ...))`` end to end on the folder (random weights saved
                as a state_dict; fpkit's default batch for the device): loading, probing, JPEG
                decoding, digests, views, forward, projection, writing the file.
   * bare    -- ``model(x)`` under inference_mode on the same N x K views, made once beforehand
                with fpkit's own code (``fpkit.images.read_images``, ``fpkit.views.views_for`` and
                ``cut_views`` with the build's view seed, so they are the views the build makes),
                in batches of the build's views per forward.
   * decode  -- ``fpkit.images.read_images`` of the N files alone (batches of the build's step).
   * views   -- ``views_for`` + ``cut_views`` (crop, resize, flip, normalise) on the decoded images.

   Headline: bare / build seconds = build throughput as a fraction of the bare forward (target
   >= 0.9); the decode and views shares are their seconds over the build's.
2. DataLoader throughput: ``FingerprintDataset(file, plain, transform=tf)`` vs the plain
   ImageFolder with the same ``tf`` = the student's RandomResizedCrop(224) + RandomHorizontalFlip
   + ToTensor + Normalize(ImageNet), batch 64, shuffled with one seed, num_workers from --workers
   (persistent workers, one warm-up epoch, epochs interleaved).  The file is the one built in 1.
   Headline: fingerprint / plain samples per second (target >= 0.95).

Quick (defaults, ~3-4 min on a loaded 2-core CPU):  python -m bench.real_images
Full:  python -m bench.real_images --n 1000 --views 8 --reps 5
Smallest (a check that it runs):
    python -m bench.real_images --n 10 --views 1 --reps 1 --workers 0 --loader-reps 1
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from bench import harness as H

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        prog="python -m bench.real_images",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--n", type=int, default=128, help="images in the varied-size folder (full: 1000)")
    p.add_argument("--views", type=int, default=2, help="resized-crop views per image (K)")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--min-size", type=int, default=48, help="smallest side drawn for the test images")
    p.add_argument("--max-size", type=int, default=400, help="largest side drawn for the test images")
    p.add_argument("--gray-every", type=int, default=5, help="every k-th image is grayscale (0: none)")
    p.add_argument("--arch", default="torchvision:resnet18", help="teacher, random weights")
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--r", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=None, help="views per forward (default: fpkit's for the device)")
    p.add_argument("--reps", type=int, default=3, help="interleaved repetitions of the build variants")
    p.add_argument("--workers", default="0,2", help="comma list of DataLoader num_workers ('' skips part 2)")
    p.add_argument("--loader-batch", type=int, default=64)
    p.add_argument("--loader-reps", type=int, default=3, help="interleaved epochs per DataLoader variant")
    p.add_argument("--data", type=Path, default=H.DEFAULT_DATA, help="CIFAR-10 JPEG root (train/, test/)")
    p.add_argument("--profile", metavar="OUT", default=None, help="also cProfile one build; top functions to OUT")
    H.add_common_args(p)
    return p.parse_args(argv)


# --------------------------------------------------------------------------- test data


def make_folder(args, root: Path) -> tuple[Path, list[tuple[int, int]]]:
    """The varied-size JPEG folder ``root/train/<class>/`` from the first N CIFAR-10 JPEGs;
    returns it and the (H, W) of every image."""
    from PIL import Image

    paths, labels, classes = H.cifar_files(args.data, "train", args.n)
    rng = np.random.default_rng(args.seed)
    sizes = []
    for i, (p, y) in enumerate(zip(paths, labels)):
        h, w = (int(x) for x in rng.integers(args.min_size, args.max_size + 1, 2))
        with open(p, "rb") as fh:
            img = Image.open(fh).convert("RGB").resize((w, h), Image.BILINEAR)
        if args.gray_every and i % args.gray_every == args.gray_every - 1:
            img = img.convert("L")
        d = root / "train" / classes[y]
        d.mkdir(parents=True, exist_ok=True)
        img.save(d / f"{i:05d}.jpg", quality=90)
        sizes.append((h, w))
    return root, sizes


# --------------------------------------------------------------------------- part 1: the build


def build_options(args, dev, teacher: Path, folder: Path, out: Path):
    from fpkit.build import BuildOptions

    return BuildOptions(
        teacher=str(teacher),
        arch=args.arch,
        num_classes=args.num_classes,
        dataset=f"imagefolder:{folder}",
        split="train",
        normalize="imagenet",
        r=args.r,
        views=args.views,
        view_seed=args.seed,
        policy="resized-crop",
        image_size=args.image_size,
        batch_size=args.batch_size,
        device=str(dev),
        output=str(out),
        force=True,
        tables=("sample", "class"),
    )


def views_per_forward(args, dev) -> tuple[int, int]:
    """(samples per step, views per forward) the build uses."""
    from fpkit.build.job import default_batch_size

    batch = args.batch_size if args.batch_size is not None else default_batch_size(dev)
    spb = max(1, batch // args.views)
    return spb, spb * args.views


def part_build(args, run, dev, tmp: Path, folder: Path, model) -> Path:
    import fpkit.build as B
    from fpkit.datasets import open_source
    from fpkit.images import read_images
    from fpkit.views import ResizedCropPolicy, cut_views, views_for

    teacher = tmp / "teacher.pt"
    torch.save(model.state_dict(), teacher)
    out = tmp / "fp.h5"
    opts = build_options(args, dev, teacher, folder, out)
    src = open_source(f"imagefolder:{folder}", split="train", normalize="imagenet")
    files = list(src._files)
    spb, vpf = views_per_forward(args, dev)
    steps = [files[i : i + spb] for i in range(0, len(files), spb)]
    policy = ResizedCropPolicy(args.image_size)
    mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)

    def decode():
        return [im for step in steps for im in read_images(step)]

    images = decode()

    def make_views():
        xs = []
        for s in range(0, len(images), spb):
            ims = images[s : s + spb]
            idx = np.arange(s, s + len(ims))
            params = views_for(policy, idx, args.views, args.seed, ims)
            xs.append(cut_views(policy, ims, torch.from_numpy(params), mean, std))
        return xs

    batches = [x.to(dev) for x in make_views()]  # views per forward = the build's (last step shorter)
    m = model.to(dev).eval()

    def bare():
        with torch.inference_mode():
            for xb in batches:
                m(xb)

    def build():
        res = B.build(opts, quiet=True)
        build.last = res

    n_views = args.n * args.views
    print("warm-up ...", file=sys.stderr, flush=True)
    build()
    with torch.inference_mode():
        m(batches[0])
    if args.profile:
        profile_build(args, build)
    variants = {"build": build, "bare": bare, "decode": decode, "views": make_views}
    times = H.timeit(variants, repeats=args.reps, device=dev)
    med = {k: times.median(k) for k in times}
    rows = [
        [
            "fpkit build (end to end)",
            med["build"],
            times.spread("build"),
            n_views / med["build"],
            med["bare"] / med["build"],
        ],
        ["bare teacher forward (views made)", med["bare"], times.spread("bare"), n_views / med["bare"], 1.0],
        ["decode N images (read_images)", med["decode"], times.spread("decode"), "", ""],
        ["views_for + cut_views", med["views"], times.spread("views"), "", ""],
    ]
    H.print_table(
        f"Build, {args.arch} (random weights), {args.n} JPEGs of {args.min_size}..{args.max_size} px, "
        f"resized-crop {args.image_size}, K={args.views}, {vpf} views per forward, "
        f"median of {args.reps} interleaved turns",
        ["variant", "seconds", "spread", "views/s", "throughput / bare"],
        rows,
    )
    ratio = med["bare"] / med["build"]
    paired = H.median([b / a for a, b in zip(times["build"], times["bare"])])
    shares = {k: med[k] / med["build"] for k in ("bare", "decode", "views")}
    cpu = {k: H.median(times.cpu[k]) for k in times}  # main-process CPU seconds: less disturbed by other jobs
    rest = 1 - sum(shares.values())
    H.print_table(
        "Headline (build throughput / bare forward, target >= 0.9) and the build's time by part",
        ["measure", "value"],
        [
            ["build throughput / bare forward (ratio of medians)", ratio],
            ["median of per-turn ratios", paired],
            ["the same in CPU seconds (bare / build)", cpu["bare"] / cpu["build"]],
            ["fpkit's compute-only views/s (BuildResult)", float(build.last.views_per_second)],
            ["share of build: bare forward", shares["bare"]],
            ["share of build: decode", shares["decode"]],
            ["share of build: views (crop+resize+normalise)", shares["views"]],
            ["share of build: the rest (load, probe, digests, projection, file)", rest],
        ],
    )
    run.results["build"] = {
        "times": times,
        "views": n_views,
        "views_per_forward": vpf,
        "ratio_bare_over_build": ratio,
        "paired_ratio": paired,
        "cpu_ratio": cpu["bare"] / cpu["build"],
        "shares": shares,
        "compute_views_per_s": float(build.last.views_per_second),
        "target": 0.9,
    }
    return out


def profile_build(args, build) -> None:
    import cProfile
    import io
    import pstats

    prof = cProfile.Profile()
    prof.enable()
    build()
    prof.disable()
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(40)
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(25)
    Path(args.profile).write_text(buf.getvalue())
    print(f"profile written to {args.profile}", file=sys.stderr)


# --------------------------------------------------------------------------- part 2: DataLoader


def part_loader(args, run, dev, folder: Path, fp_path: Path) -> None:
    import torchvision.transforms as T

    from fpkit import FingerprintDataset
    from fpkit.datasets import open_source

    src = open_source(f"imagefolder:{folder}", split="train", normalize="imagenet")
    tf = T.Compose(
        [
            T.RandomResizedCrop(args.image_size),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )
    plain_ds = src.torch_dataset(transform=tf)
    fp_ds = FingerprintDataset(fp_path, src.torch_dataset(), transform=tf)
    cuda = dev.type == "cuda"
    rows, raw = [], {}
    for w in [int(x) for x in args.workers.split(",") if x.strip()]:

        def make(ds, w=w):
            g = torch.Generator().manual_seed(args.seed)
            return torch.utils.data.DataLoader(
                ds,
                batch_size=args.loader_batch,
                shuffle=True,
                generator=g,
                num_workers=w,
                pin_memory=cuda,
                persistent_workers=w > 0,
            )

        def epoch(loader):
            def one_epoch():
                for batch in loader:
                    for t in batch:
                        if isinstance(t, torch.Tensor):
                            t.to(dev, non_blocking=cuda)

            return one_epoch

        loaders = {f"plain w={w}": make(plain_ds), f"fingerprint w={w}": make(fp_ds)}
        print(f"DataLoader num_workers={w}:", file=sys.stderr, flush=True)
        times = H.timeit({k: epoch(v) for k, v in loaders.items()}, repeats=args.loader_reps, warmup=1, device=dev)
        tp, tf_ = times[f"plain w={w}"], times[f"fingerprint w={w}"]
        cpu = H.median(times.cpu[f"plain w={w}"]) / H.median(times.cpu[f"fingerprint w={w}"]) if w == 0 else ""
        rows.append(
            [
                w,
                args.n / H.median(tp),
                H.spread(tp),
                args.n / H.median(tf_),
                H.spread(tf_),
                H.median(tp) / H.median(tf_),
                H.median([a / b for a, b in zip(tp, tf_)]),
                cpu,
            ]
        )
        raw[w] = times
        del loaders
    H.print_table(
        f"DataLoader throughput at {args.image_size} px, N={args.n} varied-size JPEGs, batch {args.loader_batch}, "
        f"RandomResizedCrop+flip+ToTensor+Normalize, median of {args.loader_reps} interleaved epochs "
        "(headline: ratio, target >= 0.95)",
        [
            "num_workers",
            "plain images/s",
            "spread",
            "FingerprintDataset images/s",
            "spread",
            "ratio fp/plain",
            "median per-epoch ratio",
            "CPU-time ratio (w=0)",
        ],
        rows,
    )
    run.results["loader"] = {"times": raw, "rows": rows, "target": 0.95}


# --------------------------------------------------------------------------- main


def main(argv=None) -> None:
    args = parse_args(argv)
    if not (args.data / "train").is_dir():
        sys.exit(H.missing_data_message(args.data / "train"))
    run = H.Run("real_images", "bench_real_images: fpkit build and FingerprintDataset at 224 px", args)
    dev = run.device
    from fpkit.teachers.architectures import resolve_arch

    tmp = Path(tempfile.mkdtemp(prefix="fpkit-bench-real-"))
    try:
        folder, sizes = make_folder(args, tmp / "data")
        hw = np.asarray(sizes)
        print(
            f"test data: {args.n} JPEGs, H {hw[:, 0].min()}..{hw[:, 0].max()}, W {hw[:, 1].min()}..{hw[:, 1].max()}, "
            f"{len(range(args.gray_every - 1, args.n, args.gray_every)) if args.gray_every else 0} grayscale\n",
            flush=True,
        )
        torch.manual_seed(args.seed)
        model = resolve_arch(args.arch, args.num_classes).eval()
        fp_path = part_build(args, run, dev, tmp, folder, model)
        if args.workers.strip():
            part_loader(args, run, dev, folder, fp_path)
        run.machine["load_average_at_end"] = H.load_average()
        print(f"load average at start {run.machine['load_average_at_start']}, at end {H.load_average()}")
        run.save()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
