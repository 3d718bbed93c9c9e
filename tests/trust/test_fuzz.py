"""Fuzzing the fingerprint reader: damaged files must fail loudly, never silently or by crashing.

Three small files (float16/none with two layers, int8/zstd, float32/gzip with replay and
redaction) are written with FingerprintWriter, then mutated: truncations, single bit flips in
metadata and in table data (chunk byte ranges from h5py's chunk index), byte overwrites, appended
garbage, and structural edits made with h5py (deleted, moved, swapped, replaced or linked
objects; deleted, retyped or added attributes; metadata edited with or without its digest).

Each case runs in its own forked child (``_fuzz_runner.py``) with a time and memory limit, and
must end in exactly one of:

(a) the file opens and every table, the metadata and the layers equal the original's (the
    mutation hit unused bytes), and ``fpkit verify`` exits 0; or
(b) an FpkitError subclass from ``open_fingerprints``, and ``fpkit verify`` exits 1 with one
    line per problem on stderr, each starting "fpkit:", and no traceback.

Never a hang, a crash (signal), another exception, or tables that differ silently.  A mutation
of table data or a truncation must always be (b).

Larger settings (see SECURITY.md):  FPKIT_FUZZ_CASES=5000 FPKIT_FUZZ_SEED=1 pytest tests/trust/test_fuzz.py -s
FPKIT_FUZZ_CASES counts the random cases (truncations, flips, overwrites); the structural cases
are a fixed list run every time.  FPKIT_FUZZ_WORKERS sets the parallel runners (default 2).
"""

from __future__ import annotations

import collections
import json
import subprocess
import time
from pathlib import Path

import _trust_helpers as H
import numpy as np
import pytest

CASES = H.env_int("FPKIT_FUZZ_CASES", 420)
SEED = H.env_int("FPKIT_FUZZ_SEED", 0)
WORKERS = max(1, H.env_int("FPKIT_FUZZ_WORKERS", 2))
TIMEOUT = H.env_int("FPKIT_FUZZ_TIMEOUT", 20)
CLI_EVERY = H.env_int("FPKIT_FUZZ_CLI_EVERY", 25)  # every Nth case also runs `python -m fpkit verify`

FAILURES = ("silent_diff", "other:", "signal:", "timeout", "child_exit:")


# ---------------------------------------------------------------------------- the cases
def _random_cases(name: str, path: Path, rng: np.random.Generator, count: int) -> list[dict]:
    size = path.stat().st_size
    regions = H.data_regions(path)
    meta = H.meta_offsets(size, regions)
    heap = H.heap_header_offsets(path)
    cases: list[dict] = []
    n_trunc, n_meta, n_data, n_heap = int(count * 0.2), int(count * 0.27), int(count * 0.3), int(count * 0.08)
    n_over = count - n_trunc - n_meta - n_data - n_heap
    ends = sorted(
        {0, 1, 7, 8, 16, 100, 511, 512, size // 2, size - 1} | {o for off, n, _ in regions for o in (off, off + n - 1)}
    )
    offs = list(ends) + rng.integers(0, size, max(0, n_trunc - len(ends))).tolist()
    for o in offs[: max(n_trunc, 1)]:
        cases.append(dict(kind="truncate", offset=int(o), region="truncate", expect="error"))
    for o in rng.choice(meta, n_meta):
        cases.append(dict(kind="bitflip", offset=int(o), bit=int(rng.integers(8)), region="meta", expect="any"))
    # the headers of the global heaps holding the root attributes: some flips there hang libhdf5
    for o in rng.choice(heap, n_heap):
        cases.append(dict(kind="bitflip", offset=int(o), bit=int(rng.integers(8)), region="heap", expect="any"))
    # every data region gets flips; then the rest at random positions
    picks = list(range(len(regions))) + rng.integers(0, len(regions), max(0, n_data - len(regions))).tolist()
    for i in picks[: max(n_data, len(regions))]:
        off, n, ds = regions[i]
        cases.append(
            dict(
                kind="bitflip",
                offset=int(off + rng.integers(n)),
                bit=int(rng.integers(8)),
                region="data",
                dataset=ds,
                expect="error",
            )
        )
    for j in range(n_over):
        length = int(rng.integers(1, 17))
        mask = rng.integers(1, 256, length, dtype=np.uint8).tobytes().hex()  # never a no-op
        if j % 2:
            off, n, ds = regions[int(rng.integers(len(regions)))]
            length = min(length, n)
            o = int(off + rng.integers(0, n - length + 1))
            cases.append(
                dict(kind="overwrite", offset=o, xor=mask[: 2 * length], region="data", dataset=ds, expect="error")
            )
        else:
            o = int(rng.choice(meta))
            cases.append(
                dict(kind="overwrite", offset=o, xor=mask[: 2 * min(length, size - o)], region="meta", expect="any")
            )
    cases.append(
        dict(
            kind="append", data=rng.integers(0, 256, 100, dtype=np.uint8).tobytes().hex(), region="append", expect="any"
        )
    )
    return cases


def _struct_cases(name: str, path: Path) -> list[dict]:
    import h5py

    with h5py.File(path, "r") as f:
        meta_text = f.attrs["metadata"]
        datasets: list[str] = []
        f.visititems(lambda n, o: datasets.append(n) if isinstance(o, h5py.Dataset) else None)
    table = "layers/0/sample"
    c: list[dict] = []

    def add(expect="error", **kw):
        c.append(dict(kind="struct", region="struct", expect=expect, **kw))

    readme = "README" in datasets  # format 1.1's informative text (marked must_understand = false)
    datasets = [p for p in datasets if p != "README"]
    for p in datasets:
        add(op="del", path=p)
        add(op="replace", path=p, how="changed_value")
        add(op="replace", path=p, how="contiguous_same", expect="any")
    for how in ("external_same", "virtual_same"):  # data from outside the file must not be read
        add(op="replace", path=table, how=how)
    for how in (
        "lzf_same",
        "nofletcher_same",
        "other_dtype",
        "big_endian",
        "extra_row",
        "scalar",
        "empty",
        "group",
        "string",
        "unknown_filter",
        "zstd_filter",
        "fillvalue_only",
    ):
        add(
            op="replace",
            path=table,
            how=how,
            expect="error"
            if how
            in ("other_dtype", "extra_row", "scalar", "empty", "group", "string", "unknown_filter", "fillvalue_only")
            else "any",
        )
    add(op="del", path="layers/0")
    add(op="del", path="layers")
    add(op="move", path=table, to="layers/0/moved")
    add(op="move", path="labels", to="labels2")
    add(op="swap", path="labels", to="sample_digests")
    add(op="swap", path=table, to="layers/0/class")
    if "layers/1/sample" in datasets:
        add(op="swap", path=table, to="layers/1/sample")
        add(op="softlink", path=table, to="layers/1/sample")
    add(op="softlink", path="labels", to="class_counts")
    add(op="extlink", path=table, expect="error")  # an external link must not be followed out of the file
    add(op="hardlink", path=table, to="extra_name", expect="any")
    for attr in ("format", "format_version", "metadata", "complete"):
        add(op="delattr", name=attr)
    bad_utf8 = {"type": "bytes", "value": "fffe41"}
    for attr, value, expect in [
        ("format", {"type": "str", "value": "something.else"}, "error"),
        ("format", {"type": "array_str", "value": ["fpkit.fingerprints", "x"]}, "error"),
        ("format", {"type": "array_str", "value": ["fpkit.fingerprints"]}, "any"),
        ("format", {"type": "int", "value": 1}, "error"),
        ("format", bad_utf8, "error"),
        ("format", {"type": "bytes", "value": "00", "opaque": True}, "error"),
        ("format", {"type": "empty"}, "error"),
        ("format_version", {"type": "str", "value": "2.0"}, "error"),
        ("format_version", {"type": "str", "value": "1.9"}, "any"),
        ("format_version", {"type": "str", "value": "x"}, "error"),
        ("format_version", {"type": "str", "value": "1.0.0"}, "error"),
        ("format_version", {"type": "array_str", "value": ["1.0", "1.0"]}, "error"),
        ("format_version", {"type": "float", "value": 1.0}, "any"),
        ("complete", {"type": "str", "value": "0" * 64}, "error"),
        ("complete", {"type": "array_str", "value": ["a", "b"]}, "error"),
        ("complete", {"type": "int", "value": 0}, "error"),
        ("complete", bad_utf8, "error"),
        ("metadata", {"type": "str", "value": "{}"}, "error"),
        ("metadata", {"type": "array_str", "value": ["{}", "{}"]}, "error"),
        ("metadata", {"type": "int", "value": 3}, "error"),
        ("metadata", bad_utf8, "error"),
        ("zzz_unknown", {"type": "str", "value": "x"}, "error"),
    ]:
        add(op="setattr", name=attr, value=value, expect=expect)
    add(op="add", path="extra")
    add(op="add", path="extra_ok", must_understand=False, expect="any")
    add(op="add", path="layers/7", group=True)
    add(op="add", path="layers/0/extra")
    add(op="attr_on", path=table, name="note", value={"type": "str", "value": "x"}, expect="any")
    # format 1.1: the README dataset and the description attributes are informative: garbage in
    # them, or their absence, changes nothing read; an unmarked README is unknown
    if readme:
        add(op="del", path="README", expect="any")
        add(op="attr_on", path="README", name="must_understand", value={"type": "int", "value": 0})
        add(op="replace", path="README", how="string", expect="error")
    for path, name in ((table, "description"), ("layers/0", "name"), ("layers/0", "d"), ("labels", "description")):
        for value in ({"type": "bytes", "value": "fffe1b5b33316d"}, {"type": "array_int", "value": [1, 2]}):
            add(op="attr_on", path=path, name=name, value=value, expect="any")
    meta = json.loads(meta_text)
    stored = meta["layers"][0]["projection"]["stored"]
    n_rows = meta["dataset"]["num_samples"]
    codec, dtype = meta["storage"]["codec"], meta["storage"]["dtype"]
    # (edits, expectation) with the completion digest recomputed: an error wherever the tables, the
    # stored projection or the schema contradict the edit; otherwise a consistent edit of the
    # metadata goes unnoticed (there is no signature) but the tables must still be intact
    edits = [
        ([["set", ["dataset", "num_samples"], 10**12]], "error"),
        ([["set", ["dataset", "num_samples"], -1]], "error"),
        ([["set", ["dataset", "num_classes"], 0]], "error"),
        ([["set", ["dataset", "classes"], []]], "error"),
        ([["set", ["layers", "0", "d"], 10**9]], "error" if stored else "metadata_only"),
        ([["set", ["layers", "0", "projection", "r"], 2**40]], "error"),
        ([["set", ["datasets", table, "sha256"], "0" * 64]], "error"),
        ([["set", ["datasets", table, "shape"], [2**31, 2**31]]], "error"),
        ([["set", ["dataset", "labels_sha256"], "0" * 64]], "error"),
        ([["set", ["dataset", "order_sha256"], "0" * 64]], "error"),
        ([["set", ["views", "replay"], True], ["set", ["views", "per_sample"], 2**40]], "error"),
        ([["set", ["layers", "0", "group"], "labels"]], "error"),
        ([["set", ["layers", "0", "tables", "sample", "dataset"], "labels"]], "error"),
        ([["set", ["layers", "0", "projection", "sha256"], "0" * 64]], "error" if stored else "metadata_only"),
        ([["set", ["layers", "0", "projection", "stored"], not stored]], "error"),
        ([["set", ["zzz_unknown"], 1]], "error"),
        ([["del", ["layers", "0", "tables", "sample"]]], "error"),
        ([["set", ["layers"], []]], "error"),
        ([["set", ["format_extra"], {"must_understand": False}]], "metadata_only"),
        # format 1.1's dataset.subset: a range that does not fit the file is refused
        ([["set", ["dataset", "subset"], _subset(5, 5 + n_rows, 4 + n_rows)]], "error"),
        ([["set", ["dataset", "subset"], _subset(0, n_rows + 1, 10**6)]], "error"),
        ([["set", ["dataset", "subset"], _subset(5, 5 + n_rows, 10**6)]], "metadata_only"),
        ([["set", ["teacher", "num_params"], 1]], "metadata_only"),
    ]
    for other in ("float32", "float16", "int8"):
        if other != dtype:
            edits.append(([["set", ["storage", "dtype"], other]], "error"))
    for other in ("none", "gzip", "zstd"):
        if other != codec:  # zstd chunks need fpkit's reader; gzip and none both read through HDF5
            edits.append(
                ([["set", ["storage", "codec"], other]], "error" if "zstd" in (codec, other) else "metadata_only")
            )
    if "logits" in meta:  # format 1.3: the marked group and field of the logit table
        lpath = sorted(meta["logits"]["datasets"])[0]
        add(op="del", path="logits")
        add(op="attr_on", path="logits", name="must_understand", value={"type": "int", "value": 0})
        add(op="add", path="logits/extra")
        add(op="add", path="logits/extra_ok", must_understand=False, expect="any")
        add(op="move", path=lpath, to="logits/moved")
        add(op="swap", path=lpath, to=table)
        edits += [
            ([["del", ["logits"]]], "error"),
            ([["set", ["logits", "kind"], "mean"]], "error"),
            ([["set", ["logits", "kind"], "nonsense"]], "error"),
            ([["set", ["logits", "k"], 2]], "error"),
            ([["set", ["logits", "temperature"], 2.0]], "error"),
            ([["set", ["logits", "must_understand"], True]], "error"),
            ([["set", ["logits", "datasets", lpath, "sha256"], "0" * 64]], "error"),
            ([["set", ["logits", "datasets", lpath, "shape"], [2**31, 2, 3]]], "error"),
            ([["del", ["logits", "datasets", lpath]]], "error"),
        ]
    for e, expect in edits:
        add(op="setmeta", edits=e, expect=expect)
    add(op="setmeta", edits=[["set", ["teacher", "num_params"], 1]], rehash=False)
    return c


def _subset(start: int, stop: int, total: int) -> dict:
    return {"start": start, "stop": stop, "source_num_samples": total, "must_understand": False}


def make_cases(files: dict[str, Path], count: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    per = max(1, count // len(files))
    cases = []
    for name, path in files.items():
        for case in _random_cases(name, path, rng, per) + _struct_cases(name, path):
            cases.append({"file": name, **case})
    for i, case in enumerate(cases):
        case["id"] = i
    return cases


# ---------------------------------------------------------------------------- running
@pytest.fixture(scope="session")
def fuzz_files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("fuzz-originals")
    return {name: H.write_file(d / f"{name}.h5", **kw) for name, kw in H.FUZZ_FILES.items()}


def run_fuzz(files: dict[str, Path], cases: list[dict], workdir: Path) -> list[dict]:
    runner = Path(__file__).with_name("_fuzz_runner.py")
    procs = []
    for w in range(WORKERS):
        part = cases[w::WORKERS]
        spec = workdir / f"spec{w}.json"
        spec.write_text(
            json.dumps(
                {
                    "originals": {k: str(v) for k, v in files.items()},
                    "workdir": str(workdir / f"w{w}"),
                    "timeout": TIMEOUT,
                    "cli_every": CLI_EVERY,
                    "cases": part,
                }
            )
        )
        out = workdir / f"results{w}.jsonl"
        log = open(workdir / f"runner{w}.log", "w")
        procs.append(
            (
                subprocess.Popen(
                    [H.PYTHON, str(runner), str(spec), str(out)],
                    env=H.subprocess_env(),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                ),
                out,
                log,
                len(part),
            )
        )
    results = []
    budget = 60 + len(cases) * 2.0 / WORKERS + TIMEOUT * 4
    for p, out, log, n in procs:
        try:
            rc = p.wait(timeout=budget)
        except subprocess.TimeoutExpired:
            p.kill()
            rc = "killed"
        log.close()
        got = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
        assert rc == 0 and len(got) == n, (
            f"fuzz runner ended with {rc} after {len(got)} of {n} cases:\n"
            + (out.parent / log.name).read_text()[-3000:]
        )
        results += got
    return results


def _zstd_unused(r: dict) -> bool:
    """A change of a zstd chunk's bytes that decodes to the very same table.  zstd checksums the
    decoded content, not the compressed bytes: clearing a frame's checksum flag or single-segment
    flag, or a few bits of a sequence bitstream, changes nothing decoded (exhaustively: 52 of the
    11,384 single-bit flips of this int8-zstd file's chunks).  The child verified the tables equal
    to the original's, so nothing wrong is read."""
    return r["outcome"] == "intact" and r["region"] == "data" and H.FUZZ_FILES[r["file"]].get("codec") == "zstd"


def _label(r: dict) -> str:
    if _zstd_unused(r):
        return "intact: zstd bits unused by decoder"
    if r["outcome"] == "silent_diff" and r["expect"] == "metadata_only" and check(r) is None:
        return "opened: consistent metadata edit"  # digest recomputed; tables intact (no signature)
    return r["outcome"]


def check(res: dict) -> str | None:
    """The problem with one case's result, or None."""
    out = res["outcome"]
    if out == "skipped":
        return None
    metadata_only = out == "silent_diff" and set(res.get("detail", "").split(", ")) <= {"metadata", "layers"}
    if out.startswith(FAILURES) and not (res["expect"] == "metadata_only" and metadata_only):
        return f"{out}: {res.get('detail', '')}"
    if res["expect"] == "metadata_only" and not (metadata_only or out.startswith("fpkit:")):
        return f"expected a consistent metadata edit (tables intact) or an fpkit error, got {out}"
    if res["expect"] == "error" and not out.startswith("fpkit:") and not _zstd_unused(res):
        return f"expected an fpkit error, got {out}"
    rc, err = res.get("cli_rc"), res.get("cli_stderr", "")
    if out in ("intact", "silent_diff"):
        if rc != 0 or "Traceback" in err:
            return f"opened fine but `fpkit verify` exited {rc}: {err[-300:]}"
    else:
        if rc != 1 or not res.get("cli_lines_ok"):
            return f"{out} but `fpkit verify` exited {rc} with stderr {err[-400:]!r}"
    if "sub_rc" in res and (res["sub_rc"] != rc or not res.get("sub_lines_ok")):
        return f"`python -m fpkit verify` exited {res['sub_rc']} (in-process {rc}): {res.get('sub_stderr', '')[-300:]}"
    return None


def test_fuzz_reader(fuzz_files, tmp_path):
    cases = make_cases(fuzz_files, CASES, SEED)
    t0 = time.perf_counter()
    results = run_fuzz(fuzz_files, cases, tmp_path)
    elapsed = time.perf_counter() - t0
    counts = collections.Counter()
    by_kind = collections.Counter()
    for r in results:
        key = r["kind"] + (f"/{r['region']}" if r["kind"] in ("bitflip", "overwrite") else "")
        if r["kind"] == "struct":
            key += f"/{r['op']}"
        by_kind[key] += 1
        counts[(key, _label(r))] += 1
    print(
        f"\n[fuzz] {len(results)} cases on {len(fuzz_files)} files in {elapsed:.1f} s "
        f"({WORKERS} workers, seed {SEED}, FPKIT_FUZZ_CASES={CASES}); "
        f"{sum('sub_rc' in r for r in results)} also through `python -m fpkit verify`"
    )
    for (key, outcome), n in sorted(counts.items()):
        print(f"[fuzz] {key:28s} {outcome:34s} {n}")
    totals = collections.Counter("fpkit error" if r["outcome"].startswith("fpkit:") else _label(r) for r in results)
    print(f"[fuzz] totals: {dict(totals)}")
    problems = [(r, msg) for r in results if (msg := check(r))]
    keys = ("kind", "op", "path", "how", "name", "value", "edits", "offset", "bit", "region", "dataset", "to")
    report = "\n".join(
        f"case {r['id']} {r['file']} {json.dumps({k: r[k] for k in r if k in keys})}: {msg}" for r, msg in problems[:40]
    )
    assert not problems, f"{len(problems)} fuzz cases failed:\n{report}"
    # every kind of damage was tried and table-data damage was always caught
    assert by_kind["bitflip/data"] >= len(fuzz_files) and by_kind["truncate"] >= len(fuzz_files)
    hit = [r for r in results if r["region"] in ("data", "truncate")]
    assert all(r["outcome"].startswith("fpkit:") or _zstd_unused(r) for r in hit)
    assert sum(map(_zstd_unused, hit)) <= max(2, len(hit) // 100)
    skipped = [r for r in results if r["outcome"] == "skipped"]
    assert len(skipped) <= len(results) // 20, [(r["id"], r.get("detail")) for r in skipped[:10]]
