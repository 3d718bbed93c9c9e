"""One GPU check of fpkit, sized to finish in about 4 minutes on one H200 (``bench/gpu_check.sh``).

(a) tests   the CUDA-marked tests (``pytest -m cuda tests/test_cuda.py``).
(b) agree   the same file built on the CPU and on CUDA, for the embedded teacher on the embedded
            sample and for a random-weight resnet56 on ``synthetic:NxC``: float32 tables with
            torch's default TF32 settings, with TF32 off, and under ``--autocast bfloat16``; max
            abs difference and min cosine of the sample, class and per-view tables against the
            CPU build, and whether the identity datasets (labels, digests, view parameters) match.
(c) speed   ``fpkit.build.build`` end to end and its compute loop over the bare teacher forward on
            views made beforehand, on CUDA: a CIFAR resnet56 (32 px, pad-crop, in-memory
            synthetic source) and a torchvision resnet50 at 224 px (``--policy resized-crop
            --image-size 224`` on a folder of 256 x 256 JPEGs this script writes), float32 and
            bfloat16 autocast.  Random weights: throughput does not depend on trained weights.
(d) student ``python -m bench.train_step --device cuda``: the student step ratios (FP / CE, ...).

Without CUDA (or with ``--smoke``) it runs a CPU fallback in seconds: (a) and (d) print
"no CUDA: skipped", (b) compares two tiny CPU builds (the comparison code runs; the figures are
trivially exact), (c) runs tiny CPU timings that mean nothing.  tests/bench/test_gpu_check.py
runs that mode in CI.

Writes ``gpu_check.json`` (every figure, the machine, the GPU), ``train_step.json`` and
``tests.log`` to ``--out DIR`` (default: ``$OUT`` when set, else bench/results/gpu_check-<UTC>/).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench import harness as H

SKIP = "no CUDA: skipped"


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.gpu_check", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--out", type=Path, default=None, help="folder for the JSON outputs (default: $OUT, else bench/results/)"
    )
    p.add_argument("--smoke", action="store_true", help="tiny CPU-sized settings even on CUDA (a check that it runs)")
    p.add_argument("--skip", default="", help="comma list of parts to leave out: tests,agree,speed,student")
    p.add_argument("--reps", type=int, default=3, help="interleaved repetitions of each timed variant")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    # every part of the GPU path, with the CPU standing in for the GPU at tiny sizes (tests this script)
    p.add_argument("--rehearse", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def out_dir(args) -> Path:
    if args.out is not None:
        return args.out
    if os.environ.get("OUT"):
        return Path(os.environ["OUT"])
    return H.RESULTS / f"gpu_check-{_dt.datetime.now(_dt.timezone.utc).strftime('%Y%m%d-%H%M%S')}"


def sizes(full: bool) -> dict:
    """Problem sizes: ``full`` on a GPU, else tiny CPU ones."""
    if full:
        return dict(
            agree_limit=500, agree_synth=512, agree_views=4, r56_n=4096, r56_views=8, r50_n=512, r50_views=2,
            r50_size=224, r50_jpeg=256, workers=min(8, max(1, (os.cpu_count() or 2) - 2)),
        )  # fmt: skip
    return dict(
        agree_limit=24, agree_synth=16, agree_views=2, r56_n=16, r56_views=1, r50_n=10, r50_views=1, r50_size=64,
        r50_jpeg=72, workers=0,
    )  # fmt: skip


def build(tmp: Path, name: str, **kw):
    """One ``fpkit.build.build``; returns (BuildResult, FingerprintFile)."""
    from fpkit.build import BuildOptions
    from fpkit.build import build as fp_build
    from fpkit.format import open_fingerprints

    out = tmp / f"{name}.h5"
    opts = BuildOptions(output=str(out), force=True, **kw)
    res = fp_build(opts, quiet=True)
    return res, open_fingerprints(out)


@contextlib.contextmanager
def tf32(enabled: bool):
    """cuDNN and cuBLAS TF32 on or off (restored afterwards)."""
    old = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old


def compare(ref, other) -> dict:
    """Agreement of ``other``'s float tables with ``ref``'s (max abs difference, min row cosine)."""
    out: dict = {
        "identity_equal": bool(
            np.array_equal(ref.labels, other.labels)
            and np.array_equal(ref.sample_digests, other.sample_digests)
            and (ref.view_params is None or np.array_equal(ref.view_params, other.view_params))
        )
    }
    for kind in ("sample", "class", "views"):
        a = ref.table(kind).reshape(-1, ref.table(kind).shape[-1]).astype(np.float64)
        b = other.table(kind).reshape(a.shape).astype(np.float64)
        norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
        both_zero = ~a.any(1) & ~b.any(1)  # a class without samples in a tiny subset: equal, cosine 1
        cos = np.where(both_zero, 1.0, (a * b).sum(1) / np.maximum(norms, 1e-30))
        out[kind] = {
            "bit_identical": bool(np.array_equal(ref.table(kind), other.table(kind))),
            "max_abs_diff": float(np.abs(a - b).max()),
            "max_abs_value": float(np.abs(a).max()),
            "min_cosine": float(cos.min()),
        }
    return out


def part_agree(args, acc, gpu_path: bool, z: dict, tmp: Path, report: dict) -> list[list]:
    """(b): the same file on the CPU and on CUDA."""
    teacher56 = tmp / "resnet56-random.pt"
    H.random_teacher("resnet56", 10, teacher56, seed=0)
    common = dict(views=z["agree_views"], dtype="float32", replay=True, batch_size=128, chunk_size=128)
    cases = {
        "embedded teacher, embedded sample": dict(teacher="embedded", dataset="embedded", limit=z["agree_limit"]),
        "resnet56 (random), synthetic": dict(
            teacher=str(teacher56), arch="resnet56", num_classes=10, dataset=f"synthetic:{z['agree_synth']}x10"
        ),
    }
    rows, results = [], {}
    for case, kw in cases.items():
        t0 = time.perf_counter()
        ref_res, ref = build(tmp, "cpu", device="cpu", **kw, **common)
        variants = {}
        d = str(acc)
        if gpu_path:
            variants[f"{d} float32 (torch default TF32)"] = build(tmp, "acc", device=d, **kw, **common)
            with tf32(False):
                variants[f"{d} float32, TF32 off"] = build(tmp, "acc32", device=d, **kw, **common)
            variants[f"{d} --autocast bfloat16"] = build(tmp, "acc_bf16", device=d, autocast="bfloat16", **kw, **common)
        else:
            variants["cpu again (no CUDA: the comparison code only)"] = build(tmp, "cpu2", device="cpu", **kw, **common)
        results[case] = {}
        for name, (res, fp) in variants.items():
            c = compare(ref, fp)
            c["teacher_top1"] = {"cpu": ref_res.teacher_top1, "this": res.teacher_top1}
            results[case][name] = c
            rows.append(
                [
                    case,
                    name,
                    c["sample"]["max_abs_diff"],
                    c["sample"]["min_cosine"],
                    c["views"]["min_cosine"],
                    c["class"]["min_cosine"],
                    "yes" if c["sample"]["bit_identical"] else "no",
                    "yes" if c["identity_equal"] else "NO",
                ]
            )
        print(f"  (b) {case}: {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    report["agree"] = {"sizes": {k: z[k] for k in ("agree_limit", "agree_synth", "agree_views")}, "cases": results}
    H.print_table(
        f"(b) CPU vs {acc.type.upper()}: float32 tables (r=128, K={z['agree_views']}, batch 128 views) "
        "against the CPU build",
        ["case", "variant", "sample max|d|", "sample min cos", "views min cos", "class min cos", "bit-identical",
         "labels/digests/views equal"],
        rows,
    )  # fmt: skip
    return rows


def _bare(model, batches, dev, autocast: str | None):
    amp = dict(device_type=dev.type, dtype=getattr(torch, autocast or "bfloat16"), enabled=autocast is not None)

    def run():
        with torch.inference_mode(), torch.autocast(**amp):
            for xb in batches:
                model(xb)

    return run


def _jpeg_folder(folder: Path, n: int, size: int, classes: int = 10) -> None:
    """``n`` synthetic JPEGs of ``size`` x ``size`` in an ImageFolder layout (class_k/NNNN.jpg)."""
    from PIL import Image

    from fpkit.datasets import synthetic_images

    images, labels = synthetic_images(n, classes, seed=0, size=size)
    for i, (img, y) in enumerate(zip(images, labels)):
        d = folder / f"class_{int(y)}"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(d / f"{i:05d}.jpg", quality=90)


def _time_pair(args, dev, label: str, n_fwd: int, fpkit_fn, bare_fn, results: list) -> dict:
    fpkit_fn()  # warm-up (cuDNN plans, allocator, page cache)
    bare_fn()
    results.clear()
    t = H.timeit({"fpkit": fpkit_fn, "bare": bare_fn}, repeats=args.reps, device=dev)
    fp_rate, bare_rate = n_fwd / H.median(t["fpkit"]), n_fwd / H.median(t["bare"])
    loop = H.median([r.views_per_second for r in results])
    return {
        "variant": label,
        "forwards": n_fwd,
        "fpkit_views_per_s": fp_rate,
        "fpkit_loop_views_per_s": loop,
        "bare_views_per_s": bare_rate,
        "fpkit_over_bare": fp_rate / bare_rate,
        "loop_over_bare": loop / bare_rate,
        "per_rep_fpkit_over_bare_median": H.median([b / a for a, b in zip(t["fpkit"], t["bare"])]),
        "timings": t,
    }


def part_speed(args, dev, gpu_path: bool, z: dict, tmp: Path, report: dict) -> list[list]:
    """(c): build throughput over the bare teacher forward."""
    from bench.build import make_bare
    from fpkit.datasets import synthetic_images
    from fpkit.models import get_cifar_resnet

    cl = dev.type == "cuda"
    precisions = (None, "bfloat16") if gpu_path else (None,)
    rows, out = [], []
    results: list = []
    # resnet56, 32 px, pad-crop, in-memory synthetic source (no decoding)
    n, k = z["r56_n"], z["r56_views"]
    t56 = tmp / "resnet56-speed.pt"
    sd = H.random_teacher("resnet56", 10, t56, seed=1)
    model = get_cifar_resnet("resnet56", 10)
    model.load_state_dict(sd)
    images, _ = synthetic_images(n, 10, seed=0)
    bare_run, _ = make_bare(model.eval().requires_grad_(False), images, k, 512 if cl else 64, dev, 0)
    for autocast in precisions:

        def fp(autocast=autocast):
            results.append(
                build(
                    tmp, "speed56", teacher=str(t56), arch="resnet56", num_classes=10, dataset=f"synthetic:{n}x10",
                    views=k, device=str(dev), autocast=autocast, normalize="cifar10",
                )[0]
            )  # fmt: skip

        bare = _bare_from_make_bare(bare_run, autocast, dev)
        out.append(_time_pair(args, dev, f"resnet56 32px {autocast or 'float32'}", n * k, fp, bare, results))
    del bare_run
    # torchvision resnet50 at 224 px: resized crops of 256 x 256 JPEGs
    import torchvision

    n, k, size = z["r50_n"], z["r50_views"], z["r50_size"]
    folder = tmp / "jpeg224"
    t = time.perf_counter()
    _jpeg_folder(folder, n, z["r50_jpeg"])
    print(f"  (c) {n} JPEGs written in {time.perf_counter() - t:.1f} s", file=sys.stderr, flush=True)
    torch.manual_seed(2)
    r50 = torchvision.models.resnet50(num_classes=10).eval().requires_grad_(False)
    t50 = tmp / "resnet50-random.pt"
    torch.save(r50.state_dict(), t50)
    r50 = r50.to(dev).to(memory_format=torch.channels_last if cl else torch.contiguous_format)
    batch = 512 if cl else 8
    g = torch.Generator().manual_seed(0)
    views = torch.randn(n * k, 3, size, size, generator=g)
    mf = torch.channels_last if cl else torch.contiguous_format
    batches = [views[i : i + batch].to(dev).contiguous(memory_format=mf) for i in range(0, len(views), batch)]
    for autocast in precisions:

        def fp50(autocast=autocast):
            results.append(
                build(
                    tmp, "speed50", teacher=str(t50), arch="torchvision:resnet50", num_classes=10,
                    dataset=f"imagefolder:{folder}", views=k, policy="resized-crop", image_size=size,
                    device=str(dev), autocast=autocast, num_workers=z["workers"], normalize="imagenet",
                    batch_size=batch,
                )[0]
            )  # fmt: skip

        out.append(
            _time_pair(
                args, dev, f"resnet50 {size}px {autocast or 'float32'} (JPEG decode, {z['workers']} workers)",
                n * k, fp50, _bare(r50, batches, dev, autocast), results,
            )
        )  # fmt: skip
    for r in out:
        rows.append(
            [r["variant"], r["forwards"], r["fpkit_views_per_s"], r["fpkit_loop_views_per_s"], r["bare_views_per_s"],
             r["fpkit_over_bare"], r["loop_over_bare"]]
        )  # fmt: skip
    report["speed"] = {"device": str(dev), "sizes": z, "variants": out}
    H.print_table(
        f"(c) build throughput on {dev.type.upper()} over the bare teacher forward on views made beforehand "
        f"(views/s, median of {args.reps} interleaved; TF32 as torch defaults)",
        ["teacher", "views", "fpkit end to end", "fpkit loop", "bare forward", "end-to-end / bare", "loop / bare"],
        rows,
    )
    return rows


def _bare_from_make_bare(run_fn, autocast: str | None, dev):
    """bench.build.make_bare's forward, under autocast when asked."""
    amp = dict(device_type=dev.type, dtype=getattr(torch, autocast or "bfloat16"), enabled=autocast is not None)

    def run():
        with torch.autocast(**amp):
            run_fn()

    return run


def part_tests(out: Path, report: dict) -> list:
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "cuda", "tests/test_cuda.py", "-p", "no:cacheprovider"]
    t = time.perf_counter()
    p = subprocess.run(cmd, cwd=H.REPO, capture_output=True, text=True, timeout=150)
    (out / "tests.log").write_text(p.stdout + p.stderr)
    last = (p.stdout.strip().splitlines() or [""])[-1]
    counts = {k: int(v) for v, k in re.findall(r"(\d+) (passed|failed|skipped|error|errors|deselected)", last)}
    report["tests"] = {"command": " ".join(cmd), "returncode": p.returncode, "summary": last, "counts": counts,
                       "seconds": time.perf_counter() - t}  # fmt: skip
    print(p.stdout[-3000:])
    return ["(a) CUDA-marked tests", last or f"exit {p.returncode}", "pass" if p.returncode == 0 else "FAIL"]


def part_student(args, acc, full: bool, out: Path, report: dict) -> dict:
    import json

    path = out / "train_step.json"
    size = (
        ["--batch-size", "128", "--steps", "5", "--reps", "5"]
        if full
        else ["--batch-size", "4", "--steps", "1", "--reps", "1", "--warmup", "0", "--table-rows", "64"]
    )
    cmd, env = H.module_command(
        "bench.train_step", "--device", acc.type, *size, "--channels-last", "--out", str(path)
    )  # fmt: skip
    p = subprocess.run(cmd, env=env, cwd=H.REPO, capture_output=True, text=True, timeout=180)
    print(p.stdout[-4000:], p.stderr[-2000:] if p.returncode else "")
    ratios = json.loads(path.read_text())["results"].get("ratios", {}) if path.exists() else {}
    report["student"] = {"command": " ".join(cmd[1:]), "returncode": p.returncode, "ratios": ratios}
    return ratios


def main(argv=None) -> None:
    args = parse_args(argv)
    t_start = time.perf_counter()
    cuda = torch.cuda.is_available()
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    full = cuda and not args.smoke
    gpu_path = full or args.rehearse  # rehearse: the CPU stands in for the GPU
    dev = torch.device("cuda" if cuda else "cpu")
    if args.threads:
        torch.set_num_threads(args.threads)
    out = out_dir(args)
    out.mkdir(parents=True, exist_ok=True)
    info = H.machine(dev, "gpu_check: fpkit on CUDA (tests, CPU/CUDA agreement, build speed, student step)")
    H.print_header(info)
    gpu = torch.cuda.get_device_name(dev) if cuda else None
    print(f"GPU: {gpu}" if cuda else "GPU: none (no CUDA): CPU fallback, tiny sizes; the figures mean nothing")
    report: dict = {"gpu": gpu, "cuda": cuda, "full": full, "machine": info, "args": vars(args)}
    summary: list[list] = []
    z = sizes(full)
    if not full:
        args.reps = 1
    tmp = Path(tempfile.mkdtemp(prefix="fpkit-gpu-check-"))
    try:
        if "tests" in skip:
            summary.append(["(a) CUDA-marked tests", "skipped (--skip)", ""])
        elif not cuda and not args.rehearse:
            print(f"(a) CUDA-marked tests: {SKIP}")
            summary.append(["(a) CUDA-marked tests", SKIP, ""])
        else:
            summary.append(part_tests(out, report))
        if "agree" not in skip:
            for row in part_agree(args, dev, gpu_path, z, tmp, report):
                summary.append([f"(b) {row[0]}: {row[1]}", "sample max|d| / min cos", f"{row[2]:.3g} / {row[3]:.7f}"])
        if "speed" not in skip:
            for row in part_speed(args, dev if full else torch.device("cpu"), gpu_path, z, tmp, report):
                label = f"(c) {row[0]}" + ("" if full else " (CPU smoke, not a measurement)")
                summary.append([label, "end-to-end / bare, loop / bare", f"{row[5]:.3f}, {row[6]:.3f}"])
        if "student" in skip:
            summary.append(["(d) student step on CUDA", "skipped (--skip)", ""])
        elif not gpu_path:
            print(f"(d) student step ratios: {SKIP if not cuda else 'skipped (--smoke)'}")
            summary.append(["(d) student step on CUDA", SKIP if not cuda else "skipped (--smoke)", ""])
        else:
            for k, v in part_student(args, dev, full, out, report).items():
                summary.append([f"(d) {k}", "ratio", f"{v:.3f}"])
    finally:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    report["seconds"] = time.perf_counter() - t_start
    H.print_table(
        f"gpu_check summary on {gpu or 'CPU (no CUDA)'} ({report['seconds']:.0f} s)", ["check", "figure", "value"],
        summary,
    )  # fmt: skip
    report["summary"] = summary
    H.save_json(out / "gpu_check.json", report)
    failed = report.get("tests", {}).get("returncode", 0) != 0 or report.get("student", {}).get("returncode", 0) != 0
    bad = any(
        not c["identity_equal"] for case in report.get("agree", {}).get("cases", {}).values() for c in case.values()
    )
    if failed or bad:
        sys.exit(1)


if __name__ == "__main__":
    main()
