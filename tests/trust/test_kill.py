"""Killing `fpkit build` at any moment never leaves a file that reads as complete but is not, and
`--resume` then finishes the same file an uninterrupted build writes.

Each case starts ``fpkit build TEACHER synthetic:200x10 -o out.h5 --chunk-size 16 --batch-size 32
--views 2 --device cpu`` in a subprocess through ``_kill_child.py``, which makes the build stop
itself (SIGSTOP) at one chosen moment: before the CLI runs, when the work folder appears, after or
inside chunk j, during the final write, before or after the final rename, or halfway through the
removal of the work folder.  The test sees the process stopped, records the files at that moment
and SIGKILLs it, so every case is killed where it was meant to be however busy the machine is
(triggers on elapsed time were not: on a loaded machine builds finished first).  Some drawn cases
let it run on for a random few milliseconds before the kill, to land between those moments.
Then:

* ``out.h5`` does not exist, or is complete and ``fpkit verify`` passes;
* ``fpkit build ... --resume`` (through the CLI, in-process) exits 0 and its tables equal an
  uninterrupted build's exactly; no ``.out.h5.writing-*`` or ``.out.h5.partial`` remains.

A SIGINT (Ctrl-C) case expects exit code 130, a one-line message that mentions --resume, and no
traceback.

Larger settings:  FPKIT_KILL_CASES=100 FPKIT_KILL_SEED=1 pytest tests/trust/test_kill.py -s
(cases beyond the six fixed ones draw a random moment, and for some a random extra delay).
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
CHILD = Path(__file__).resolve().parent / "_kill_child.py"
WORK_FILES = 2 + CHUNKS  # files in the work folder removed one by one at the end (no replay)

# (moment, N, extra delay in s after the stop; 0 = killed while stopped)   see _kill_child.py
FIXED = [
    ("start", 0, 0.0),  # interpreter and imports done, nothing written
    ("work", 0, 0.0),  # the moment the work folder appears
    ("chunk", 1, 0.0),  # after the first finished chunk
    ("chunkpre", CHUNKS, 0.0),  # last chunk computed, not yet marked
    ("write", 1, 0.0),  # during the final write (temporary file present)
    ("rmtree", 3, 0.0),  # output renamed into place, work folder half removed
]
MOMENTS = ["start", "work", "chunk", "chunkpre", "write", "close", "rename", "renamed", "rmtree"]


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


def _state(folder: Path) -> tuple[bool, int, bool, bool]:
    """(work folder exists, finished chunks, writer's temporary file exists, output exists)."""
    names = os.listdir(folder)
    partial = ".out.h5.partial" in names
    done = 0
    if partial:
        try:
            done = sum(n.endswith(".json") for n in os.listdir(folder / ".out.h5.partial" / "done"))
        except FileNotFoundError:
            pass
    return partial, done, any(n.startswith(".out.h5.writing-") for n in names), "out.h5" in names


def _stopped(pid: int) -> bool:
    """The process is stopped (state T in /proc: it paused itself at its breakpoint)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rpartition(")")[2].split()[0] in ("T", "t")
    except (FileNotFoundError, IndexError):
        return False


def kill_case(teacher: Path, folder: Path, moment: str, n: int, delay: float, sig=signal.SIGKILL) -> dict:
    folder.mkdir()
    t0 = time.monotonic()
    log = folder.parent / f"{folder.name}.stderr"
    with open(log, "w") as err:
        p = subprocess.Popen(
            [H.PYTHON, str(CHILD), "build", str(teacher), *ARGS, "-o", str(folder / "out.h5")],
            env={**H.subprocess_env(), "FPKIT_KILL_AT": f"{moment}:{n}"},
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
        seen = None
        while p.poll() is None and time.monotonic() - t0 < 300:
            if _stopped(p.pid):
                seen = _state(folder)
                if sig != signal.SIGKILL:  # a stopped process takes other signals when continued
                    p.send_signal(sig)
                    p.send_signal(signal.SIGCONT)
                elif delay:
                    p.send_signal(signal.SIGCONT)
                    time.sleep(delay)
                    p.send_signal(sig)
                else:
                    p.send_signal(sig)
                break
            time.sleep(0.002)
        try:
            p.wait(timeout=300)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    return {
        "moment": moment,
        "n": n,
        "delay": round(delay, 3),
        "rc": p.returncode,
        "seen": seen,
        "stderr": log.read_text(),
        "at": _state(folder),
        "seconds": round(time.monotonic() - t0, 2),
    }


def _expect_seen(moment: str, n: int, seen) -> None:
    """The files at the breakpoint are those of the build phase the moment names."""
    assert seen is not None, f"{moment}:{n} was never reached"
    partial, done, writing, out = seen
    want = {
        "start": (False, 0, False, False),
        "work": (True, 0, False, False),
        "chunk": (True, n, False, False),
        "chunkpre": (True, n - 1, False, False),
        "write": (True, CHUNKS, True, False),
        "close": (True, CHUNKS, True, False),
        "rename": (True, CHUNKS, True, False),
        "renamed": (True, CHUNKS, False, True),
    }.get(moment)
    if want is not None:
        assert seen == want, (moment, n, seen)
    else:  # rmtree: output in place, the work folder partly removed
        assert out and not writing, (moment, n, seen)


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
    plan = list(FIXED[:KILLS])
    while len(plan) < KILLS:
        moment = str(rng.choice(MOMENTS))
        n = {"chunk": int(rng.integers(1, CHUNKS + 1)), "chunkpre": int(rng.integers(1, CHUNKS + 1))}.get(moment, 0)
        if moment == "rmtree":
            n = int(rng.integers(0, WORK_FILES))
        if moment == "write":
            n = 1
        delay = float(rng.uniform(0, 0.05)) if rng.random() < 0.25 else 0.0
        plan.append((moment, n, delay))
    t0 = time.monotonic()
    with ThreadPoolExecutor(PARALLEL) as ex:
        results = list(ex.map(lambda a: kill_case(teacher, tmp_path / f"case{a[0]}", *a[1]), enumerate(plan)))
    for i, r in enumerate(results):
        print(
            f"\n[kill] case {i}: at {r['moment']}:{r['n']} +{r['delay']}s -> rc {r['rc']}, state at the stop "
            f"(partial, chunks done, writing, output) {r['seen']}, after {r['at']}, {r['seconds']} s"
        )
    for i, r in enumerate(results):
        assert r["rc"] in (-signal.SIGKILL, 0), r["stderr"][-2000:]
        _expect_seen(r["moment"], r["n"], r["seen"])
        _check_after(tmp_path / f"case{i}", teacher, ref)
    killed = [r for r in results if r["rc"] == -signal.SIGKILL]
    exact = [r for r in results if not r["delay"]]
    print(
        f"[kill] {len(killed)} of {len(results)} builds killed ({len(exact)} at their breakpoint, all killed; "
        f"{len(results) - len(exact)} after a delay), all resumed; seed {SEED}, {time.monotonic() - t0:.0f} s"
    )
    assert all(r["rc"] == -signal.SIGKILL for r in exact)
    phases = {r["moment"] for r in killed}
    if KILLS >= len(FIXED):  # a kill during the compute, the final write and the clean-up were made
        assert {"chunk", "write", "rmtree"} <= phases, phases


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


def test_half_removed_work_folder_next_to_complete_output(setup, tmp_path, monkeypatch):
    """Killed halfway through the removal of the work folder (kill run seed 20261204, case 39):
    its plan file and some markers are gone.  A plain rebuild says the output is complete and
    the folder is left over; --resume removes it and leaves the file untouched."""
    import shutil

    teacher, ref = setup
    out = tmp_path / "out.h5"
    monkeypatch.setattr(shutil, "rmtree", lambda *a, **kw: None)
    assert cli("build", teacher, *ARGS, "-o", out, "-q").exit_code == 0
    monkeypatch.undo()
    work = tmp_path / ".out.h5.partial"
    (work / "config.json").unlink()
    for marker in sorted((work / "done").iterdir())[:5]:
        marker.unlink()
    before = (out.read_bytes(), out.stat().st_mtime_ns)
    res = cli("build", teacher, *ARGS, "-o", out)
    assert res.exit_code == 1 and "Traceback" not in res.output, res.output
    assert "is complete" in res.stderr and "--resume" in res.stderr and str(work) in res.stderr, res.stderr
    res = cli("build", teacher, *ARGS, "-o", out, "--resume")
    assert res.exit_code == 0, res.output
    assert "removed the leftover work folder" in res.stderr, res.stderr
    assert sorted(os.listdir(tmp_path)) == ["out.h5"]
    assert (out.read_bytes(), out.stat().st_mtime_ns) == before
    assert verify_fingerprints(out) == []


def test_sigint_exits_130_with_resume_hint(setup, tmp_path):
    teacher, ref = setup
    r = kill_case(teacher, tmp_path / "int", "chunk", 2, 0.0, sig=signal.SIGINT)
    assert r["rc"] == 130, r["stderr"][-2000:]
    assert "Traceback" not in r["stderr"]
    lines = [ln for ln in r["stderr"].splitlines() if ln.strip() and not ln.startswith("[fpkit build]")]
    assert len(lines) == 1 and lines[0].startswith("fpkit: ") and "--resume" in lines[0], r["stderr"]
    assert not (tmp_path / "int" / "out.h5").exists()
    _check_after(tmp_path / "int", teacher, ref)
