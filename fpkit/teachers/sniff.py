"""Tell a teacher file's kind from its bytes, without unpickling or running anything from it."""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path

from fpkit.errors import FormatError

# torch.save's legacy (non-zip) format starts with the pickled magic number 0x1950a86a20f9469cfc6c.
_LEGACY_TORCH_MAGIC = b"\x80\x02\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little")


def sniff(path: Path) -> str:
    """Classify a file without unpickling or running anything from it.

    Returns one of "safetensors", "torchscript", "torch_export", "torch_zip", "pickle".
    """
    with open(path, "rb") as f:
        head = f.read(16)
    if path.suffix == ".safetensors" or _looks_like_safetensors(path, head):
        return "safetensors"
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
        except (zipfile.BadZipFile, OSError) as e:
            raise FormatError(
                f"{path} is a damaged zip file, not a PyTorch checkpoint or safetensors file; check the file"
            ) from e
        inner = [n.split("/", 1)[1] if "/" in n else n for n in names]
        if path.suffix == ".pt2" or any(
            n == "archive_format" or n.startswith("serialized_exported_program") for n in inner
        ):
            return "torch_export"
        if any(n == "constants.pkl" or n.startswith("code/") for n in inner):
            return "torchscript"
        return "torch_zip"
    if path.suffix == ".pt2":
        return "torch_export"
    if head.startswith(_LEGACY_TORCH_MAGIC) or (head[:1] == b"\x80" and head[1:2] in b"\x02\x03\x04\x05"):
        return "pickle"
    raise FormatError(
        f"{path} is not a PyTorch checkpoint or safetensors file; pass a file written by torch.save or safetensors"
    )


def _looks_like_safetensors(path: Path, head: bytes) -> bool:
    if len(head) < 9:
        return False
    (header_len,) = struct.unpack("<Q", head[:8])
    return 2 <= header_len <= path.stat().st_size - 8 and head[8:9] == b"{"


__all__ = ["sniff"]
