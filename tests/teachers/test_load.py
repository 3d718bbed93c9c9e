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


def test_recorded_normalization(tmp_path: Path, net: torch.nn.Module) -> None:
    """Issue 11 item 1: the mean/std a checkpoint records reach the Teacher (both conventions)."""
    sd = net.state_dict()
    cases = [
        ({"model": sd, "mean": [0.4, 0.5, 0.6], "std": [0.2, 0.2, 0.3]}, ((0.4, 0.5, 0.6), (0.2, 0.2, 0.3))),
        ({"state_dict": sd, "normalize": {"mean": [0.1] * 3, "std": [0.5] * 3}}, ((0.1,) * 3, (0.5,) * 3)),
        ({"model": sd, "mean": [0.4, 0.5, 0.6], "std": [0.0, 0.2, 0.3]}, None),  # std 0: not a normalisation
        ({"model": sd, "mean": "imagenet"}, None),
        (sd, None),
    ]
    for i, (obj, want) in enumerate(cases):
        torch.save(obj, tmp_path / f"t{i}.pt")
        assert load_teacher(tmp_path / f"t{i}.pt", arch="resnet8").normalize == want, i
    assert load_embedded_teacher().normalize == ((0.4914, 0.4822, 0.4465), (0.247, 0.2435, 0.2616))
