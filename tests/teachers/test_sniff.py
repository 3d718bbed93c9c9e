"""Telling a file's kind from its bytes: legacy and zip torch.save files, safetensors, and garbage."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from _teacher_helpers import same_outputs

from fpkit.errors import FormatError
from fpkit.teachers import load_teacher, weights_sha256


def test_legacy_non_zip_format(tmp_path: Path, net: torch.nn.Module) -> None:
    path = tmp_path / "legacy.pt"
    torch.save(net.state_dict(), path, _use_new_zipfile_serialization=False)
    t = load_teacher(path)
    assert (t.arch, t.source_kind) == ("resnet8", "state_dict")
    assert t.weights_sha256 == weights_sha256(net.state_dict())


def test_safetensors(tmp_path: Path, net: torch.nn.Module) -> None:
    safetensors_torch = pytest.importorskip("safetensors.torch")
    path = tmp_path / "t.safetensors"
    safetensors_torch.save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    t = load_teacher(path)
    assert (t.arch, t.source_kind) == ("resnet8", "safetensors")
    assert t.weights_sha256 == weights_sha256(net.state_dict())
    same_outputs(t.model, net)


@pytest.mark.parametrize("content", [b"hello, this is a text file\n", bytes(range(256)) * 4, b"", b"PK\x03\x04junk"])
def test_garbage_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "t.pt"
    path.write_bytes(content)
    with pytest.raises(FormatError, match="not a PyTorch checkpoint or safetensors file"):
        load_teacher(path)


def test_random_zip_is_format_error(tmp_path: Path) -> None:
    import zipfile

    path = tmp_path / "t.pt"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("hello.txt", "hi")
    with pytest.raises(FormatError, match="not a PyTorch checkpoint"):
        load_teacher(path)


def test_bad_safetensors(tmp_path: Path) -> None:
    path = tmp_path / "t.safetensors"
    path.write_bytes(b"not safetensors at all")
    with pytest.raises(FormatError):
        load_teacher(path)
