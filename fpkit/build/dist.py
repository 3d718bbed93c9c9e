"""One build across processes: torch.distributed when launched by torchrun, else one process."""

from __future__ import annotations

import os
from typing import Any, Callable

from .. import errors
from ..devices import resolve_device


class Dist:
    """torch.distributed when launched by torchrun with WORLD_SIZE > 1, else a single process.

    Every rank computes the chunks ``c % world == rank`` into the shared work folder; rank 0
    prepares the folder and writes the file.
    """

    def __init__(self, device_spec: str):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.device = resolve_device(device_spec, self.local_rank)
        self.enabled = self.world > 1
        if self.enabled:
            import torch.distributed as dist

            if not dist.is_initialized():
                dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
            self.dist = dist

    def barrier(self) -> None:
        if self.enabled:
            self.dist.barrier()

    def share(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank (the value itself in a single process)."""
        if not self.enabled:
            return value
        box = [value]
        self.dist.broadcast_object_list(box, src=0)
        return box[0]

    def on_rank0(self, fn: Callable[[], Any]) -> Any:
        """``fn()`` run on rank 0, its result on every rank.  An FpkitError on rank 0 is raised on
        every rank with the same class and message (the other ranks would otherwise die waiting
        with a communication error instead of fpkit's message)."""
        if not self.enabled:
            return fn()
        if self.rank == 0:
            try:
                value = fn()
            except errors.FpkitError as e:
                self.share(("error", type(e).__name__, str(e)))
                raise
            self.share(("ok", value))
            return value
        outcome = self.share(None)
        if outcome[0] == "error":
            raise _same_error(outcome[1], f"{outcome[2]} (reported by rank 0)")
        return outcome[1]

    def close(self) -> None:
        if self.enabled and self.dist.is_initialized():
            self.dist.destroy_process_group()


def _same_error(name: str, message: str) -> errors.FpkitError:
    cls = getattr(errors, name, errors.FpkitError)
    if not (isinstance(cls, type) and issubclass(cls, errors.FpkitError)):
        cls = errors.FpkitError
    try:
        return cls(message)
    except TypeError:  # a class whose constructor wants more than a message
        return errors.FpkitError(message)
