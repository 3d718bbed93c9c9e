"""Architectures by name: CIFAR ResNets, torchvision models and package.module:callable."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest
import torch

from fpkit.errors import ConfigError
from fpkit.teachers import load_teacher, resolve_arch


def test_torchvision_arch(tmp_path: Path) -> None:
    tv = pytest.importorskip("torchvision")
    model = tv.models.resnet18(num_classes=10)
    path = tmp_path / "r18.pt"
    torch.save(model.state_dict(), path)
    t = load_teacher(path, arch="torchvision:resnet18")
    assert (t.arch, t.num_classes, t.default_layer, t.default_pooling) == ("torchvision:resnet18", 10, "layer4", "avg")
    with pytest.raises(ConfigError, match="cannot tell the architecture"):
        load_teacher(path)
    assert load_teacher(path, arch="resnet18").arch == "torchvision:resnet18"


def test_callable_arch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = tmp_path / "mypkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "nets.py").write_text(
        textwrap.dedent(
            """
            import torch

            def build(num_classes):
                return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, num_classes))
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    from mypkg.nets import build  # type: ignore[import-not-found]

    model = build(num_classes=4)
    path = tmp_path / "t.pt"
    torch.save(model.state_dict(), path)
    t = load_teacher(path, arch="mypkg.nets:build", num_classes=4)
    assert (t.arch, t.num_classes) == ("mypkg.nets:build", 4)
    with pytest.raises(ConfigError, match="cannot import"):
        resolve_arch("nopkg_xyz.nets:build", 4)
    with pytest.raises(ConfigError, match="no attribute"):
        resolve_arch("mypkg.nets:missing", 4)
    sys.modules.pop("mypkg.nets", None)
    sys.modules.pop("mypkg", None)


def test_resolve_arch_unknown() -> None:
    with pytest.raises(ConfigError, match="unknown architecture"):
        resolve_arch("no_such_net", 10)
