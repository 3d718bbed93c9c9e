"""The weights digest: one SHA-256 identifying a teacher's state_dict (spec section 6)."""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Mapping

import torch

from fpkit.errors import FormatError


def weights_sha256(state_dict: Mapping[str, torch.Tensor]) -> str:
    """Return the hex SHA-256 identifying a set of weights.

    Definition (normative, part of fpkit's file format): one SHA-256 over the entries of
    ``state_dict`` taken in sorted key order (Python ``sorted`` on the ``str`` keys, i.e. by
    code point).  Each entry contributes, concatenated with nothing in between entries:

    1. the key encoded as UTF-8, then a NUL byte (``0x00``);
    2. the dtype name without the ``torch.`` prefix (``float32``, ``float16``, ``bfloat16``,
       ``int64``, ``bool``...), ASCII, then NUL;
    3. the shape as decimal integers joined by ``,`` with no spaces (the empty string for a
       0-dim tensor, e.g. ``num_batches_tracked``), ASCII, then NUL;
    4. the tensor's raw element bytes: C-contiguous (row-major), little-endian, as stored on
       the CPU.

    Buffers count like parameters, so pass ``model.state_dict()`` (BatchNorm running statistics
    and ``num_batches_tracked`` included).  Bytes are hashed after any dtype conversion done by
    loading into the model, so the same model gives the same digest whatever file it came from.

    Raises:
        FormatError: a value is not a tensor.
    """
    h = hashlib.sha256()
    for key in sorted(state_dict):
        tensor = state_dict[key]
        if not isinstance(tensor, torch.Tensor):
            raise FormatError(
                f"state_dict entry {key!r} is a {type(tensor).__name__}, not a tensor; "
                "pass a mapping of names to tensors"
            )
        h.update(key.encode("utf-8") + b"\0")
        h.update(str(tensor.dtype).removeprefix("torch.").encode("ascii") + b"\0")
        h.update(",".join(str(int(s)) for s in tensor.shape).encode("ascii") + b"\0")
        h.update(_tensor_bytes(tensor))
    return h.hexdigest()


def _tensor_bytes(tensor: torch.Tensor) -> bytes:
    t = tensor.detach().to("cpu").contiguous().reshape(-1)
    if t.numel() == 0:
        return b""
    raw = t.view(torch.uint8)
    if sys.byteorder != "little" and t.element_size() > 1:
        raw = raw.view(-1, t.element_size()).flip(1).reshape(-1)
    return raw.numpy().tobytes()


__all__ = ["weights_sha256"]
