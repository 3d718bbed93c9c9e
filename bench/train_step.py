"""Student training-step time: fingerprint loss and live KD, each over plain cross-entropy.

Variants, each with its own copy of the same student (same initial weights), its own SGD
(lr 0.05, momentum 0.9, weight decay 5e-4) and the same fixed batch (random images and labels:
step time does not depend on the pixels), interleaved turn by turn (--steps steps per turn):

* CE          -- ``loss = CE(student(x), y)``; backward; step.
* FP          -- ``logits, feats = LayerTap(student, ['layer3'])(x)``;
                 ``phi_s = FingerprintHead(R)(feats['layer3'])``;
                 ``loss = CE + 0.1 * fingerprint_loss(phi_s, phi_t)`` with phi_t the batch's rows
                 gathered from a float16 [N, r] table on the device (what FingerprintDataset's
                 ``table="index"`` mode + ``target_table()`` give); backward; step.
* FP+DistillLoss -- as FP, but the loss is ``fpkit.DistillLoss({'layer3': 1.0}, lam=0.1)`` (it also
                 returns its parts as floats: one host sync per step).
* live KD     -- teacher (--teacher-arch, random weights, eval) forward under inference_mode, then
                 ``loss = 0.1 * CE + 0.9 * kd_loss(s, t, T=4)`` (RepDistiller's weights); backward; step.

Headline: FP / CE step time (target <= 1.05) and live KD / CE.

Quick (defaults, ~2 min on a 2-core CPU):  python -m bench.train_step
Full:  python -m bench.train_step --batch-size 128 --steps 5 --reps 10
Smallest (a check that it runs):
    python -m bench.train_step --batch-size 4 --reps 1 --steps 1 --warmup 1 --table-rows 100 \
        --student-arch resnet8 --teacher-arch resnet8
"""

from __future__ import annotations

import argparse
import copy

import torch
import torch.nn.functional as F

from bench import harness as H


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        prog="python -m bench.train_step",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--batch-size", type=int, default=64, help="64 (RepDistiller) or 128 (the source writeup)")
    p.add_argument("--student-arch", default="resnet20")
    p.add_argument("--teacher-arch", default="resnet56")
    p.add_argument("--num-classes", type=int, default=100)
    p.add_argument("--r", type=int, default=128)
    p.add_argument("--table-rows", type=int, default=50_000, help="rows of the on-device fingerprint table")
    p.add_argument("--steps", type=int, default=2, help="steps per variant per turn")
    p.add_argument("--reps", type=int, default=5, help="interleaved turns")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per variant first")
    p.add_argument("--no-distill-loss", action="store_true", help="skip the FP+DistillLoss variant")
    p.add_argument("--channels-last", action="store_true", help="channels_last models and inputs (CUDA)")
    H.add_common_args(p)
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    run = H.Run("train_step", "bench_train_step: fingerprint loss and live KD over CE alone", args)
    dev = run.device
    from fpkit import DistillLoss, FingerprintHead, fingerprint_loss, kd_loss
    from fpkit.features import LayerTap
    from fpkit.models import get_cifar_resnet
    from fpkit.projection import make_projection

    torch.manual_seed(args.seed)
    mf = torch.channels_last if args.channels_last else torch.contiguous_format
    base = get_cifar_resnet(args.student_arch, args.num_classes).to(dev).to(memory_format=mf)
    teacher = get_cifar_resnet(args.teacher_arch, args.num_classes).to(dev).to(memory_format=mf).eval()
    teacher.requires_grad_(False)
    b = args.batch_size
    x = torch.randn(b, 3, 32, 32, device=dev).contiguous(memory_format=mf)
    y = torch.randint(0, args.num_classes, (b,), device=dev)
    idx = torch.randint(0, args.table_rows, (b,), device=dev)
    d = 256 if "x4" in args.student_arch else 64
    R = torch.from_numpy(make_projection(d, args.r, 0))
    table = (torch.randn(args.table_rows, args.r, device=dev) * 0.09).half()

    def sgd(m, extra=()):
        return torch.optim.SGD(list(m.parameters()) + list(extra), lr=0.05, momentum=0.9, weight_decay=5e-4)

    # ---- CE
    m_ce = copy.deepcopy(base).train()
    o_ce = sgd(m_ce)

    def step_ce():
        loss = F.cross_entropy(m_ce(x), y)
        o_ce.zero_grad(set_to_none=True)
        loss.backward()
        o_ce.step()

    # ---- fingerprint loss
    m_fp = copy.deepcopy(base).train()
    tap_fp = LayerTap(m_fp, ["layer3"])
    head_fp = FingerprintHead(R).to(dev)
    o_fp = sgd(m_fp, head_fp.parameters())

    def step_fp():
        logits, feats = tap_fp(x)
        phi_s = head_fp(feats["layer3"])
        phi_t = table[idx]
        loss = F.cross_entropy(logits, y) + 0.1 * fingerprint_loss(phi_s, phi_t)
        o_fp.zero_grad(set_to_none=True)
        loss.backward()
        o_fp.step()

    # ---- fingerprint loss through DistillLoss
    m_dl = copy.deepcopy(base).train()
    tap_dl = LayerTap(m_dl, ["layer3"])
    head_dl = FingerprintHead(R).to(dev)
    crit = DistillLoss({"layer3": 1.0}, lam=0.1)
    o_dl = sgd(m_dl, head_dl.parameters())

    def step_dl():
        logits, feats = tap_dl(x)
        loss, _parts = crit(logits, y, {"layer3": head_dl(feats["layer3"])}, {"layer3": table[idx]})
        o_dl.zero_grad(set_to_none=True)
        loss.backward()
        o_dl.step()

    # ---- live KD
    m_kd = copy.deepcopy(base).train()
    o_kd = sgd(m_kd)

    def step_kd():
        with torch.inference_mode():
            t_logits = teacher(x)
        s_logits = m_kd(x)
        loss = 0.1 * F.cross_entropy(s_logits, y) + 0.9 * kd_loss(s_logits, t_logits.clone(), T=4.0)
        o_kd.zero_grad(set_to_none=True)
        loss.backward()
        o_kd.step()

    variants = {"CE": step_ce, "FP (LayerTap+Head+fingerprint_loss)": step_fp}
    if not args.no_distill_loss:
        variants["FP via DistillLoss"] = step_dl
    variants[f"live KD ({args.teacher_arch} teacher)"] = step_kd

    # --warmup untimed steps of each variant, then --reps turns of --steps steps each: seconds per step
    per_step = H.timeit(variants, repeats=args.reps, number=args.steps, warmup=args.warmup, device=dev)
    ce = per_step["CE"]
    rows = []
    for k, v in per_step.items():
        pairs = [a / c for a, c in zip(v, ce)]
        rows.append([k, 1000 * H.median(v), H.spread(v), H.median(v) / H.median(ce), H.median(pairs), b / H.median(v)])
    H.print_table(
        f"Training step, student {args.student_arch} ({args.num_classes} classes), batch {b}, r={args.r}, "
        f"median of {args.reps} interleaved turns x {args.steps} steps",
        ["variant", "ms/step", "spread", "ratio to CE", "median per-turn ratio", "samples/s"],
        rows,
    )
    keys = list(per_step)
    head = [["FP / CE (target <= 1.05)", rows[1][3]]]
    if not args.no_distill_loss:
        head.append(["FP via DistillLoss / CE", rows[2][3]])
    head.append(["live KD / CE", rows[-1][3]])
    head.append(["live KD / FP", H.median(per_step[keys[-1]]) / H.median(per_step[keys[1]])])
    H.print_table("Headline", ["ratio", "value"], head)
    run.results.update(
        seconds_per_step=per_step,
        ms_per_step={k: [1000 * t for t in v] for k, v in per_step.items()},
        ratios={r[0]: r[1] for r in head},
    )
    run.save()


if __name__ == "__main__":
    main()
