"""The honest efficacy protocol: every method tuned alike on a validation split, then re-run on fresh seeds.

    python experiments/efficacy.py prepare --regime b      # subset, fingerprint files, teacher's test accuracy
    python experiments/efficacy.py run --regime b --jobs 2 # tuning, then the chosen settings on 5 seeds
    python experiments/efficacy.py status --regime b       # what is done, running, left
    python experiments/efficacy.py report --regime b       # the markdown of docs/RESULTS.md

Protocol (one regime):

1. **Validation split.**  Every student trains on the regime's subset of the CIFAR-10 (JPEG) train
   split and is validated on ``val_per_class`` other images per class of the same split
   (``train.py --val-per-class``, disjoint by pixels); the test split is evaluated once, after the
   last epoch, and never used for a choice.
2. **Tuning.**  Each variant runs its grid (:data:`VARIANTS`) once, on ``TUNE_SEED``; the setting
   with the highest final-epoch validation accuracy is chosen (ties: the first in grid order).
3. **Seeds.**  The chosen setting of every variant (and the ce baseline) runs on ``SEEDS`` (1-5),
   seeds the tuning never saw, so the test accuracies reported carry no selection bias.  Every
   student of one seed starts from the same weights and sees its batches in the same order, so
   the paired difference to the same seed's ce student is the figure to read; its 95% t-interval
   over the seeds says whether it is within noise.

The queue runs in priority order (the main methods first, each tuned and then seeded before the
next one starts), so a run stopped early leaves whole rows, not half of every row.  Every job
writes ``log.jsonl`` and ``cmd.txt`` under ``experiments/efficacy-runs/<regime>/`` (the two files git
keeps: commit them and a later checkout goes on where this one stopped); finished jobs are skipped
and a job whose log was written in the last two minutes is taken to be running elsewhere, so
``run`` can be stopped and started again at will.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from collect_results import describe_difference, final_line  # noqa: E402

TUNE_SEED = 0
SEEDS = (1, 2, 3, 4, 5)
LAMBDAS = (0.1, 1.0, 3.0, 10.0, 30.0)
KD_GRID = [{"kd_T": t, "kd_weight": w} for t in (1.0, 2.0, 4.0, 8.0) for w in (0.5, 0.9)]
LIVE_SECONDS = 120  # a log written this recently belongs to a run in progress
RECORDS = Path("experiments/efficacy-runs")
# regime c's smaller grids (compute): KD weight 0.9 and warm-up won every comparison of regime b; lambda
# goes one step past b's edge (30 won there at the top of the grid)
REGIME_C_KD_GRID = [{"kd_T": t, "kd_weight": 0.9} for t in (1.0, 2.0, 4.0, 8.0)]
REGIME_C_FP_GRID = [{"lambda": lam, "warmup": None} for lam in (3.0, 10.0, 30.0, 100.0)]


@dataclass(frozen=True)
class Regime:
    """A data setting: who teaches, who learns on what, and the fingerprint files it needs."""

    name: str
    teacher: str
    train_per_class: int
    test_per_class: int
    val_per_class: int
    student: str = "resnet8"
    epochs: int = 15
    views: int = 8
    source: str = ".data/cifar10-jpeg"
    description: str = ""
    variants: tuple[str, ...] | None = None  # the rows this regime runs, in priority order (None: VARIANTS)
    grids: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # per-variant grid overrides

    @property
    def subset(self) -> str:
        """The students' image folder (hard links into ``source``, by experiments/make_subset.py)."""
        return ".data/c10-small" if self.train_per_class == 500 else f".data/c10-{self.train_per_class}"

    @property
    def out(self) -> Path:
        """Where the regime's students write: kept in git (log.jsonl, cmd.txt; see .gitignore), so a
        regime longer than one session goes on where the last one stopped."""
        return RECORDS / self.name

    def rows(self) -> list[Variant]:
        """The regime's variants in priority order, each with this regime's grid."""
        picked = VARIANTS if self.variants is None else [BY_NAME[name] for name in self.variants]
        return [replace(v, grid=self.grids[v.name]) if v.name in self.grids else v for v in picked]

    def files(self) -> dict[str, list[str]]:
        """The fingerprint files its rows read: name -> extra ``fpkit build`` options."""
        used = {v.file for v in self.rows()}
        return {name: extra for name, extra in FILES.items() if name in used}


REGIMES = {
    "b": Regime(
        "b",
        teacher="fpkit/data/embedded_teacher.pt",
        train_per_class=500,
        test_per_class=100,
        val_per_class=100,
        description="data-limited: the embedded resnet8 teacher (trained on all 50,000 train images, 79.7% "
        "test top-1) distilled into resnet8 students that see 500 images per class; 15 epochs",
    ),
    "c": Regime(
        "c",
        teacher="fpkit/data/embedded_teacher.pt",
        train_per_class=1000,
        test_per_class=300,
        val_per_class=100,
        description="twice the data: the same teacher, resnet8 students on 1,000 images per class (10,000); 15 epochs",
        variants=("ce", "kd", "fp-sample", "fp-replay", "file-kd-mean", "file-kd-full"),  # b's main rows
        grids={  # 4 runs per method, along the axis that mattered in regime b; the other fixed at b's winner
            "kd": REGIME_C_KD_GRID,
            "file-kd-mean": REGIME_C_KD_GRID,
            "file-kd-full": REGIME_C_KD_GRID,
            "fp-sample": REGIME_C_FP_GRID,
            "fp-replay": REGIME_C_FP_GRID,
        },
    ),
}

# fingerprint files of a regime: name -> extra `fpkit build` options
FILES = {
    "fp": [],
    "fp-mean": ["--logits", "mean"],
    "fp-replay-full": ["--replay", "--logits", "full"],
    "fp-replay-topk": ["--replay", "--logits", "topk:5"],
}


def _fp_grid(warmups: tuple[bool, ...] = (True, False)) -> list[dict[str, Any]]:
    return [{"lambda": lam, "warmup": None if wu else 0} for lam in LAMBDAS for wu in warmups]


@dataclass(frozen=True)
class Variant:
    """A row of the table: a train.py method, the file it reads, and the grid it is tuned over."""

    name: str
    method: str
    file: str | None
    grid: list[dict[str, Any]] = field(default_factory=lambda: [{}])
    note: str = ""


VARIANTS = [  # in priority order: the queue tunes and seeds each before the next
    Variant("ce", "ce", None, note="cross-entropy only: the baseline every difference is taken to"),
    Variant("kd", "kd", None, KD_GRID, "live Hinton KD, teacher run on every batch"),
    Variant("fp-sample", "fp-sample", "fp", _fp_grid(), "per-sample fingerprints"),
    Variant("file-kd-mean", "file-kd", "fp-mean", KD_GRID, "KD from stored logits averaged over the 8 views"),
    Variant("file-kd-full", "file-kd", "fp-replay-full", KD_GRID, "KD from each recorded view's stored logits"),
    Variant(
        "fp-replay", "fp-replay", "fp-replay-full", _fp_grid((True,)), "per-view fingerprints on the recorded views"
    ),
    Variant(
        "fp-kd",
        "fp-kd",
        "fp-mean",
        [{"lambda": lam, "kd_T": t, "kd_weight": w} for lam in (1.0, 10.0) for t in (1.0, 4.0) for w in (0.5, 0.9)],
        "per-sample fingerprints + KD from the mean stored logits",
    ),
    Variant("fp-class", "fp-class", "fp", _fp_grid((True,)), "per-class fingerprints"),
    Variant("relational", "relational", "fp", _fp_grid((True,)), "pairwise cosines of per-sample fingerprints"),
    Variant("file-kd-topk5", "file-kd", "fp-replay-topk", KD_GRID, "KD from each recorded view's top-5 logits"),
]
BY_NAME = {v.name: v for v in VARIANTS}
# what replaying views, adding KD and sparsifying logits change, seed by seed
COMPARISONS = [
    ("fp-replay", "fp-sample"),
    ("fp-kd", "fp-sample"),
    ("fp-class", "fp-sample"),
    ("file-kd-full", "file-kd-mean"),
    ("file-kd-topk5", "file-kd-full"),
]


def tag(setting: dict[str, Any]) -> str:
    """A folder name for a setting, e.g. ``lambda10-wu0`` or ``T4-w0.9``."""
    names = {"lambda": "lambda", "warmup": "wu", "kd_T": "T", "kd_weight": "w"}
    parts = []
    for k, v in setting.items():
        if k == "warmup":
            parts.append("wu" + ("default" if v is None else str(v)))
        else:
            parts.append(f"{names[k]}{v:g}")
    return "-".join(parts) or "default"


def train_argv(regime: Regime, variant: Variant, setting: dict[str, Any], seed: int, out: Path) -> list[str]:
    """The experiments/train.py command line of one student."""
    argv = [
        sys.executable,
        "experiments/train.py",
        "student",
        "--method",
        variant.method,
        "--arch",
        regime.student,
        "--data",
        f"imagefolder:{regime.subset}",
        "--normalize",
        "cifar10",
        "--epochs",
        str(regime.epochs),
        "--device",
        "cpu",
        "--threads",
        "1",
        "-q",
        "--seed",
        str(seed),
        "--val-data",
        f"imagefolder:{regime.source}",
        "--val-per-class",
        str(regime.val_per_class),
        "--out",
        str(out),
    ]
    if variant.method == "kd":
        argv += ["--teacher", regime.teacher]
    if variant.file:
        argv += ["--fingerprints", str(regime.out / "files" / f"{variant.file}.h5")]
    for k, v in setting.items():
        if k == "lambda":
            argv += ["--lambda", f"{v:g}"]
        elif k == "warmup" and v is not None:
            argv += ["--warmup", str(v)]
        elif k == "kd_T":
            argv += ["--kd-T", f"{v:g}"]
        elif k == "kd_weight":  # the two weights sum to 1, as RepDistiller's 0.1 / 0.9
            argv += ["--kd-weight", f"{v:g}", "--kd-ce-weight", f"{1 - v:g}"]
    return argv


# --------------------------------------------------------------------------- jobs


@dataclass(frozen=True)
class Job:
    variant: Variant
    setting: dict[str, Any]
    seed: int
    out: Path


def tuning_jobs(regime: Regime, v: Variant) -> list[Job]:
    if len(v.grid) == 1:
        return []  # nothing to choose
    return [Job(v, s, TUNE_SEED, regime.out / "tune" / v.name / tag(s)) for s in v.grid]


def chosen_setting(regime: Regime, v: Variant) -> tuple[dict[str, Any], list[tuple[dict[str, Any], float]]] | None:
    """The setting with the best final validation accuracy and every tried (setting, val top-1),
    or None while a tuning run is unfinished."""
    if len(v.grid) == 1:
        return v.grid[0], []
    tried = []
    for job in tuning_jobs(regime, v):
        f = final_line(job.out / "log.jsonl")
        if f is None:
            return None
        tried.append((job.setting, float(f["val_top1"])))
    best = max(range(len(tried)), key=lambda i: (tried[i][1], -i))
    return tried[best][0], tried


def seed_jobs(regime: Regime, v: Variant, setting: dict[str, Any]) -> list[Job]:
    return [Job(v, setting, s, regime.out / "seeds" / v.name / f"s{s}") for s in SEEDS]


def state(job: Job) -> str:
    """done, running (log written in the last LIVE_SECONDS) or todo."""
    log = job.out / "log.jsonl"
    if final_line(log) is not None:
        return "done"
    if log.exists() and time.time() - log.stat().st_mtime < LIVE_SECONDS:
        return "running"
    return "todo"


def next_jobs(regime: Regime, busy: set[Path]) -> list[Job]:
    """Runnable jobs in priority order: a variant's tuning, then its seeds, variant by variant."""
    out = []
    for v in regime.rows():
        tune = tuning_jobs(regime, v)
        out += [j for j in tune if j.out not in busy and state(j) == "todo"]
        chosen = chosen_setting(regime, v)
        if chosen is not None:
            out += [j for j in seed_jobs(regime, v, chosen[0]) if j.out not in busy and state(j) == "todo"]
    return out


def start(regime: Regime, job: Job) -> subprocess.Popen:
    job.out.mkdir(parents=True, exist_ok=True)
    argv = train_argv(regime, job.variant, job.setting, job.seed, job.out)
    (job.out / "cmd.txt").write_text(shlex.join(argv) + "\n")
    err = open(job.out / "stderr.txt", "w")
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err, env={**os.environ, "OMP_NUM_THREADS": "1"})


def run(regime: Regime, jobs: int, deadline: float | None) -> int:
    """Keep ``jobs`` students training until the queue is empty (or the deadline: no new start after it)."""
    running: dict[Path, subprocess.Popen] = {}
    failed = 0
    while True:
        for path, proc in list(running.items()):
            if proc.poll() is not None:
                del running[path]
                if proc.returncode != 0:
                    failed += 1
                    print(f"[efficacy] FAILED ({proc.returncode}): {path} (see stderr.txt)", flush=True)
                else:
                    print(f"[efficacy] done: {path}", flush=True)
        late = deadline is not None and time.time() > deadline
        todo = [] if late else next_jobs(regime, set(running))
        while todo and len(running) < jobs:
            job = todo.pop(0)
            running[job.out] = start(regime, job)
            print(f"[efficacy] start: {job.out}", flush=True)
        if not running:
            return 1 if failed else 0
        time.sleep(2)


# --------------------------------------------------------------------------- prepare


def prepare(regime: Regime, fpkit: str) -> None:
    """The regime's subset, fingerprint files and the teacher's accuracy on the test subset."""
    py = sys.executable
    if not Path(regime.subset, "train").is_dir():
        subprocess.run(
            [py, "experiments/make_subset.py", regime.source, regime.subset]
            + ["--train-per-class", str(regime.train_per_class), "--test-per-class", str(regime.test_per_class)],
            check=True,
        )
    files = regime.out / "files"
    files.mkdir(parents=True, exist_ok=True)
    common = ["--normalize", "cifar10", "--device", "cpu", "-q", "--json"]
    for name, extra in regime.files().items():
        path = files / f"{name}.h5"
        if not path.exists():
            cmd = [fpkit, "build", regime.teacher, f"imagefolder:{regime.subset}", "--views", str(regime.views)]
            cmd += common + extra + ["-o", str(path)]
            print(f"[efficacy] {shlex.join(cmd)}", flush=True)
            with open(files / f"{name}.json", "w") as fh:
                subprocess.run(cmd, check=True, stdout=fh)
    test = files / "teacher-test.json"
    if not test.exists() or not test.stat().st_size:
        cmd = [fpkit, "build", regime.teacher, f"imagefolder:{regime.subset}", "--split", "test", "--views", "1"]
        cmd += ["--padding", "0", "--no-flip", "--tables", "class", "--force", "-o", str(files / "teacher-test.h5")]
        with open(test, "w") as fh:
            subprocess.run(cmd + common, check=True, stdout=fh)


# --------------------------------------------------------------------------- report


def _records(jobs: list[Job]) -> list[dict]:
    return [f for j in jobs if (f := final_line(j.out / "log.jsonl"))]


def summary(regime: Regime) -> dict[str, Any]:
    """Per variant: the chosen setting, what tuning saw, and the seeds' test accuracies."""
    out: dict[str, Any] = {}
    for v in regime.rows():
        chosen = chosen_setting(regime, v)
        if chosen is None:
            continue
        setting, tried = chosen
        jobs = seed_jobs(regime, v, setting)
        records = _records(jobs)
        out[v.name] = {
            "method": v.method,
            "setting": setting,
            "tried": tried,
            "records": records,
            "command": shlex.join(train_argv(regime, v, setting, 1, jobs[0].out)).replace(sys.executable, "python"),
        }
    return out


def report(regime: Regime) -> str:
    s = summary(regime)
    ce = s.get("ce", {}).get("records", [])
    kd = s.get("kd", {}).get("records", [])
    lines = [
        f"Regime {regime.name}: {regime.description}. Validation: {regime.val_per_class} images per class of the "
        f"train split outside the subset; test: {regime.test_per_class} per class. Tuned on seed {TUNE_SEED}, "
        f"reported on seeds {', '.join(map(str, SEEDS))}.",
        "",
        "| method | chosen on validation | tried | test top-1 % (mean, sd) | minus ce, same seed [95% CI] "
        "| minus live kd, same seed [95% CI] | seeds | teacher forwards | file bytes |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in s.items():
        rs = row["records"]
        if not rs:
            lines.append(f"| {name} | {tag(row['setting'])} | {len(row['tried'])} | not run | | | | | |")
            continue
        acc = [r["test_top1"] for r in rs]
        sd = statistics.stdev(acc) if len(acc) > 1 else 0.0
        diff = "-" if name == "ce" else describe_difference(_paired(rs, ce))
        vs_kd = "-" if name in ("ce", "kd") else describe_difference(_paired(rs, kd))
        lines.append(
            f"| {name} | {tag(row['setting'])} | {len(row['tried']) or '-'} | {statistics.mean(acc):.2f} ({sd:.2f}) | "
            f"{diff} | {vs_kd} | {len(rs)} | {rs[0]['teacher_forwards']:,} | {rs[0]['fingerprint_bytes']:,} |"
        )
    pairs = [(a, b) for a, b in COMPARISONS if s.get(a, {}).get("records") and s.get(b, {}).get("records")]
    if pairs:
        lines += ["", "Other paired differences (test top-1, same seed, 95% CI):", ""]
        for a, b in pairs:
            lines.append(f"* {a} minus {b}: {describe_difference(_paired(s[a]['records'], s[b]['records']))}")
    lines += ["", "Validation accuracy of every setting tried (seed 0, final epoch; the chosen one in bold):", ""]
    for name, row in s.items():
        if row["tried"]:
            cells = [
                (f"**{tag(st)} {val:.1f}**" if st == row["setting"] else f"{tag(st)} {val:.1f}")
                for st, val in row["tried"]
            ]
            lines.append(f"* {name}: " + ", ".join(cells))
    lines += ["", "Commands (seed 1; the other seeds change `--seed` and `--out`):", ""]
    for name, row in s.items():
        lines.append(f"* {name}: `{row['command']}`")
    return "\n".join(lines)


def _paired(rs: list[dict], ce: list[dict]) -> list[float]:
    base = {r["seed"]: r["test_top1"] for r in ce}
    return [r["test_top1"] - base[r["seed"]] for r in rs if r["seed"] in base]


def status(regime: Regime) -> str:
    counts: dict[str, int] = {}
    lines = []
    for v in regime.rows():
        tune = tuning_jobs(regime, v)
        chosen = chosen_setting(regime, v)
        seeds = seed_jobs(regime, v, chosen[0]) if chosen else []
        states = [state(j) for j in tune + seeds]
        for st in states:
            counts[st] = counts.get(st, 0) + 1
        left = len(tune) + len(SEEDS) - states.count("done")
        pick = tag(chosen[0]) if chosen else "tuning"
        lines.append(
            f"{v.name:14s} tuned {sum(state(j) == 'done' for j in tune)}/{len(tune)}  chosen {pick:24s} "
            f"seeds {sum(state(j) == 'done' for j in seeds)}/{len(SEEDS)}  left {left}"
        )
    return "\n".join(lines + [f"jobs: {counts}"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("command", choices=("prepare", "run", "status", "report", "json"))
    ap.add_argument("--regime", choices=sorted(REGIMES), default="b")
    ap.add_argument("--jobs", type=int, default=2, help="students trained at once (one thread each)")
    ap.add_argument("--hours", type=float, default=None, help="start no new student after this many hours")
    ap.add_argument("--fpkit", default=str(Path(sys.executable).with_name("fpkit")))
    args = ap.parse_args(argv)
    regime = REGIMES[args.regime]
    if args.command == "prepare":
        prepare(regime, args.fpkit)
    elif args.command == "run":
        prepare(regime, args.fpkit)
        deadline = time.time() + 3600 * args.hours if args.hours else None
        return run(regime, args.jobs, deadline)
    elif args.command == "status":
        print(status(regime))
    elif args.command == "report":
        print(report(regime))
    else:
        print(json.dumps(summary(regime), indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
