"""Which torch device a build or a training run uses: one rule, one set of messages."""

from __future__ import annotations

import torch

from .errors import ConfigError


def resolve_device(spec: str, local_rank: int = 0) -> torch.device:
    """The device named by ``spec`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``).

    ``auto`` is CUDA when available, else the CPU; a bare ``cuda`` means ``cuda:<local_rank>``
    (the process's GPU under torchrun).

    Raises:
        ConfigError: not a device, not cpu/cuda, CUDA asked for but absent, or no such GPU.
    """
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(spec)
    except (RuntimeError, ValueError, TypeError) as e:
        raise ConfigError(f"--device {spec!r} is not a device; use cpu, cuda, cuda:N or auto") from e
    if dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"--device {spec!r}: fpkit builds on cpu or cuda; use cpu, cuda, cuda:N or auto")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("--device cuda was asked for but no CUDA device is available; use --device cpu")
        if dev.index is None:
            dev = torch.device("cuda", local_rank)
        if dev.index >= torch.cuda.device_count():
            raise ConfigError(
                f"--device {dev} does not exist: this machine has {torch.cuda.device_count()} "
                "CUDA device(s), cuda:0 and up"
            )
    return dev
