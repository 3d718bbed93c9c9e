"""One build across processes: torch.distributed when launched by torchrun, else one process."""

from __future__ import annotations

import os
from typing import Any

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

    def close(self) -> None:
        if self.enabled and self.dist.is_initialized():
            self.dist.destroy_process_group()
