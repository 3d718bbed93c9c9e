"""``fpkit build`` with one breakpoint, for tests/trust/test_kill.py.

``python _kill_child.py build ARGS...`` runs the real CLI; ``FPKIT_KILL_AT=POINT:N`` makes the
process stop itself (SIGSTOP) at one moment of the build, so that the test can observe the files
at that moment and kill it there (SIGKILL), however slow or busy the machine is.  The wrappers
call fpkit's own functions unchanged; only the pause is added.  POINTs:

* ``start:0``     before the CLI runs (imports done, nothing written)
* ``work:0``      just after the work folder was created (no chunk finished)
* ``chunk:N``     just after chunk marker N (1-based count) was written
* ``chunkpre:N``  inside the N-th chunk's ``mark_done``, before its maps are flushed and marked
* ``write:N``     before the writer's N-th ``append`` (temporary file open, partly written)
* ``close:0``     before the writer's ``close`` (all rows in, completion marker not yet)
* ``rename:0``    just before the temporary file is renamed to the output name
* ``renamed:0``   just after that rename (output complete, work folder whole)
* ``rmtree:N``    after N files of the work folder were removed (output complete, folder half gone)
"""

from __future__ import annotations

import os
import shutil
import signal

from fpkit.build.workstore import WorkStore
from fpkit.cli import main
from fpkit.format.writer import FingerprintWriter

POINT, _, _N = os.environ.get("FPKIT_KILL_AT", "none:0").partition(":")
N = int(_N or 0)
count = 0
removing = False


def stop() -> None:
    os.kill(os.getpid(), signal.SIGSTOP)


def hit() -> bool:
    global count
    count += 1
    return count == N


def wrap(owner, name, before=None, after=None):
    orig = getattr(owner, name)

    def wrapper(*args, **kwargs):
        if before and before(*args, **kwargs):
            stop()
        result = orig(*args, **kwargs)
        if after and after(*args, **kwargs):
            stop()
        return result

    setattr(owner, name, wrapper)


def _is_writer_file(src, *a, **kw) -> bool:
    return os.path.basename(os.fspath(src)).startswith(".out.h5.writing-")


def _rmtree_start(path, *a, **kw) -> bool:
    global removing
    removing = os.fspath(path).endswith(".out.h5.partial")
    return removing and N == 0


if POINT == "work":
    wrap(WorkStore, "create", after=lambda *a, **kw: True)
elif POINT == "chunk":
    wrap(WorkStore, "mark_done", after=lambda *a, **kw: hit())
elif POINT == "chunkpre":
    wrap(WorkStore, "mark_done", before=lambda *a, **kw: hit())
elif POINT == "write":
    wrap(FingerprintWriter, "append", before=lambda *a, **kw: hit())
elif POINT == "close":
    wrap(FingerprintWriter, "close", before=lambda *a, **kw: True)
elif POINT == "rename":
    wrap(os, "replace", before=_is_writer_file)
elif POINT == "renamed":
    wrap(os, "replace", after=_is_writer_file)
elif POINT == "rmtree":
    wrap(shutil, "rmtree", before=_rmtree_start)
    wrap(os, "unlink", after=lambda *a, **kw: removing and hit())

if __name__ == "__main__":
    # Ctrl-C as in a terminal, even when the tests run in the background (where a shell starts
    # commands with SIGINT ignored, and Python then keeps it ignored)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if POINT == "start":
        stop()
    main(prog_name="fpkit")
