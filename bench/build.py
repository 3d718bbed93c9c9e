"""Throughput and memory of ``fpkit build`` (fpkit.build.build) on CIFAR-10 (JPEG q75) images.

Compared side by side, interleaved (fpkit, bare, PIL, fpkit, bare, PIL, ...), medians reported:

* fpkit      -- ``fpkit.build.build(BuildOptions(...))`` end to end on an N-image subset of CIFAR-10
                JPEG (an ImageFolder of symlinks, so JPEG decoding is included; ``--source memory``
                instead hands build() the decoded uint8 array as an in-memory source): loading the
                teacher, probing, decoding, per-sample digests, view cutting on the device,
                forward, pool/normalise/project/mean, memmaps and writing the HDF5 file.
                Also fpkit's own compute-only rate (BuildResult.views_per_second).
* bare       -- the teacher forward alone: the same N x K views made beforehand as float tensors on
                the device, batches of the same size, ``model(x)`` under inference_mode.  On CUDA the
                model and views are channels_last, as fpkit's build uses them.
* PIL        -- a one-image-at-a-time generator like the source writeup's: for every image, K times
                torchvision RandomCrop(32, padding=4) + RandomHorizontalFlip + ToTensor + Normalize on
                the PIL image, forward the K views, pool, normalise, project, mean (on --pil-n images).

Rates are teacher forwards per second (images x views / wall seconds).  The teacher is a randomly
initialised CIFAR ResNet (--arch): throughput does not depend on trained weights.

Memory: builds of --mem-n samples each run in a fresh subprocess, which reports its peak RSS
(ru_maxrss) and its RSS just before build() started; growth with N shows up as the difference.

Quick (defaults, ~2-3 min on a 2-core CPU):  python -m bench.build
Full:  python -m bench.build --n 2000 --pil-n 500 --reps 5 --mem-n 1000,10000,50000
Default batch vs best (issue 11 item 7; whole builds at each batch and at fpkit's default, interleaved):
    python -m bench.build --arch resnet56 --n 512 --threads 1 --build-sweep 32,64,128,256,512
Smallest (a check that it runs):
    python -m bench.build --n 20 --pil-n 2 --views 2 --reps 1 --arch resnet8 --batch-size 64 --mem-n 20
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from bench import harness as H


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        prog="python -m bench.build",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--n", type=int, default=256, help="images in the throughput subset (full: 2000)")
    p.add_argument("--pil-n", type=int, default=64, help="images for the one-at-a-time PIL generator (full: 500)")
    p.add_argument("--views", type=int, default=8, help="augmented views per image (K)")
    p.add_argument("--batch-size", type=int, default=512, help="views per teacher forward (fpkit --batch-size)")
    p.add_argument("--arch", default="resnet20", help="teacher CIFAR ResNet, random weights (resnet56 = the paper's)")
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--r", type=int, default=128)
    p.add_argument("--reps", type=int, default=3, help="interleaved repetitions of each variant")
    p.add_argument(
        "--source",
        choices=["folder", "memory"],
        default="folder",
        help="folder: imagefolder of the JPEGs (decoding included); memory: decoded uint8 array",
    )
    p.add_argument("--num-workers", type=int, default=0, help="fpkit build --num-workers")
    p.add_argument("--split", default="train")
    p.add_argument("--data", type=Path, default=H.DEFAULT_DATA, help="CIFAR-10 JPEG root (train/, test/)")
    p.add_argument("--mem-n", default="1000,2000,4000", help="comma list of N for the memory runs ('' skips)")
    p.add_argument("--mem-views", type=int, default=1, help="views per sample in the memory runs")
    p.add_argument("--mem-arch", default="resnet8", help="teacher of the memory runs (small: the runs are about N)")
    p.add_argument(
        "--batch-sweep",
        default="",
        help="comma list of batch sizes (views) for an extra bare-forward sweep, e.g. 8,32,64,128,512",
    )
    p.add_argument(
        "--build-sweep",
        default="",
        help="comma list of batch sizes (views), e.g. 32,64,128,256,512: instead of the comparison above, "
        "time the whole fpkit build at each of them and at fpkit's default (no --batch-size), "
        "interleaved, with the bare forward at the same batches, as ratios to the best",
    )
    p.add_argument(
        "--profile",
        metavar="OUT",
        default=None,
        help="also cProfile one fpkit build and write the top functions to OUT",
    )
    p.add_argument("--mem-child", type=int, default=None, help=argparse.SUPPRESS)
    H.add_common_args(p)
    return p.parse_args(argv)


# --------------------------------------------------------------------------- the three variants


def memory_source(images: np.ndarray, labels, classes, name="cifar10-jpeg-subset:memory"):
    from fpkit.datasets import ArrayImageDataset, ImageSource

    labels = np.asarray(labels, dtype=np.int64)
    return ImageSource(
        name,
        "train",
        list(classes),
        labels,
        H.CIFAR10_MEAN,
        H.CIFAR10_STD,
        (3, 32, 32),
        _array=images,
        _make_torch=lambda transform=None, target_transform=None: ArrayImageDataset(
            images, labels, transform, target_transform
        ),
    )


def fpkit_build(args, dev, teacher_path, arch, dataset, out: Path, views: int, mem_src=None, batch_size="args"):
    """One end-to-end build; returns fpkit's BuildResult (``batch_size``: views per forward,
    --batch-size unless given; None: fpkit's default)."""
    import fpkit.build as B
    import fpkit.build.run as R

    batch_size = args.batch_size if batch_size == "args" else batch_size
    if mem_src is not None:
        R.open_source = lambda *a, **k: mem_src  # in-memory source (benchmark only)
    opts = B.BuildOptions(
        teacher=str(teacher_path),
        arch=arch,
        num_classes=args.num_classes,
        dataset=dataset,
        split=args.split,
        normalize="cifar10",
        r=args.r,
        views=views,
        batch_size=batch_size,
        device=str(dev),
        output=str(out),
        force=True,
        num_workers=args.num_workers,
        tables=("sample", "class"),
    )
    if out.exists():
        out.unlink()
    return B.build(opts, quiet=True)


def make_bare(model, images_u8: np.ndarray, views: int, batch: int, dev, seed: int):
    """Pre-make every view (float32, normalised, on the device); return a callable that runs the
    forwards in batches of ``batch`` views."""
    from fpkit.augment import ViewPolicy, make_views

    policy = ViewPolicy(4, True)
    u8 = torch.from_numpy(images_u8).permute(0, 3, 1, 2).contiguous()
    params = torch.from_numpy(policy.views_for(np.arange(len(u8)), views, seed))
    mean = torch.tensor(H.CIFAR10_MEAN)
    std = torch.tensor(H.CIFAR10_STD)
    x = make_views(u8, params, 4, mean, std)  # [N*K, 3, 32, 32] float32
    cl = dev.type == "cuda"
    batches = [
        x[i : i + batch].to(dev).contiguous(memory_format=torch.channels_last if cl else torch.contiguous_format)
        for i in range(0, len(x), batch)
    ]
    m = model.to(dev)
    if cl:
        m = m.to(memory_format=torch.channels_last)

    def run(limit=None):
        with torch.inference_mode():
            for xb in batches[:limit]:
                m(xb)

    return run, len(x)


def make_pil(model, paths, views: int, dev, R: torch.Tensor, seed: int):
    """The writeup-style generator: image by image, view by view through PIL/torchvision."""
    import torchvision.transforms as T
    from PIL import Image

    tf = T.Compose(
        [
            T.RandomCrop(32, padding=4),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize(H.CIFAR10_MEAN, H.CIFAR10_STD),
        ]
    )
    m = model.to(dev)
    feats = {}
    m.layer3.register_forward_hook(lambda mod, inp, out: feats.__setitem__("x", out))
    Rd = R.to(dev)

    def run(limit=None):
        torch.manual_seed(seed)
        out = []
        with torch.inference_mode():
            for p in paths[:limit]:
                with open(p, "rb") as fh:
                    img = Image.open(fh).convert("RGB")
                x = torch.stack([tf(img) for _ in range(views)]).to(dev)
                m(x)
                pooled = feats["x"].mean(dim=(2, 3))
                phi = F.normalize(pooled, dim=1) @ Rd
                out.append(phi.mean(dim=0).cpu().numpy())
        return np.stack(out)

    return run


# --------------------------------------------------------------------------- memory child


def mem_child(args) -> None:
    """Run one build of --mem-child samples (folder source) and print a JSON line with RSS."""
    dev = H.resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    n = args.mem_child
    with tempfile.TemporaryDirectory(prefix="fpkit-bench-mem-") as tmp:
        tmp = Path(tmp)
        paths, labels, classes = H.cifar_files(args.data, args.split, n)
        H.subset_folder(paths, labels, classes, tmp / "data", args.split)
        tpath = tmp / "teacher.pt"
        H.random_teacher(args.mem_arch, args.num_classes, tpath, args.seed)
        import fpkit.build  # noqa: F401  (imports before the baseline reading)

        before_rss = H.current_rss_mib()
        before_peak = H.max_rss_mib()
        t0 = time.perf_counter()
        res = fpkit_build(args, dev, tpath, args.mem_arch, f"imagefolder:{tmp / 'data'}", tmp / "fp.h5", args.mem_views)
        wall = time.perf_counter() - t0
        print(
            json.dumps(
                {
                    "n": n,
                    "rss_before_mib": before_rss,
                    "peak_before_mib": before_peak,
                    "peak_mib": H.max_rss_mib(),
                    "rss_after_mib": H.current_rss_mib(),
                    "seconds": wall,
                    "forwards_per_s": res.views_per_second,
                    "file_bytes": res.size_bytes,
                    "cuda_peak_mib": torch.cuda.max_memory_allocated() / 2**20 if dev.type == "cuda" else None,
                }
            )
        )


def run_memory(args, ns: list[int]) -> list[dict]:
    rows = []
    for n in ns:
        cmd = [
            "--mem-child",
            str(n),
            "--device",
            args.device,
            "--data",
            str(args.data),
            "--split",
            args.split,
            "--mem-arch",
            args.mem_arch,
            "--mem-views",
            str(args.mem_views),
            "--num-classes",
            str(args.num_classes),
            "--r",
            str(args.r),
            "--batch-size",
            str(args.batch_size),
            "--num-workers",
            str(args.num_workers),
            "--seed",
            str(args.seed),
        ]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        argv, env = H.module_command("bench.build", *cmd)
        print(f"  memory run N={n} ...", file=sys.stderr, flush=True)
        proc = subprocess.run(argv, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"memory child N={n} failed")
        rec = json.loads(proc.stdout.strip().splitlines()[-1])
        rec["children_maxrss_mib"] = H.max_rss_mib("children")  # cumulative max over children so far
        rows.append(rec)
    return rows


# --------------------------------------------------------------------------- build sweep


def build_sweep(args, run, dev, tpath, dataset, out: Path, images, fresh_model, mem_src) -> None:
    """--build-sweep: the whole build at each batch and at fpkit's default, interleaved; the bare
    forward at the same batches for reference; each as a ratio to the best of its kind."""
    from fpkit.format import open_fingerprints

    batches = [int(x) for x in args.build_sweep.split(",") if x.strip()]
    n_views = args.n * args.views
    real = {}  # variant -> views per forward the build really used (the file's compute record)

    def builder(name, bs):
        def go():
            fpkit_build(args, dev, tpath, args.arch, dataset, out, args.views, mem_src, batch_size=bs)
            real[name] = open_fingerprints(out, verify=False, load_views=False).metadata.compute.batch_size

        return go

    default = "fpkit build, default batch"
    variants = {default: builder(default, None)}
    variants.update({f"fpkit build, batch {bs}": builder(f"fpkit build, batch {bs}", bs) for bs in batches})
    for bs in batches:
        fn, _ = make_bare(fresh_model(), images, args.views, bs, dev, args.seed)
        variants[f"bare forward, batch {bs}"] = fn
    print("warm-up ...", file=sys.stderr, flush=True)
    variants[default]()  # one build warms the code every build runs; the bare runs warm on one batch each
    for name, fn in variants.items():
        if name.startswith("bare"):
            fn(1)
    times = H.timeit(variants, repeats=args.reps, device=dev)
    rate = {k: n_views / times.median(k) for k in times}
    best_build = max(v for k, v in rate.items() if k.startswith("fpkit"))
    best_bare = max(v for k, v in rate.items() if k.startswith("bare"))
    rows = []
    for k in times:
        best = best_build if k.startswith("fpkit") else best_bare
        rows.append([k, real.get(k, ""), times.median(k), rate[k], rate[k] / best, times.spread(k)])
    H.print_table(
        f"Batch sweep, teacher {args.arch} (random weights), N={args.n} x K={args.views} = {n_views} views, "
        f"r={args.r}, source={args.source}, device {dev}, {torch.get_num_threads()} thread(s), "
        f"median of {args.reps} interleaved reps",
        ["variant", "real batch", "median s", "views/s", "vs best of kind", "spread"],
        rows,
    )
    best_name = max((k for k in rate if k.startswith("fpkit")), key=rate.get)
    headline = {
        "default_batch": real.get(default),
        "best_batch": real.get(best_name),
        "default_over_best": rate[default] / best_build,
        "default_over_best_per_rep_median": H.median(
            [min(times[k][i] for k in times if k.startswith("fpkit")) / times[default][i] for i in range(args.reps)]
        ),
        "best_build_over_best_bare": best_build / best_bare,
    }
    H.print_table(
        "Headline (target: default / best >= 0.95)",
        ["ratio", "value"],
        [
            [
                f"fpkit default (batch {headline['default_batch']}) / best build (batch {headline['best_batch']})",
                headline["default_over_best"],
            ],
            [
                "  (median over reps of default / fastest build of that rep)",
                headline["default_over_best_per_rep_median"],
            ],
            ["best build / best bare forward", headline["best_build_over_best_bare"]],
        ],
    )
    run.results.update(build_sweep=times, views=n_views, rates=rate, real_batch=real, headline=headline)
    run.save()


# --------------------------------------------------------------------------- main


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.mem_child is not None:
        mem_child(args)
        return
    run = H.Run("build", "bench_build: fpkit build vs bare teacher forward vs one-at-a-time PIL generator", args)
    dev = run.device
    from fpkit.models import get_cifar_resnet
    from fpkit.projection import make_projection

    tmp = Path(tempfile.mkdtemp(prefix="fpkit-bench-build-"))
    try:
        paths, labels, classes = H.cifar_files(args.data, args.split, args.n)
        H.subset_folder(paths, labels, classes, tmp / "data", args.split)
        images = H.decode(paths)
        tpath = tmp / "teacher.pt"
        sd = H.random_teacher(args.arch, args.num_classes, tpath, args.seed)

        def fresh_model():
            m = get_cifar_resnet(args.arch, args.num_classes)
            m.load_state_dict(sd)
            return m.eval().requires_grad_(False)

        mem_src = memory_source(images, labels, classes) if args.source == "memory" else None
        dataset = f"imagefolder:{tmp / 'data'}"
        out = tmp / "fp.h5"
        if args.build_sweep:
            build_sweep(args, run, dev, tpath, dataset, out, images, fresh_model, mem_src)
            return
        results = []

        def run_fpkit():
            results.append(fpkit_build(args, dev, tpath, args.arch, dataset, out, args.views, mem_src))

        bare, n_bare = make_bare(fresh_model(), images, args.views, args.batch_size, dev, args.seed)
        R = torch.from_numpy(make_projection(64 if "x4" not in args.arch else 256, args.r, 0))
        pil = make_pil(
            fresh_model(), paths[:: max(1, len(paths) // args.pil_n)][: args.pil_n], args.views, dev, R, args.seed
        )
        n_pil = min(args.pil_n, len(paths)) * args.views

        print("warm-up ...", file=sys.stderr, flush=True)
        run_fpkit()
        bare(1)
        pil(4)
        results.clear()
        times = H.timeit(
            {"fpkit build (end to end)": run_fpkit, "bare forward": bare, "PIL one-at-a-time": pil},
            repeats=args.reps,
            device=dev,
        )
        n_fp = args.n * args.views
        t_fp, t_bare, t_pil = (times[k] for k in times)
        compute_rates = [r.views_per_second for r in results]
        # wall time not spent in fpkit's compute loop: opening the source, loading the teacher,
        # probing the layer, creating the work folder, writing the HDF5 file, removing the work folder
        fixed = [w - n_fp / r.views_per_second for w, r in zip(t_fp, results) if r.views_per_second > 0]
        rate = {
            "fpkit": n_fp / H.median(t_fp),
            "bare": n_bare / H.median(t_bare),
            "pil": n_pil / H.median(t_pil),
            "fpkit_compute_only": H.median(compute_rates),
        }
        # per-repetition ratios (each pair measured back to back), then their median
        pair_bare = [(n_fp / a) / (n_bare / b) for a, b in zip(t_fp, t_bare)]
        pair_pil = [(n_fp / a) / (n_pil / b) for a, b in zip(t_fp, t_pil)]
        H.print_table(
            f"Throughput, teacher {args.arch} (random weights), K={args.views} views, batch {args.batch_size} views, "
            f"r={args.r}, source={args.source}, N={args.n} (PIL: {min(args.pil_n, args.n)} images), "
            f"median of {args.reps} interleaved reps",
            ["variant", "forwards", "median s", "forwards/s", "spread"],
            [
                ["fpkit build, end to end", n_fp, H.median(t_fp), rate["fpkit"], H.spread(t_fp)],
                ["fpkit build, compute loop only", n_fp, "", rate["fpkit_compute_only"], H.spread(compute_rates)],
                ["bare model(x) on pre-made views", n_bare, H.median(t_bare), rate["bare"], H.spread(t_bare)],
                ["PIL one image at a time", n_pil, H.median(t_pil), rate["pil"], H.spread(t_pil)],
            ],
        )
        ratios = {
            "fpkit_over_bare": rate["fpkit"] / rate["bare"],
            "fpkit_compute_over_bare": rate["fpkit_compute_only"] / rate["bare"],
            "fpkit_over_pil": rate["fpkit"] / rate["pil"],
            "fpkit_over_bare_per_rep_median": H.median(pair_bare),
            "fpkit_over_pil_per_rep_median": H.median(pair_pil),
        }
        H.print_table(
            "Ratios (headline: fpkit end to end / bare forward, target >= 0.9)",
            ["ratio", "value"],
            [
                ["fpkit end-to-end / bare forward", ratios["fpkit_over_bare"]],
                ["  (median of per-rep ratios)", ratios["fpkit_over_bare_per_rep_median"]],
                ["fpkit compute loop / bare forward", ratios["fpkit_compute_over_bare"]],
                ["fpkit fixed cost per build (s, not in the loop)", H.median(fixed) if fixed else float("nan")],
                ["fpkit end-to-end / PIL one-at-a-time", ratios["fpkit_over_pil"]],
                ["  (median of per-rep ratios)", ratios["fpkit_over_pil_per_rep_median"]],
            ],
        )

        sweep, sweep_times = {}, {}
        bs_list = [int(x) for x in args.batch_sweep.split(",") if x.strip()]
        if bs_list:
            runs = {}
            for bs in bs_list:
                fn, nv = make_bare(fresh_model(), images, args.views, bs, dev, args.seed)
                fn(1)
                runs[f"bare forward, batch {bs}"] = fn
            sweep_times = H.timeit(runs, repeats=args.reps, device=dev)
            sweep = {k: n_bare / H.median(v) for k, v in sweep_times.items()}
            best = max(sweep.values())
            H.print_table(
                f"Bare forward by batch size ({n_bare} views, median of {args.reps} interleaved reps)",
                ["variant", "forwards/s", "vs best"],
                [[k, v, v / best] for k, v in sweep.items()],
            )

        prof_top = None
        if args.profile:
            import cProfile
            import io
            import pstats

            pr = cProfile.Profile()
            pr.enable()
            run_fpkit()
            pr.disable()
            s = io.StringIO()
            pstats.Stats(pr, stream=s).sort_stats("cumulative").print_stats(40)
            prof_top = s.getvalue()
            Path(args.profile).write_text(prof_top)
            print(f"cProfile of one fpkit build written to {args.profile}")

        mem_rows = []
        ns = [int(x) for x in args.mem_n.split(",") if x.strip()]
        if ns:
            print("memory runs (one subprocess each) ...", file=sys.stderr, flush=True)
            mem_rows = run_memory(args, ns)
            H.print_table(
                f"Peak memory of one build per subprocess ({args.mem_arch} random weights, {args.mem_views} view(s), "
                f"r={args.r}, folder source); growth = peak - RSS just before build()",
                ["N", "RSS before MiB", "peak MiB", "growth MiB", "growth KiB/sample", "file bytes", "s"],
                [
                    [
                        r["n"],
                        r["rss_before_mib"],
                        r["peak_mib"],
                        r["peak_mib"] - r["rss_before_mib"],
                        1024 * (r["peak_mib"] - r["rss_before_mib"]) / r["n"],
                        r["file_bytes"],
                        r["seconds"],
                    ]
                    for r in mem_rows
                ],
            )
            if len(mem_rows) >= 2:
                a, b = mem_rows[0], mem_rows[-1]
                slope = ((b["peak_mib"] - a["peak_mib"]) * 1024) / (b["n"] - a["n"])
                print(
                    f"  peak RSS slope between N={a['n']} and N={b['n']}: {slope:.2f} KiB per sample "
                    f"(float32 memmap rows alone: {args.r * 4 / 1024:.2f} KiB per sample)\n"
                )
        run.results.update(
            seconds=times,
            forwards={"fpkit": n_fp, "bare": n_bare, "pil": n_pil},
            rates=rate,
            ratios=ratios,
            fixed_seconds=fixed,
            compute_rates=compute_rates,
            batch_sweep=sweep,
            batch_sweep_seconds=sweep_times,
            memory=mem_rows,
        )
        run.save()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
