"""A guard run before libhdf5 reads a file's root attributes: the global heap walk."""

from __future__ import annotations

import mmap
import os
import struct
from pathlib import Path

_GCOL = b"GCOL\x01\x00\x00\x00"  # global heap collection: signature, version 1, 3 reserved bytes


def global_heap_problem(path: Path) -> str | None:
    """Check the object headers of every global heap collection ("GCOL") before libhdf5 reads one.

    The root attributes are variable-length strings kept in global heaps.  libhdf5 (2.0.0 included)
    loops forever on a collection whose object sizes do not tile it (a free-space object of size
    0, for instance): single bit flips in these headers hang ``attrs[...]``.  The walk below is
    the one libhdf5 makes, refusing what would send it astray.  JSON text cannot contain the
    signature's control bytes, so only real collections (or table bytes, with odds ~2**-64 per
    position) match.  Assumes 8-byte lengths, which every h5py-written file has.
    """
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size < 16:
                return None
            with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                if mm[:8] == b"\x89HDF\r\n\x1a\n" and mm[8] == 0 and mm[14] != 8:
                    return None  # superblock v0 with lengths of another size: not an h5py layout
                at = mm.find(_GCOL)
                while at != -1:
                    if at + 16 > size:
                        return f"global heap at byte {at} is truncated"
                    (length,) = struct.unpack_from("<Q", mm, at + 8)
                    end = at + length
                    if length < 4096 or end > size:
                        return f"global heap at byte {at} claims {length} bytes"
                    o = at + 16
                    while o + 16 <= end:
                        idx, _refs, _res, n = struct.unpack_from("<HHIQ", mm, o)
                        if idx == 0:  # free space: the rest of the collection
                            if n != end - o:
                                return f"global heap at byte {at}: free space of {n} bytes at byte {o}"
                            break
                        need = 16 + (n + 7) // 8 * 8
                        if o + need > end:
                            return f"global heap at byte {at}: object {idx} of {n} bytes overruns it"
                        o += need
                    at = mm.find(_GCOL, at + 8)
    except (OSError, ValueError):
        return None  # unreadable here: h5py will say why
    return None
