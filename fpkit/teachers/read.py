"""Read a teacher file into Python objects behind the trust gate: safely, or by running its code once trusted."""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

import torch

from fpkit.errors import ConfigError, FormatError, UntrustedCodeError
from fpkit.teachers.export import export_module
from fpkit.teachers.messages import first_line

_TRUST_FIX = (
    "pass --trust-teacher-code (trust_code=True) only if you trust its author, or re-save it "
    "as a state_dict with torch.save(model.state_dict(), path) and pass --arch NAME"
)


def untrusted(path: Path, what: str) -> UntrustedCodeError:
    """The refusal of ``path``, which is ``what`` and would run code from the file if loaded."""
    return UntrustedCodeError(f"{path} is {what}; loading it would run code from the file. Fix: {_TRUST_FIX}")


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file, on the CPU (reading one runs no code from it)."""
    try:
        from safetensors import SafetensorError
        from safetensors.torch import load_file
    except ImportError as e:
        raise ConfigError(
            f"{path} is a safetensors file and the safetensors package is missing; pip install safetensors"
        ) from e
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise FormatError(f"{path} is not a readable safetensors file ({e}); check or re-save the file") from e


def torch_load_safe(path: Path) -> Any:
    """``torch.load(weights_only=True)``; UntrustedCodeError when it needs arbitrary pickles."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        ref = f" (it references {found.group(1)})" if found else ""
        raise UntrustedCodeError(
            f"{path} holds pickled Python objects beyond tensors, such as a whole nn.Module "
            f"saved with torch.save(model, path){ref}; loading it would run code from the file. "
            f"Fix: {_TRUST_FIX}"
        ) from e
    except (RuntimeError, EOFError, ValueError, OSError, AttributeError, KeyError) as e:
        raise FormatError(
            f"{path} is not a PyTorch checkpoint or safetensors file ({first_line(e)}); "
            "pass a file written by torch.save or safetensors"
        ) from e


def load_code(path: Path, kind: str) -> Any:
    """Load a file by executing code from it; only called after trust was granted."""
    try:
        if kind == "torchscript":
            return torch.jit.load(str(path), map_location="cpu")
        if kind == "torch_export":
            return export_module(torch.export.load(str(path)), path)
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # any failure of foreign code is reported as a bad file
        raise FormatError(f"{path} could not be loaded as {kind} ({first_line(e)}); check the file") from e


__all__ = ["load_code", "read_safetensors", "torch_load_safe", "untrusted"]
