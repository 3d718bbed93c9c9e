"""One copy of a fingerprint file's tables for every DataLoader worker, whatever the start method.

:func:`fpkit.format.open_fingerprints` reads, checks and verifies a file once (fletcher32 per
chunk, every table's SHA-256, the digests of formats/SPEC.md section 10) and returns numpy arrays
in private memory.  A DataLoader worker started by ``fork`` shares those pages copy-on-write, but
one started by ``spawn`` or ``forkserver`` (the default on macOS and Windows, on Linux from
Python 3.14, and what CUDA users choose) unpickles the dataset, so each of 8 workers would hold
its own copy of every table.  The tables cannot be memory-mapped from the file instead: every
dataset is chunked with fletcher32 (section 9), so its bytes are not contiguous in the file.

:func:`share_file` therefore moves every array of a loaded file (the stored datasets and the
decoded float32 tables) into shared memory (torch's shared storage: ``/dev/shm`` on Linux), in
place, after verification.  Each becomes a :class:`SharedArray`: an ordinary numpy array whose
pickle is a handle to that memory when it crosses to a worker (torch's multiprocessing reductions,
which the DataLoader uses for worker arguments), and its bytes otherwise.  The workers map the
same pages; nothing is read from the file or verified again, and the file format is unchanged.
:class:`~fpkit.FingerprintDataset` calls it on construction.  Where shared memory cannot be had
(a full or tiny ``/dev/shm``), the arrays stay private and a warning names the fix.

:func:`process_memory` reads a process's RSS, PSS and USS from ``/proc`` (Linux), for the tests
and ``python -m bench.read --scale``.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Mapping, TypeVar

import numpy as np
import torch

MIN_SHARED_BYTES = 1 << 16
"""Arrays smaller than this (64 KiB) are copied to workers; sharing them would cost a handle each."""

K = TypeVar("K")


class SharedArray(np.ndarray):
    """A numpy array in shared memory; pickled as a handle to that memory under torch's
    multiprocessing reductions (DataLoader workers), as its bytes by plain pickle.  Indexing it
    gives plain ndarrays (pickled as their values)."""

    _shared: torch.Tensor | None = None  # the uint8 shared storage; set on the root array only
    _plain: np.ndarray | None = None  # the same memory as a plain ndarray; root array only

    def __getitem__(self, key):
        # rows and slices come out as plain ndarrays: a subclass instance has a __dict__, so the
        # garbage collector tracks each one, and a DataLoader worker making thousands per second
        # ran full collections that cost time and copied its inherited heap (fork, forkserver)
        plain = self._plain if self._plain is not None else self.view(np.ndarray)
        return plain[key]

    def __reduce__(self):
        if self._shared is None:  # a view: pickle its values
            return np.asarray(self).__reduce__()
        return _from_shared, (self._shared, self.dtype.str, self.shape)


def _from_shared(storage: torch.Tensor, dtype: str, shape: tuple[int, ...]) -> SharedArray:
    """The array over ``storage`` (uint8 bytes in shared memory) with its dtype and shape."""
    arr = storage.numpy().view(np.dtype(dtype)).reshape(shape).view(SharedArray)
    arr._shared, arr._plain = storage, arr.view(np.ndarray)
    return arr


def share_array(arr: np.ndarray) -> np.ndarray:
    """``arr`` copied into shared memory as a :class:`SharedArray` (already shared, or smaller
    than :data:`MIN_SHARED_BYTES`: returned as is).

    Raises:
        RuntimeError: torch could not allocate the shared memory (``/dev/shm`` full or too small).
    """
    if isinstance(arr, SharedArray) or arr.nbytes < MIN_SHARED_BYTES:
        return arr
    storage = torch.empty(arr.nbytes, dtype=torch.uint8).share_memory_()
    storage.numpy()[:] = np.ascontiguousarray(arr).reshape(-1).view(np.uint8)
    return _from_shared(storage, arr.dtype.str, arr.shape)


def share_file(fp, tables: Mapping[K, np.ndarray]) -> dict[K, np.ndarray]:
    """Move every array of the loaded file ``fp`` (its ``arrays`` and decoded tables) into shared
    memory, in place, and return ``tables`` with each array replaced by its shared copy.

    On failure to allocate shared memory, warns and leaves everything private (correct, but
    workers started by spawn or forkserver then hold a copy each)."""
    stores = (fp.arrays, fp._decoded)
    moved: dict[int, np.ndarray] = {}
    try:
        for store in stores:
            for key, arr in list(store.items()):
                moved.setdefault(id(arr), share_array(arr))
    except RuntimeError as e:
        warnings.warn(
            f"could not put the tables of {fp.path} in shared memory ({str(e).splitlines()[0]}); "
            "DataLoader workers started by spawn or forkserver will each hold a copy: enlarge "
            "/dev/shm (docker run --shm-size) or use multiprocessing_context='fork'",
            RuntimeWarning,
            stacklevel=3,
        )
        return dict(tables)
    for store in stores:
        for key, arr in list(store.items()):
            store[key] = moved[id(arr)]
    return {k: moved.get(id(a), a) for k, a in tables.items()}


def shared_bytes(fp) -> int:
    """Bytes of ``fp``'s arrays that live in shared memory (each array counted once)."""
    seen = {id(a): a for store in (fp.arrays, fp._decoded) for a in store.values() if isinstance(a, SharedArray)}
    return sum(a.nbytes for a in seen.values())


def process_memory(pid: int | str = "self") -> dict[str, int] | None:
    """Bytes of a process's memory from ``/proc/<pid>/smaps_rollup``: ``rss``, ``pss`` (shared
    pages divided among the processes mapping them) and ``uss`` (private pages only); None where
    there is no such file (not Linux, or the process is gone)."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return None
    kib: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[2] == "kB":
            kib[parts[0].rstrip(":")] = int(parts[1])
    uss = kib.get("Private_Clean", 0) + kib.get("Private_Dirty", 0)
    return {"rss": kib.get("Rss", 0) * 1024, "pss": kib.get("Pss", 0) * 1024, "uss": uss * 1024}


__all__ = ["MIN_SHARED_BYTES", "SharedArray", "process_memory", "share_array", "share_file", "shared_bytes"]
