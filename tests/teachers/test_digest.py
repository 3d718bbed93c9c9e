"""The weights digest: its normative definition, what it sees, and its stability across re-saves."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from fpkit.teachers import load_teacher, weights_sha256


def _independent_sha(sd: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for key in sorted(sd):
        t = sd[key].detach().cpu().contiguous()
        h.update(key.encode() + b"\x00")
        h.update({torch.float32: b"float32", torch.int64: b"int64", torch.float16: b"float16"}[t.dtype])
        h.update(b"\x00" + ",".join(map(str, t.shape)).encode() + b"\x00")
        h.update(t.numpy().astype(t.numpy().dtype.newbyteorder("<")).tobytes(order="C"))
    return h.hexdigest()


def test_weights_sha256_definition(net: torch.nn.Module) -> None:
    sd = net.state_dict()
    assert weights_sha256(sd) == _independent_sha(sd)
    small = {"b": torch.tensor(3, dtype=torch.int64), "a": torch.arange(6, dtype=torch.float16).view(2, 3)}
    expected = hashlib.sha256(
        b"a\x00float16\x002,3\x00"
        + small["a"].numpy().astype("<f2").tobytes()
        + b"b\x00int64\x00\x00"
        + (3).to_bytes(8, "little")
    ).hexdigest()
    assert weights_sha256(small) == expected


def test_weights_sha256_sees_buffers_and_transposes(net: torch.nn.Module) -> None:
    sd = dict(net.state_dict())
    base = weights_sha256(sd)
    changed = dict(sd, **{"bn1.num_batches_tracked": sd["bn1.num_batches_tracked"] + 1})
    assert weights_sha256(changed) != base
    w = sd["fc.weight"]
    assert weights_sha256(dict(sd, **{"fc.weight": w.t().contiguous().t()})) == base  # layout-free
    assert weights_sha256(dict(sd, **{"fc.weight": w.reshape(-1)})) != base  # shape counts


def test_weights_sha256_round_trip(tmp_path: Path, net: torch.nn.Module) -> None:
    path = tmp_path / "t.pt"
    torch.save(net.state_dict(), path)
    first = load_teacher(path)
    again = tmp_path / "again.pt"
    torch.save({"model": first.model.state_dict()}, again)
    assert load_teacher(again).weights_sha256 == first.weights_sha256 == weights_sha256(net.state_dict())
