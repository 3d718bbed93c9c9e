"""The trust gate: files that would run code are refused before anything runs, and load once trusted."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch
from _teacher_helpers import check_teacher, same_outputs

from fpkit.errors import FormatError, UntrustedCodeError
from fpkit.teachers import load_teacher, weights_sha256


def test_pickled_module_refused_then_trusted(tmp_path: Path, net: torch.nn.Module) -> None:
    path = tmp_path / "whole.pt"
    torch.save(net, path)
    with pytest.raises(UntrustedCodeError) as info:
        load_teacher(path)
    msg = str(info.value)
    assert "--trust-teacher-code" in msg and "state_dict()" in msg and "\n" not in msg
    t = load_teacher(path, trust_code=True)
    check_teacher(t)
    assert (t.source_kind, t.trusted_code, t.arch, t.num_classes) == ("pickled_module", True, "resnet8", 10)
    assert t.weights_sha256 == weights_sha256(net.state_dict())
    # with --arch, the weights move into a freshly built model
    t2 = load_teacher(path, trust_code=True, arch="resnet8")
    assert t2.weights_sha256 == t.weights_sha256 and t2.trusted_code


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_torchscript_refused_then_trusted(tmp_path: Path, net: torch.nn.Module) -> None:
    path = tmp_path / "ts.pt"
    torch.jit.save(torch.jit.trace(net, torch.randn(1, 3, 32, 32)), str(path))
    with pytest.raises(UntrustedCodeError, match="TorchScript"):
        load_teacher(path)
    t = load_teacher(path, trust_code=True)
    check_teacher(t)
    # TorchScript cannot be tapped (tests below), so it has no default layer
    assert (t.source_kind, t.trusted_code, t.default_layer) == ("torchscript", True, None)
    assert t.weights_sha256 == weights_sha256(net.state_dict())
    same_outputs(t.model, net)


def test_torch_export_refused(tmp_path: Path) -> None:
    model = torch.nn.Linear(4, 2).eval()
    path = tmp_path / "m.pt2"
    torch.export.save(torch.export.export(model, (torch.zeros(1, 4),)), str(path))
    with pytest.raises(UntrustedCodeError, match="torch.export"):
        load_teacher(path)
    renamed = tmp_path / "m.pt"
    os.replace(path, renamed)  # detected from the archive's entries, not the suffix
    with pytest.raises(UntrustedCodeError, match="torch.export"):
        load_teacher(renamed)
    t = load_teacher(renamed, trust_code=True)
    assert (t.source_kind, t.trusted_code, t.num_classes) == ("torch_export", True, None)
    assert t.weights_sha256 == weights_sha256(model.state_dict())


class _Payload:
    """Unpickling this creates a marker file: stands in for any code a checkpoint could run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return (open, (str(self.marker), "w"))


def test_malicious_torch_save_never_executed(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"model": _Payload(marker)}, path)
    with pytest.raises(UntrustedCodeError):
        load_teacher(path)
    assert not marker.exists()
    with pytest.raises(UntrustedCodeError):
        load_teacher(path, arch="resnet8", num_classes=10)
    assert not marker.exists()
    # the payload is real: a trusted load does run it
    with pytest.raises(FormatError):
        load_teacher(path, trust_code=True)
    assert marker.exists()


def test_malicious_raw_pickle_never_executed(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(_Payload(marker), protocol=2))
    with pytest.raises(UntrustedCodeError):
        load_teacher(path)
    assert not marker.exists()
