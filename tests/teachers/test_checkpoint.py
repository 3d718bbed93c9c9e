"""Checkpoint layouts: where the state_dict is, the architecture and classes they name, strict loading."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fpkit.errors import ConfigError, FormatError, MismatchError
from fpkit.models import resnet20
from fpkit.teachers import load_teacher, weights_sha256


def test_repdistiller_checkpoint_with_module_prefix_inferred_arch(tmp_path: Path, net: torch.nn.Module) -> None:
    path = tmp_path / "ckpt_epoch_240.pth"
    sd = {f"module.{k}": v for k, v in net.state_dict().items()}
    torch.save({"model": sd, "epoch": 240, "accuracy": 12.5}, path)
    t = load_teacher(path)  # arch inferred, num_classes from fc
    assert (t.arch, t.num_classes) == ("resnet8", 10)
    assert t.weights_sha256 == weights_sha256(net.state_dict())


@pytest.mark.parametrize("key", ["state_dict", "model_state_dict", "net"])
def test_other_checkpoint_keys(tmp_path: Path, net: torch.nn.Module, key: str) -> None:
    path = tmp_path / "t.pt"
    torch.save({key: net.state_dict(), "optimizer": {"lr": 0.1}}, path)
    assert load_teacher(path).arch == "resnet8"


def test_checkpoint_arch_entry_used(tmp_path: Path) -> None:
    model = resnet20(num_classes=10)
    sd = model.state_dict()
    path = tmp_path / "t.pt"
    torch.save({"model": sd, "arch": "resnet20"}, path)
    assert load_teacher(path).arch == "resnet20"


def test_checkpoint_arch_callable_not_imported(tmp_path: Path, net: torch.nn.Module) -> None:
    """A file must not choose code to import: a 'pkg:callable' arch entry is ignored."""
    path = tmp_path / "t.pt"
    torch.save({"model": net.state_dict(), "arch": "os:system"}, path)
    assert load_teacher(path).arch == "resnet8"


def test_dict_without_state_dict(tmp_path: Path) -> None:
    path = tmp_path / "t.pt"
    torch.save({"epoch": 3, "lr": 0.1}, path)
    with pytest.raises(FormatError, match="no state_dict"):
        load_teacher(path)


def test_unknown_arch_needs_flag(tmp_path: Path) -> None:
    path = tmp_path / "t.pt"
    torch.save(torch.nn.Linear(5, 3).state_dict(), path)
    with pytest.raises(ConfigError, match="--arch"):
        load_teacher(path)


def test_wrong_arch(tmp_path: Path, net: torch.nn.Module) -> None:
    path = tmp_path / "t.pt"
    torch.save(net.state_dict(), path)
    with pytest.raises(MismatchError, match="unexpected|missing") as info:
        load_teacher(path, arch="resnet20")
    assert "--arch" in str(info.value)
    with pytest.raises(MismatchError, match="shape"):
        load_teacher(path, arch="resnet8", num_classes=100)
    with pytest.raises(MismatchError, match="shape"):
        load_teacher(path, arch="resnet8", in_channels=1)
