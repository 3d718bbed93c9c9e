"""Killing `fpkit build` at any moment never leaves a file that reads as complete but is not, and
`--resume` then finishes the same file an uninterrupted build writes.

Each case starts ``python -m fpkit build TEACHER synthetic:200x10 -o out.h5 --chunk-size 16
--batch-size 32 --views 2 --device cpu`` in a subprocess and SIGKILLs it when a trigger is seen
(time since start, the work folder appearing, N finished chunks, the writer's temporary file
appearing = during the final write), plus a random delay.  Then:

* ``out.h5`` does not exist, or is complete and ``fpkit verify`` passes;
* ``fpkit build ... --resume`` (through the CLI, in-process) exits 0 and its tables equal an
  uninterrupted build's exactly; no ``.out.h5.writing-*`` or ``.out.h5.partial`` remains.

A SIGINT (Ctrl-C) case expects exit code 130, a one-line message that mentions --resume, and no
traceback.

Larger settings:  FPKIT_KILL_CASES=30 FPKIT_KILL_SEED=1 pytest tests/trust/test_kill.py -s
(cases beyond the six fixed triggers draw a random trigger and delay).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import _trust_helpers as H
import numpy as np
import pytest
from _support import write_tiny_teacher
from click.testing import CliRunner

from fpkit.cli import main
from fpkit.format import open_fingerprints, verify_fingerprints

KILLS = max(1, H.env_int("FPKIT_KILL_CASES", 6))
SEED = H.env_int("FPKIT_KILL_SEED", 0)
PARALLEL = max(1, H.env_int("FPKIT_KILL_PARALLEL", 2))
N, CHUNK = 200, 16
CHUNKS = (N + CHUNK - 1) // CHUNK
ARGS = ["synthetic:200x10", "--chunk-size", str(CHUNK), "--batch-size", "32", "--views", "2", "--device", "cpu"]

# (trigger, value, extra random delay bound in s)
FIXED = [
    ("time", 0.3, 0.5),  # during interpreter start / imports: nothing written yet
    ("partial", 0, 0.0),  # the moment the work folder appears
    ("chunks", 1, 0.05),  # after the first finished chunk
    ("chunks", CHUNKS // 2, 0.05),
    ("chunks", CHUNKS - 1, 0.0),  # last chunk computing
    ("writing", 0, 0.0),
]  # during the final write (temporary file present)


def cli(*args):
    old = signal.getsignal(signal.SIGTERM)  # `fpkit build` installs a SIGTERM handler
    try:
        return CliRunner().invoke(main, [str(a) for a in args], prog_name="fpkit")
    finally:
        signal.signal(signal.SIGTERM, old)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("kill")
    teacher = write_tiny_teacher(d / "teacher.pt")
    ref = d / "ref"
    ref.mkdir()
    res = cli("build", teacher, *ARGS, "-o", ref / "out.h5", "-q")
    assert res.exit_code == 0, res.output
    return teacher, open_fingerprints(ref / "out.h5")


def _state(folder: Path) -> tuple[bool, int, bool]:
    """(work folder exists, finished chunks, writer's temporary file exists)."""
    names = os.listdir(folder)
    partial = ".out.h5.partial" in names
    done = 0
    if partial:
        try:
            done = sum(n.endswith(".json") for n in os.listdir(folder / ".out.h5.partial" / "done"))
        except FileNotFoundError:
            pass
    return partial, done, any(n.startswith(".out.h5.writing-") for n in names)


def kill_case(teacher: Path, folder: Path, trigger: str, value: float, delay: float, sig=signal.SIGKILL) -> dict:
    folder.mkdir()
    t0 = time.monotonic()
    p = subprocess.Popen(
        [H.PYTHON, "-m", "fpkit", "build", str(teacher), *ARGS, "-o", str(folder / "out.h5")],
        env=H.subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen = None
    while p.poll() is None and time.monotonic() - t0 < 300:
        partial, done, writing = _state(folder)
        hit = {"time": time.monotonic() - t0 >= value, "partial": partial, "chunks": done >= value, "writing": writing}[
            trigger
        ]
        if hit:
            seen = (partial, done, writing)
            if delay:
                time.sleep(delay)
            p.send_signal(sig)
            break
        time.sleep(0.001)
    out, err = p.communicate(timeout=300)
    return {
        "trigger": trigger,
        "value": value,
        "delay": round(delay, 3),
        "rc": p.returncode,
        "seen": seen,
        "stderr": err,
        "at": _state(folder),
        "seconds": round(time.monotonic() - t0, 2),
    }


def _check_after(folder: Path, teacher: Path, ref) -> None:
    out = folder / "out.h5"
    if out.exists():  # the final name appears only complete
        assert verify_fingerprints(out) == []
        assert cli("verify", out).exit_code == 0
    res = cli("build", teacher, *ARGS, "-o", out, "--resume", "-q")
    assert res.exit_code == 0, res.output
    fp = open_fingerprints(out)
    for kind in ("sample", "class"):
        assert np.array_equal(fp.table(kind), ref.table(kind)), kind
    assert np.array_equal(fp.labels, ref.labels) and np.array_equal(fp.sample_digests, ref.sample_digests)
    assert fp.metadata.dataset == ref.metadata.dataset
    left = sorted(n for n in os.listdir(folder) if n != "out.h5")
    assert left == [], f"stray files after --resume: {left}"


def test_sigkill_then_resume(setup, tmp_path):
    teacher, ref = setup
    rng = np.random.default_rng(SEED)
    plan = [(t, v, float(rng.uniform(0, b))) for t, v, b in FIXED][:KILLS]
    while len(plan) < KILLS:
        t = str(rng.choice(["time", "chunks", "writing", "partial"]))
        v = {"time": float(rng.uniform(0.2, 8.0)), "chunks": int(rng.integers(1, CHUNKS)), "writing": 0, "partial": 0}[
            t
        ]
        plan.append((t, v, float(rng.uniform(0, 0.05 if t != "time" else 0.5))))
    with ThreadPoolExecutor(PARALLEL) as ex:
        results = list(ex.map(lambda a: kill_case(teacher, tmp_path / f"case{a[0]}", *a[1]), enumerate(plan)))
    for i, r in enumerate(results):
        print(
            f"\n[kill] case {i}: trigger {r['trigger']}={r['value']} +{r['delay']}s -> rc {r['rc']}, "
            f"state at kill (partial, chunks done, writing) {r['seen']}, after {r['at']}, {r['seconds']} s"
        )
    for i, r in enumerate(results):
        assert r["rc"] in (-signal.SIGKILL, 0), r["stderr"][-2000:]
        _check_after(tmp_path / f"case{i}", teacher, ref)
    killed = [r for r in results if r["rc"] == -signal.SIGKILL]
    print(f"[kill] {len(killed)} of {len(results)} builds killed (the rest finished first), all resumed")
    assert len(killed) >= max(1, len(results) - 2)
    # the fixed triggers: a kill during the compute and one during the final write were really made
    if KILLS >= len(FIXED):
        assert any(r["seen"] and r["seen"][1] >= 1 and not r["seen"][2] for r in killed)
        assert any(r["seen"] and r["seen"][2] for r in killed), "no kill landed during the final write"


def test_leftover_work_folder_after_complete_output(setup, tmp_path, monkeypatch):
    """Killed between the rename of the finished file and the removal of the work folder: the
    first build is made to skip that removal; --resume must clean up, not keep it forever."""
    import shutil

    teacher, ref = setup
    out = tmp_path / "out.h5"
    monkeypatch.setattr(shutil, "rmtree", lambda *a, **kw: None)
    assert cli("build", teacher, *ARGS, "-o", out, "-q").exit_code == 0
    monkeypatch.undo()
    assert (tmp_path / ".out.h5.partial").is_dir()
    (tmp_path / ".out.h5.writing-123-abcdef01").write_bytes(b"half")  # and a dead writer's temp file
    res = cli("build", teacher, *ARGS, "-o", out, "--resume", "-q")
    assert res.exit_code == 0, res.output
    assert sorted(os.listdir(tmp_path)) == ["out.h5"]
    assert np.array_equal(open_fingerprints(out).table("sample"), ref.table("sample"))
    # an unfinished build of other settings next to a complete file is not silently ignored
    other = tmp_path / ".out.h5.partial"
    (other / "done").mkdir(parents=True)
    (other / "config.json").write_text("{}")
    res = cli("build", teacher, *ARGS, "-o", out, "--resume", "-q")
    assert res.exit_code == 1 and "--force" in res.stderr and "Traceback" not in res.output, res.output


def test_sigint_exits_130_with_resume_hint(setup, tmp_path):
    teacher, ref = setup
    r = kill_case(teacher, tmp_path / "int", "chunks", 2, 0.0, sig=signal.SIGINT)
    if r["rc"] == 0:
        pytest.skip("the build finished before Ctrl-C could be sent")
    assert r["rc"] == 130, r["stderr"][-2000:]
    assert "Traceback" not in r["stderr"]
    lines = [ln for ln in r["stderr"].splitlines() if ln.strip() and not ln.startswith("[fpkit build]")]
    assert len(lines) == 1 and lines[0].startswith("fpkit: ") and "--resume" in lines[0], r["stderr"]
    assert not (tmp_path / "int" / "out.h5").exists()
    _check_after(tmp_path / "int", teacher, ref)
