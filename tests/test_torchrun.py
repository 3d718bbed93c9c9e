"""``fpkit build`` under torchrun: two processes (gloo, CPU) write the file one process writes.

Each rank computes the chunks ``c % world == rank`` into the shared work folder and rank 0 writes
the file (fpkit.build.dist, fpkit.build.run).  The two files must hold identical tables: every
dataset's bytes (sha256 of the decoded array, and the sha256 the metadata records for it) and
equal metadata, except what describes the run itself (``compute.world_size``, ``compute.device``,
``created``).  Small chunks, so that both ranks get several; float32 and --replay, so that no
rounding hides a difference and the per-view tables are covered too.
"""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from _support import ROOT, subprocess_env

OPTIONS = ["--views", "2", "--dtype", "float32", "--replay", "--chunk-size", "24", "--limit", "120", "--device", "cpu"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(cmd: list[str], env: dict) -> subprocess.CompletedProcess:
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, f"{' '.join(cmd)}\nstdout:\n{p.stdout[-3000:]}\nstderr:\n{p.stderr[-3000:]}"
    return p


def _contents(path: Path) -> tuple[dict, dict[str, str]]:
    """The metadata document and the sha256 of every dataset's decoded array."""
    digests: dict[str, str] = {}
    with h5py.File(path, "r") as f:
        meta = json.loads(f.attrs["metadata"])

        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                digests[name] = hashlib.sha256(np.ascontiguousarray(obj[()]).tobytes()).hexdigest()

        f.visititems(visit)
    return meta, digests


def test_torchrun_two_processes_write_the_one_process_file(tmp_path: Path):
    pytest.importorskip("torch.distributed.run")
    env = subprocess_env()
    env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()))
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        env.pop(key, None)
    dist_out, one_out = tmp_path / "dist" / "fp.h5", tmp_path / "one" / "fp.h5"
    dist_out.parent.mkdir()
    one_out.parent.mkdir()
    build = ["-m", "fpkit", "build", "embedded", "embedded", *OPTIONS]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    p = _run([*launcher, *build, "-o", str(dist_out)], env)
    assert p.stderr.count("[fpkit build] wrote") == 1, "only rank 0 writes the file"
    _run([sys.executable, *build, "-o", str(one_out)], env)
    assert sorted(p.name for p in dist_out.parent.iterdir()) == ["fp.h5"], "rank 0 removes the work folder"

    meta_d, sha_d = _contents(dist_out)
    meta_1, sha_1 = _contents(one_out)
    assert sha_d == sha_1
    assert set(sha_d) >= {"layers/0/sample", "layers/0/class", "layers/0/views", "view_params", "sample_digests"}
    assert set(meta_d["datasets"]) <= set(sha_d)  # and the informative README
    for name, entry in meta_d["datasets"].items():
        assert entry == meta_1["datasets"][name]
    assert meta_d["compute"]["world_size"] == 2 and meta_1["compute"]["world_size"] == 1
    for meta in (meta_d, meta_1):
        meta.pop("created")
        for key in ("world_size", "device"):
            meta["compute"].pop(key)
    assert meta_d == meta_1


def test_torchrun_rank0_error_reaches_every_rank(tmp_path: Path):
    """An error rank 0 finds while preparing (here: no output folder) ends every rank with fpkit's
    one-line message, not a communication traceback on the ranks that wait for rank 0."""
    pytest.importorskip("torch.distributed.run")
    env = subprocess_env()
    env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()))
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        env.pop(key, None)
    out = tmp_path / "missing" / "fp.h5"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    cmd += ["-m", "fpkit", "build", "embedded", "embedded", *OPTIONS, "-o", str(out)]
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode != 0
    assert p.stderr.count("fpkit: error: output folder") == 2, p.stderr[-3000:]
    assert "(reported by rank 0)" in p.stderr
    # torchrun's launcher prints its own traceback (ChildFailedError); none may come from fpkit or gloo
    # fpkit's frames by the package's own folder: a checkout itself named fpkit holds torch's too (.venv)
    package = f'File "{ROOT / "fpkit"}/'
    frames = [line for line in p.stderr.splitlines() if line.strip().startswith(package)]
    assert not frames and "Connection reset" not in p.stderr, p.stderr[-3000:]
    assert not out.parent.exists()
