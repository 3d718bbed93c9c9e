"""Print the distillation table of docs/RESULTS.md from training logs.

    python experiments/collect_results.py runs/small runs/small-emb

For each run folder: the teacher (its log or checkpoint), the fingerprint file's build summary
(build.json), and every student's final log line, as a markdown table with mean and spread over
seeds.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path

METHODS = ("ce", "kd", "fp-sample", "fp-class", "relational")


def final_line(log: Path) -> dict | None:
    lines = log.read_text().splitlines() if log.exists() else []
    last = json.loads(lines[-1]) if lines else None
    return last if last and last.get("final") else None


def table(run: Path) -> str:
    out = [f"### {run}", ""]
    t = final_line(run / "teacher" / "log.jsonl")
    if t:
        out.append(f"Teacher: {t['arch']}, test top-1 {t['test_top1']:.2f}% ({t['wall_seconds']:.0f} s).")
    ev = run / "teacher-test.json"
    if ev.exists() and ev.stat().st_size:
        ej = json.loads(ev.read_text())
        out.append(
            f"Teacher top-1 on the {ej['num_samples']:,} un-augmented test images: "
            f"{100 * ej['teacher_top1']:.2f}% (measured by `fpkit build --split test --views 1 --padding 0 "
            "--no-flip`)."
        )
    b = run / "build.json"
    if b.exists() and b.stat().st_size:
        bj = json.loads(b.read_text())
        out.append(
            f"Fingerprint build: {bj['num_samples']:,} images x {bj['views_per_sample']} views = "
            f"{bj['teacher_forwards']:,} teacher forwards, {bj['seconds']:.0f} s, file {bj['size_bytes']:,} "
            f"bytes, teacher top-1 on the built views {100 * bj['teacher_top1']:.1f}%."
        )
    out += [
        "",
        "| student | method | seeds | test top-1 (%) mean | spread (min..max) | minus ce, same seed: mean "
        "(min..max) | teacher forwards | file read (bytes) | wall s (mean) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    rows: dict[str, list[dict]] = defaultdict(list)
    for log in sorted(run.glob("s*/*/log.jsonl")):
        f = final_line(log)
        if f:
            rows[f["method"]].append(f)
    for m in METHODS:
        rs = rows.get(m, [])
        if not rs:
            out.append(f"| - | {m} | 0 | not run | | | | | |")
            continue
        acc = [r["test_top1"] for r in rs]
        spread = f"{min(acc):.2f}..{max(acc):.2f}" if len(acc) > 1 else "-"
        out.append(
            f"| {rs[0]['arch']} | {m} | {','.join(str(r['seed']) for r in rs)} | {statistics.mean(acc):.2f} | "
            f"{spread} | {_paired(rs, rows.get('ce', []))} | {rs[0]['teacher_forwards']:,} | "
            f"{rs[0]['fingerprint_bytes']:,} | "
            f"{statistics.mean(r['wall_seconds'] for r in rs):.0f} |"
        )
    return "\n".join(out)


def _paired(rs: list[dict], ce: list[dict]) -> str:
    """Accuracy minus the ce student's of the same seed (same initialisation and batch order), over
    the seeds both have: seed-to-seed noise largely cancels in these differences."""
    base = {r["seed"]: r["test_top1"] for r in ce}
    diffs = [r["test_top1"] - base[r["seed"]] for r in rs if r["seed"] in base]
    if not diffs or rs[0]["method"] == "ce":
        return "-"
    spread = f" ({min(diffs):+.2f}..{max(diffs):+.2f})" if len(diffs) > 1 else ""
    return f"{statistics.mean(diffs):+.2f}{spread}"


def per_seed(runs: list[Path]) -> str:
    """Test top-1 of every student, one row per (run folder, method), one column per seed."""
    acc: dict[tuple[str, str], dict[int, float]] = defaultdict(dict)
    for run in runs:
        for log in sorted(run.glob("s*/*/log.jsonl")):
            f = final_line(log)
            if f:
                acc[(str(run), f["method"])][f["seed"]] = f["test_top1"]
    seeds = sorted({s for row in acc.values() for s in row})
    out = ["| run | method | " + " | ".join(f"seed {s}" for s in seeds) + " |", "|---|---|" + "---|" * len(seeds)]
    for (run, method), row in acc.items():
        out.append(f"| {run} | {method} | " + " | ".join(f"{row[s]:.2f}" if s in row else "-" for s in seeds) + " |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--per-seed", action="store_true", help="print every student's accuracy by seed instead")
    args = ap.parse_args()
    if args.per_seed:
        print(per_seed(args.runs))
        return
    for run in args.runs:
        print(table(run))
        print()


if __name__ == "__main__":
    main()
