"""Print the distillation table of docs/RESULTS.md from training logs.

    python experiments/collect_results.py runs/small runs/small-emb

For each run folder: the teacher (its log or checkpoint), the fingerprint file's build summary
(build.json), and every student's final log line, as a markdown table with mean and spread over
seeds.

Paired differences: each student's test accuracy minus the ce student's of the same seed, with a
95% t-interval over seeds (``mean +- t_{0.975, n-1} * sd / sqrt(n)``); "within noise" when the
interval contains 0.  ``--select`` instead scans every log under the folders, groups students by
method and setting (the ``hparams`` of their final line), picks each method's setting by mean
*validation* accuracy (``val_top1``, from ``train.py --val-per-class``) and reports that setting's
test accuracy and paired difference.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from collections import defaultdict
from pathlib import Path

METHODS = ("ce", "kd", "fp-sample", "fp-class", "relational", "fp-replay", "file-kd", "fp-kd")
CLASSIC = METHODS[:5]  # listed as "not run" when missing; the others only when present


# two-sided 95% critical values of Student's t, by degrees of freedom
T975 = {
    1: 12.706,
    2: 4.303,
    3: 3.182,
    4: 2.776,
    5: 2.571,
    6: 2.447,
    7: 2.365,
    8: 2.306,
    9: 2.262,
    10: 2.228,
    11: 2.201,
    12: 2.179,
    13: 2.160,
    14: 2.145,
    15: 2.131,
    16: 2.120,
    17: 2.110,
    18: 2.101,
    19: 2.093,
    20: 2.086,
    21: 2.080,
    22: 2.074,
    23: 2.069,
    24: 2.064,
    25: 2.060,
    26: 2.056,
    27: 2.052,
    28: 2.048,
    29: 2.045,
    30: 2.042,
}


def t975(df: int) -> float:
    """The 0.975 quantile of Student's t with ``df`` degrees of freedom (table to 30, then a
    Cornish-Fisher expansion, within 0.001 of the exact value)."""
    if df < 1:
        raise ValueError("a t-interval needs at least two values")
    if df in T975:
        return T975[df]
    z = 1.959964
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


def t_interval(values: list[float]) -> tuple[float, float, float]:
    """(mean, low, high): the 95% t-interval of the mean; low = high = mean for one value."""
    m = statistics.mean(values)
    if len(values) < 2:
        return m, m, m
    half = t975(len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return m, m - half, m + half


def paired_differences(rs: list[dict], ce: list[dict], key: str = "test_top1") -> list[float]:
    """``key`` minus the ce student's of the same seed, over the seeds both have."""
    base = {r["seed"]: r[key] for r in ce}
    return [r[key] - base[r["seed"]] for r in rs if r["seed"] in base]


def describe_difference(diffs: list[float]) -> str:
    """'+1.23 [-0.40, +2.86] within noise' (or 'n=1, no interval')."""
    if not diffs:
        return "-"
    m, lo, hi = t_interval(diffs)
    if len(diffs) < 2:
        return f"{m:+.2f} (one seed, no interval)"
    noise = " within noise" if lo <= 0 <= hi else ""
    return f"{m:+.2f} [{lo:+.2f}, {hi:+.2f}]{noise}"


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
        "[95% CI] | teacher forwards | file read (bytes) | wall s (mean) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    rows: dict[str, list[dict]] = defaultdict(list)
    for log in sorted(run.glob("s*/*/log.jsonl")):
        f = final_line(log)
        if f:
            rows[f["method"]].append(f)
    for m in [m for m in METHODS if m in CLASSIC or m in rows]:
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
    if rs[0]["method"] == "ce":
        return "-"
    return describe_difference(paired_differences(rs, ce))


def setting_key(record: dict) -> str:
    return json.dumps(record.get("hparams", {}), sort_keys=True)


def select_settings(records: list[dict]) -> dict[str, tuple[str, list[dict], list[tuple[str, float, int]]]]:
    """Each method's setting with the highest mean validation accuracy over its seeds.

    Returns {method: (chosen setting, its records, [(setting, mean val, seeds) for every setting])};
    records without ``val_top1`` are ignored (selection never looks at the test split).  Ties go to
    the setting with more seeds, then the first in sorted order.
    """
    groups: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        if r.get("val_top1") is not None:
            groups[r["method"]][setting_key(r)].append(r)
    chosen = {}
    for method, settings in groups.items():
        table = sorted(
            ((k, statistics.mean(r["val_top1"] for r in rs), len(rs)) for k, rs in settings.items()),
            key=lambda t: (-t[1], -t[2], t[0]),
        )
        chosen[method] = (table[0][0], settings[table[0][0]], table)
    return chosen


def selected_table(runs: list[Path]) -> str:
    """The --select table: every method at its validation-selected setting."""
    records = [f for run in runs for log in sorted(run.rglob("log.jsonl")) if (f := final_line(log))]
    records = [r for r in records if r.get("method") != "teacher"]
    chosen = select_settings(records)
    ce = chosen.get("ce", (None, [], []))[1]
    out = [
        "| method | selected setting | settings tried | val top-1 mean | seeds | test top-1 mean | "
        "minus ce, same seed: mean [95% CI] | teacher forwards |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for m in [m for m in METHODS if m in chosen] + sorted(set(chosen) - set(METHODS)):
        key, rs, tried = chosen[m]
        diff = "-" if m == "ce" else describe_difference(paired_differences(rs, ce))
        out.append(
            f"| {m} | `{key}` | {len(tried)} | {tried[0][1]:.2f} | {','.join(str(r['seed']) for r in rs)} | "
            f"{statistics.mean(r['test_top1'] for r in rs):.2f} | {diff} | {rs[0]['teacher_forwards']:,} |"
        )
    return "\n".join(out)


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
    ap.add_argument(
        "--select", action="store_true", help="pick each method's setting by mean validation accuracy (all logs)"
    )
    args = ap.parse_args()
    if args.select:
        print(selected_table(args.runs))
        return
    if args.per_seed:
        print(per_seed(args.runs))
        return
    for run in args.runs:
        print(table(run))
        print()


if __name__ == "__main__":
    main()
