"""load_teacher and load_embedded_teacher: what a loaded Teacher holds, and paths that are not files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from _teacher_helpers import check_teacher, same_outputs

from fpkit.errors import ConfigError, FpkitFileNotFoundError
from fpkit.teachers import load_embedded_teacher, load_teacher, weights_sha256


def test_plain_state_dict(tmp_path: Path, net: torch.nn.Module) -> None:
    path = tmp_path / "t.pt"
    torch.save(net.state_dict(), path)
    t = load_teacher(path, arch="resnet8")
    check_teacher(t)
    assert (t.arch, t.num_classes, t.source_kind, t.trusted_code) == ("resnet8", 10, "state_dict", False)
    assert t.default_layer == "layer3"
    assert t.weights_sha256 == weights_sha256(net.state_dict())
    same_outputs(t.model, net)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FpkitFileNotFoundError):
        load_teacher(tmp_path / "nope.pt")


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="folder"):
        load_teacher(tmp_path)


def test_embedded_teacher() -> None:
    from importlib import resources

    if not (resources.files("fpkit") / "data" / "embedded_teacher.pt").is_file():
        pytest.skip("embedded teacher not generated yet (python examples/make_embedded.py)")
    t = load_embedded_teacher()
    check_teacher(t)
    assert (t.arch, t.num_classes, t.source_kind, t.trusted_code, t.default_layer) == (
        "resnet8",
        10,
        "embedded",
        False,
        "layer3",
    )
