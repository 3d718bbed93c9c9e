"""Shared tables (fpkit/shared_tables.py): one copy of a file's tables for all DataLoader workers."""

from __future__ import annotations

import io
import multiprocessing
import pickle
import sys
import time
from multiprocessing.reduction import ForkingPickler

import numpy as np
import pytest
import torch

from fpkit import FingerprintDataset
from fpkit.shared_tables import SharedArray, process_memory, share_array, shared_bytes
from fpkit.testing import ExampleFile, write_example_file


def _plain(n: int) -> torch.utils.data.TensorDataset:
    """A plain dataset of n one-pixel images (picklable by spawn: a torch class)."""
    return torch.utils.data.TensorDataset(torch.zeros(n, 1, 1, 1, dtype=torch.uint8), torch.zeros(n, dtype=torch.int64))


def test_share_array_round_trips_by_handle_and_by_value():
    a = np.arange(40_000, dtype="<f2").reshape(100, 400)
    s = share_array(a)
    assert isinstance(s, SharedArray) and s.dtype == a.dtype and np.array_equal(s, a)
    buf = io.BytesIO()
    ForkingPickler(buf).dump(s)  # what a DataLoader worker receives: a handle, not 80 kB
    assert len(buf.getvalue()) < 4096
    plain = pickle.loads(pickle.dumps(s))  # plain pickle: the values
    assert np.array_equal(plain, a)
    assert type(s[3]) is np.ndarray and np.array_equal(pickle.loads(pickle.dumps(s[3])), a[3])  # a row: its values
    small = np.arange(3)
    assert share_array(small) is small


def test_dataset_tables_are_shared_and_targets_unchanged(tmp_path):
    ex = write_example_file(tmp_path / "f.h5", ExampleFile(n=2000, r=16, classes=5, chunk_rows=256, batch=500))
    ds = FingerprintDataset(ex.path, _plain(2000), check_samples=0)
    assert shared_bytes(ds.fp) >= 2000 * 16 * 4  # the decoded float32 table at least
    expect = ex.rows[ds.layers[0]].astype(np.float16).astype(np.float32)
    assert torch.equal(ds[7][2], torch.from_numpy(expect[7]))
    again = pickle.loads(pickle.dumps(ds))
    assert torch.equal(again[1999][2], torch.from_numpy(expect[1999]))


def _worker_uss(ds, workers: int) -> list[int]:
    """USS of each worker of a forkserver DataLoader over ``ds`` (which, like spawn, pickles the
    dataset to each worker: Python 3.14's default on Linux), once every worker served a batch."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["fpkit.fingerprint_dataset"])  # workers start in ms, not seconds
    loader = torch.utils.data.DataLoader(
        ds, batch_size=64, shuffle=True, num_workers=workers, multiprocessing_context=ctx, persistent_workers=True
    )
    it = iter(loader)
    for _ in range(min(2 * workers, len(loader))):
        next(it)
    time.sleep(0.2)
    uss = [process_memory(w.pid)["uss"] for w in it._workers]
    del it
    return uss


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/<pid>/smaps_rollup")
def test_workers_do_not_copy_the_tables(tmp_path):
    n = 200_000  # 51 MB stored (float16, r=128) + 102 MB decoded: one copy per worker would show
    big = write_example_file(tmp_path / "big.h5", ExampleFile(n=n, r=128, classes=10, chunk_rows=8192, batch=50_000))
    tiny = write_example_file(tmp_path / "tiny.h5", ExampleFile(n=64, r=128, classes=10))
    ds_big = FingerprintDataset(big.path, _plain(n), check_samples=0)
    table = shared_bytes(ds_big.fp)
    assert table > 140e6
    base = max(_worker_uss(FingerprintDataset(tiny.path, _plain(64), check_samples=0), 1))
    extra = [u - base for u in _worker_uss(ds_big, 4)]
    mib = [round(e / 2**20) for e in extra]
    print(f"table {table / 2**20:.0f} MiB, worker USS baseline {base / 2**20:.0f} MiB, extra per worker {mib} MiB")
    assert max(extra) < 0.1 * table, (extra, table)


def test_no_shared_memory_warns_and_keeps_private_arrays(tmp_path, monkeypatch):
    import fpkit.shared_tables as st

    def full(arr):
        raise RuntimeError("unable to write to file </torch_1_2_3>: No space left on device (28)")

    monkeypatch.setattr(st, "share_array", full)
    ex = write_example_file(tmp_path / "f.h5", ExampleFile(n=2000, r=16, classes=5, chunk_rows=256, batch=500))
    with pytest.warns(RuntimeWarning, match=r"shared memory .*--shm-size"):
        ds = FingerprintDataset(ex.path, _plain(2000), check_samples=0)
    assert shared_bytes(ds.fp) == 0 and ds[5][2].shape == (16,)
