"""README.md's promises run as written: the embedded default build and the training snippet."""

from __future__ import annotations

import re
from pathlib import Path

from click.testing import CliRunner

from fpkit.cli import main
from fpkit.format import open_fingerprints
from fpkit.losses import LinearWarmup

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_setup_commands_are_the_ci_commands():
    text = README.read_text()
    ci = (README.parent / ".ci" / "run").read_text()
    assert 'pip install -e ".[test]"' in text and 'pip install -e ".[test]"' in ci
    assert ".venv/bin/python -m pytest -n 2" in text and ".venv/bin/python -m pytest -n 2" in ci


def test_embedded_default_build_and_training_snippet(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(main, ["build"])  # the README's first command's job
    assert r.exit_code == 0, r.output
    out = tmp_path / "embedded-embedded-test.h5"
    assert f"wrote {out.name}" in r.stderr
    fp = open_fingerprints(out)
    assert fp.num_samples == 500 and fp.num_classes == 10
    assert fp.metadata.teacher.arch == "resnet8"
    assert fp.metadata.teacher.accuracy.top1 > 0.5  # a real, trained teacher
    (snippet,) = _python_blocks()
    assert "epochs = 30\n" in snippet
    snippet = snippet.replace("epochs = 30\n", "epochs = 2\n")  # the same code, two epochs
    scope: dict = {}
    exec(compile(snippet, str(README), "exec"), scope)  # runs as written
    parts = scope["parts"]  # the last batch's
    assert scope["loss"].item() > 0 and set(parts) >= {"ce", "lambda", "term/layer3", "weighted/layer3", "total"}
    # two epochs: a fifth of the run rounds to no warm-up, so epoch 1 trains at the recommended 30
    assert parts["lambda"] == 30.0 == LinearWarmup.for_run(2)(1)
    assert parts["weighted/layer3"] >= 0.1 * parts["total"]  # the fingerprint term is a material part
    printed = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in printed] == ["epoch 0", "epoch 1"] and "fingerprint" in printed[-1]
