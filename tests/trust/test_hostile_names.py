"""A file whose names carry terminal control sequences: no fpkit output writes them raw.

Layer, class and dataset names, the teacher's architecture and HDF5 object names are read from
the file, so a hostile or damaged file chooses them.  ``fpkit inspect``, ``audit``, ``verify``,
CLI errors and plot titles must show them escaped (fpkit/_text.py), each message on one line;
--json stays valid JSON (``json.dumps`` escapes them).  Fuzz case 6454 (seed 20261204) printed a
damaged link name with its form feed and backspace through ``fpkit verify``, and called the
object "a NoneType".
"""

from __future__ import annotations

import dataclasses
import json
import subprocess

import _trust_helpers as H
import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from fpkit import testing as T
from fpkit._text import printable
from fpkit.cli import main

EVIL = "x\x1b[31mR\x08\x0c\u202eZ\nY\x9b\x7f"
RAW = ["\x1b", "\x08", "\x0c", "\u202e", "\x9b", "\x7f"]


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    path = tmp_path_factory.mktemp("hostile") / "evil.h5"
    layer = dataclasses.replace(T.example_layers(1, d=6, r=8)[0], name="lay" + EVIL)
    labels = np.arange(20) % 4
    contents = dataclasses.replace(
        T.example_contents([layer], labels),
        classes=[f"c{i}{EVIL}$x^" for i in range(4)],
        teacher=T.example_teacher(arch="arch" + EVIL),
        dataset=T.example_dataset(name="ds" + EVIL),
    )
    T.write_rows(path, contents, {layer.name: T.example_rows(20, 8, 0)})
    return path


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args], prog_name="fpkit")


def _clean(text: str) -> None:
    for ch in RAW:
        assert ch not in text, (ch, text)
    for line in text.split("\n"):
        assert printable(line) == line, line


@pytest.mark.parametrize("command", ["inspect", "audit", "verify"])
def test_text_output_escapes_names(hostile, command):
    res = cli(command, hostile)
    assert res.exit_code == 0, res.output
    _clean(res.stdout)
    _clean(res.stderr)
    if command != "verify":
        assert "x\\x1b[31mR\\x08\\x0c\\u202eZ\\nY" in res.stdout  # shown, escaped as repr does


@pytest.mark.parametrize("command", ["inspect", "audit"])
def test_json_output_stays_valid_and_ascii(hostile, command):
    res = cli(command, hostile, "--json")
    assert res.exit_code == 0, res.output
    assert res.stdout.isascii()
    _clean(res.stdout)
    doc = json.loads(res.stdout)
    dataset = doc["dataset"] if command == "inspect" else doc["metadata"]["dataset"]
    assert dataset["name"] == "ds" + EVIL  # the names themselves are kept exactly


def test_cli_error_quoting_names_is_one_escaped_line(hostile):
    res = cli("inspect", hostile, "--layer", "nope", "--plot", hostile.parent / "x.png")
    assert res.exit_code == 1
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("fpkit: error: ") and "\\x1b" in lines[0], res.stderr
    _clean(res.stderr)


def test_damaged_link_name_through_verify(hostile, tmp_path):
    bad = tmp_path / "link.h5"
    bad.write_bytes(hostile.read_bytes())
    with h5py.File(bad, "a") as f:
        f["zz" + EVIL] = h5py.SoftLink("/nowhere")
    p = subprocess.run([H.PYTHON, "-m", "fpkit", "verify", str(bad)], capture_output=True, env=H.subprocess_env())
    assert p.returncode == 1
    err = p.stderr.decode()
    lines = [ln for ln in err.split("\n") if ln]
    assert len(lines) == 1 and lines[0].startswith("fpkit: error: "), err
    assert "is a soft link" in lines[0] and "NoneType" not in lines[0], lines[0]
    _clean(err)


def test_link_of_unknown_kind_is_named_in_words():
    from fpkit.format.checker import _link_kind

    assert _link_kind(None) == "an object of unknown kind (a damaged or unsupported link)"
    assert _link_kind(h5py.SoftLink("/x")) == "a soft link"
    assert _link_kind(h5py.ExternalLink("f.h5", "/x")) == "an external link"


def test_plot_titles_and_labels_escaped(hostile, tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt
    import matplotlib.text

    from fpkit.format import open_fingerprints
    from fpkit.plot import plot_file

    texts = []
    close = plt.close

    def grab(fig=None):
        texts.extend(t.get_text() for t in fig.findobj(matplotlib.text.Text))
        close(fig)

    monkeypatch.setattr(plt, "close", grab)
    plot_file(open_fingerprints(hostile), tmp_path / "p.png")
    shown = "\n".join(texts)
    for ch in RAW:
        assert ch not in shown
    assert "archx\\x1b[31mR" in shown and "layx\\x1b" in shown and "c0x\\x1b" in shown
    assert "\\$x^" in shown  # a "$" in a name is not read as mathtext
