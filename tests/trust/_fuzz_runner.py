"""Fuzz runner: apply each mutation to a fresh copy of a fingerprint file and open it in a forked
child process with a time and memory limit.

    python _fuzz_runner.py SPEC.json RESULTS.jsonl

SPEC.json: {"originals": {name: path}, "workdir": DIR, "timeout": seconds, "cli_every": N,
"cases": [{"id": ..., "file": name, "kind": ..., ...}]}.  One JSON line per case is appended to
RESULTS.jsonl, flushed at once, so a crash of this runner itself loses nothing already done.

Per case, the child (os.fork, so h5py/libhdf5 state is isolated: a segfault or hang kills only
the child) mutates the copy, then

1. ``open_fingerprints(copy)``: "intact" if every table, the metadata and the layers equal the
   original's; "silent_diff" if it opened but something differs; "fpkit:<Class>" for an
   FpkitError; "other:<Class>: msg" for any other exception;
2. the CLI ``fpkit verify copy`` in-process (click, standalone mode) with stdout/stderr captured at
   the file-descriptor level: its exit code and stderr.

The parent records "signal:<N>" (crash), "timeout" (hang), or the child's report.  Every
``cli_every``-th case also runs ``python -m fpkit verify`` as a real subprocess.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import h5py  # noqa: E402
import numpy as np  # noqa: E402

from fpkit._text import printable  # noqa: E402
from fpkit.errors import FpkitError  # noqa: E402
from fpkit.format import open_fingerprints  # noqa: E402

MEM_LIMIT = 3 * 2**30  # bytes of address space added to the child's current size


# ---------------------------------------------------------------------------- mutations
def _attr_value(spec):
    t, v = spec["type"], spec.get("value")
    if t == "str":
        return v
    if t == "bytes":
        return np.void(bytes.fromhex(v)) if spec.get("opaque") else bytes.fromhex(v)
    if t == "int":
        return np.int64(v)
    if t == "float":
        return np.float64(v)
    if t == "array_str":
        return np.array(v, dtype=h5py.string_dtype())
    if t == "array_int":
        return np.array(v, dtype=np.int64)
    if t == "empty":
        return h5py.Empty("f")
    raise ValueError(t)


def _edit_meta(meta: dict, edit: list):
    op, keys = edit[0], edit[1]
    node = meta
    for k in keys[:-1]:
        node = node[int(k)] if isinstance(node, list) else node[k]
    last = keys[-1]
    if isinstance(node, list):
        last = int(last)
    if op == "set":
        node[last] = edit[2]
    elif op == "del":
        del node[last]
    else:
        raise ValueError(op)


def mutate(path: str, case: dict) -> None:
    kind = case["kind"]
    if kind == "truncate":
        os.truncate(path, case["offset"])
    elif kind == "bitflip":
        with open(path, "r+b") as fh:
            fh.seek(case["offset"])
            b = fh.read(1)[0]
            fh.seek(case["offset"])
            fh.write(bytes([b ^ (1 << case["bit"])]))
    elif kind == "overwrite":
        mask = bytes.fromhex(case["xor"])
        with open(path, "r+b") as fh:
            fh.seek(case["offset"])
            old = fh.read(len(mask))
            fh.seek(case["offset"])
            fh.write(bytes(a ^ m for a, m in zip(old, mask)))
    elif kind == "append":
        with open(path, "ab") as fh:
            fh.write(bytes.fromhex(case["data"]))
    elif kind == "struct":
        _struct(path, case)
    else:
        raise ValueError(kind)


def _read(f: h5py.File, p: str) -> np.ndarray:
    """A dataset's values; zstd chunks decoded by fpkit (no HDF5 plugin is installed)."""
    from fpkit.format import codecs

    codec = json.loads(f.attrs["metadata"])["storage"]["codec"]
    return codecs.read_table(f[p], codec)


def _struct(path: str, case: dict) -> None:
    op = case["op"]
    with h5py.File(path, "r+") as f:
        if op == "del":
            del f[case["path"]]
        elif op == "move":
            f.move(case["path"], case["to"])
        elif op == "swap":
            a, b = case["path"], case["to"]
            f.move(a, a + "__tmp")
            f.move(b, a)
            f.move(a + "__tmp", b)
        elif op == "hardlink":
            f[case["to"]] = f[case["path"]]
        elif op == "softlink":
            del f[case["path"]]
            f[case["path"]] = h5py.SoftLink("/" + case["to"])
        elif op == "extlink":
            data = _read(f, case["path"])
            del f[case["path"]]
            ext = path + ".ext.h5"
            with h5py.File(ext, "w") as g:
                g["x"] = data
            f[case["path"]] = h5py.ExternalLink(os.path.basename(ext), "/x")
        elif op == "delattr":
            del f.attrs[case["name"]]
        elif op == "setattr":
            f.attrs[case["name"]] = _attr_value(case["value"])
        elif op == "setmeta":
            meta = json.loads(f.attrs["metadata"])
            for edit in case["edits"]:
                _edit_meta(meta, edit)
            text = json.dumps(meta, sort_keys=True, separators=(",", ":"))
            f.attrs["metadata"] = text
            if case.get("rehash", True):
                import hashlib

                f.attrs["complete"] = hashlib.sha256(text.encode()).hexdigest()
        elif op == "replace":
            p, how = case["path"], case["how"]
            d = f[p]
            data, chunks, dt = _read(f, p), d.chunks, d.dtype
            del f[p]
            if how == "contiguous_same":
                f.create_dataset(p, data=data)
            elif how == "external_same":  # raw data in another file (HDF5 external storage)
                raw = path + ".ext.raw"
                Path(raw).write_bytes(np.ascontiguousarray(data).tobytes())
                f.create_dataset(p, shape=data.shape, dtype=dt, external=[(os.path.basename(raw), 0, data.nbytes)])
            elif how == "virtual_same":  # a virtual dataset mapping another file's dataset
                ext = path + ".ext.h5"
                with h5py.File(ext, "w") as g:
                    g["x"] = data
                layout = h5py.VirtualLayout(shape=data.shape, dtype=dt)
                layout[...] = h5py.VirtualSource(os.path.basename(ext), "x", shape=data.shape)
                f.create_virtual_dataset(p, layout)
            elif how == "lzf_same":
                f.create_dataset(p, data=data, chunks=chunks, compression="lzf")
            elif how == "nofletcher_same":
                f.create_dataset(p, data=data, chunks=chunks)
            elif how == "changed_value":
                flat = data.reshape(-1).copy()
                flat[0] = flat[-1] if flat[0] != flat[-1] else flat[0] + 1
                f.create_dataset(p, data=flat.reshape(data.shape), chunks=chunks)
            elif how == "other_dtype":
                f.create_dataset(p, data=data.astype(np.float64 if dt.kind != "f" or dt.itemsize != 8 else np.float32))
            elif how == "big_endian":
                f.create_dataset(p, data=data.astype(dt.newbyteorder(">")))
            elif how == "extra_row":
                f.create_dataset(p, data=np.concatenate([data, data[:1]]))
            elif how == "scalar":
                f.create_dataset(p, data=0)
            elif how == "empty":
                f.create_dataset(p, data=h5py.Empty(dt))
            elif how == "group":
                f.create_group(p)
            elif how == "string":
                f.create_dataset(
                    p, data=np.array(["x"] * max(1, data.shape[0] if data.ndim else 1), dtype=h5py.string_dtype())
                )
            elif how == "unknown_filter":
                f.create_dataset(
                    p, shape=data.shape, dtype=dt, chunks=chunks or True, compression=32001, allow_unknown_filter=True
                )
                f[p].id.write_direct_chunk((0,) * data.ndim, b"\x00" * 16, filter_mask=0)
            elif how == "zstd_filter":  # declare filter 32015 on a dataset fpkit reads through HDF5
                f.create_dataset(
                    p, shape=data.shape, dtype=dt, chunks=chunks or True, compression=32015, allow_unknown_filter=True
                )
            elif how == "fillvalue_only":  # chunked dataset with no chunk written: all fill value
                f.create_dataset(p, shape=data.shape, dtype=dt, chunks=chunks or True, fletcher32=True)
            else:
                raise ValueError(how)
        elif op == "add":
            if case.get("group"):
                g = f.create_group(case["path"])
            else:
                g = f.create_dataset(case["path"], data=np.arange(3))
            if "must_understand" in case:
                g.attrs["must_understand"] = case["must_understand"]
        elif op == "attr_on":  # an attribute on a dataset or group
            f[case["path"]].attrs[case["name"]] = _attr_value(case["value"])
        else:
            raise ValueError(op)


# ---------------------------------------------------------------------------- checking
def _same(fp, orig) -> list[str]:
    diff = []
    if fp.metadata != orig.metadata:
        diff.append("metadata")
    if fp.layers != orig.layers:
        diff.append("layers")
    if fp.arrays.keys() != orig.arrays.keys():
        diff.append(f"array keys {sorted(fp.arrays)} vs {sorted(orig.arrays)}")
    for k, a in orig.arrays.items():
        b = fp.arrays.get(k)
        if b is None or b.dtype != a.dtype or b.shape != a.shape or not np.array_equal(a, b):
            diff.append(k)
    for lay in orig.layers:
        for kind in lay.tables:
            if not np.array_equal(fp.table(kind, lay.name), orig.table(kind, lay.name)):
                diff.append(f"table {lay.name}/{kind}")
    return diff


def _cli_verify(path: str) -> tuple[int, str, str]:
    """``fpkit verify PATH`` in-process; (exit code, stdout, stderr) captured at fd level."""
    from fpkit.cli import main

    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        sys.stdout.flush()
        sys.stderr.flush()
        saved = os.dup(1), os.dup(2)
        os.dup2(out.fileno(), 1)
        os.dup2(err.fileno(), 2)
        code = None
        try:
            main(["verify", path], prog_name="fpkit", standalone_mode=True)
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except BaseException:  # noqa: BLE001 - what escapes click is a traceback for the user
            traceback.print_exc()
            code = -1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
        out.seek(0)
        err.seek(0)
        return code, out.read().decode("utf-8", "replace"), err.read().decode("utf-8", "replace")


def child(path: str, case: dict, orig, timeout: int, report: str) -> None:
    signal.alarm(timeout)  # a hang ends as SIGALRM
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    try:
        with open("/proc/self/statm") as fh:
            vm = int(fh.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        limit = vm + MEM_LIMIT
        if hard == resource.RLIM_INFINITY or limit < hard:
            resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    except (OSError, ValueError):
        pass
    res: dict = {"id": case["id"]}
    try:
        mutate(path, case)
    except Exception as e:  # noqa: BLE001 - a mutation that cannot be made is skipped, not a finding
        res.update(outcome="skipped", detail=f"{type(e).__name__}: {e}")
        Path(report).write_text(json.dumps(res))
        return
    t0 = time.perf_counter()
    try:
        fp = open_fingerprints(path)
    except FpkitError as e:
        res.update(outcome=f"fpkit:{type(e).__name__}", detail=str(e)[:300])
    except BaseException as e:  # noqa: BLE001
        res.update(outcome=f"other:{type(e).__name__}", detail=(str(e)[:300] + " | " + traceback.format_exc()[-800:]))
    else:
        diff = _same(fp, orig)
        res.update(outcome="silent_diff" if diff else "intact", detail=", ".join(diff)[:300])
    res["open_s"] = round(time.perf_counter() - t0, 4)
    code, out, err = _cli_verify(path)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    res.update(
        cli_rc=code,
        cli_stdout=out[-300:],
        cli_stderr=err[-1200:],
        cli_lines=len(lines),
        cli_lines_ok=bool(lines)
        and all(ln.startswith("fpkit:") and printable(ln) == ln for ln in lines)
        and "Traceback" not in err,
    )
    Path(report).write_text(json.dumps(res))


def run_case(case: dict, originals: dict, loaded: dict, workdir: Path, timeout: int, real_cli: bool) -> dict:
    src = originals[case["file"]]
    path = str(workdir / f"case-{case['id']}.h5")
    report = str(workdir / f"case-{case['id']}.json")
    shutil.copyfile(src, path)
    t0 = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # the child: never returns into the runner's code
        code = 0
        try:
            child(path, case, loaded[case["file"]], timeout, report)
        except BaseException:  # noqa: BLE001
            code = 3
        finally:
            os._exit(code)
    deadline = time.monotonic() + timeout + 10
    status = None
    while status is None:
        done, st = os.waitpid(pid, os.WNOHANG)
        if done:
            status = st
        elif time.monotonic() > deadline:  # SIGALRM did not end it: a hang in C code ignoring signals
            os.kill(pid, signal.SIGKILL)
            _, status = os.waitpid(pid, 0)
            status = -1
        else:
            time.sleep(0.002)
    res = {"id": case["id"]}
    if status == -1:
        res["outcome"] = "timeout"
    elif os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        res["outcome"] = "timeout" if sig == signal.SIGALRM else f"signal:{sig}"
    elif os.path.exists(report):
        res = json.loads(Path(report).read_text())
        if os.WEXITSTATUS(status) != 0:
            res["outcome"] = f"child_exit:{os.WEXITSTATUS(status)}"
    else:
        res["outcome"] = f"child_exit:{os.WEXITSTATUS(status)}"
    res["seconds"] = round(time.perf_counter() - t0, 4)
    if real_cli and res["outcome"] not in ("skipped",) and not res["outcome"].startswith(("signal", "timeout")):
        try:
            p = subprocess.run(
                [sys.executable, "-m", "fpkit", "verify", path], capture_output=True, text=True, timeout=timeout + 30
            )
            lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
            res.update(
                sub_rc=p.returncode,
                sub_stderr=p.stderr[-1200:],
                sub_lines_ok=(not lines if p.returncode == 0 else bool(lines))
                and all(ln.startswith("fpkit:") and printable(ln) == ln for ln in lines)
                and "Traceback" not in p.stderr,
            )
        except subprocess.TimeoutExpired:
            res.update(sub_rc="timeout", sub_stderr="")
    for p in (path, report, path + ".ext.h5", path + ".ext.raw"):
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass
    return res


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    results = Path(sys.argv[2])
    workdir = Path(spec["workdir"])
    workdir.mkdir(parents=True, exist_ok=True)
    originals = spec["originals"]
    # loaded before any fork, with no HDF5 file left open: children inherit only numpy arrays
    loaded = {name: open_fingerprints(p) for name, p in originals.items()}
    import fpkit.cli  # noqa: F401  imported once here, not in every child

    every = int(spec.get("cli_every", 0))
    with open(results, "a") as out:
        for i, case in enumerate(spec["cases"]):
            res = run_case(case, originals, loaded, workdir, int(spec["timeout"]), bool(every) and i % every == 0)
            out.write(json.dumps({**case, **res}) + "\n")
            out.flush()


if __name__ == "__main__":
    main()
