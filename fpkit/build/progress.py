"""Progress lines of a build on stderr (rewritten in place on a terminal, every 5 s otherwise)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """Counts finished samples of ``total`` and prints the rate and the time left."""

    def __init__(self, total: int, quiet: bool, stream: TextIO | None = None):
        self.total, self.quiet = total, quiet
        self.stream = stream or sys.stderr
        self.done = 0
        self.start = time.perf_counter()
        self.last = 0.0
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()

    def update(self, n: int, images: int) -> None:
        """``n`` more samples are done, each with ``images`` views."""
        self.done += n
        now = time.perf_counter()
        if self.quiet or (now - self.last < (0.5 if self.tty else 5.0) and self.done < self.total):
            return
        self.last = now
        el = now - self.start
        rate = self.done / el if el > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else 0.0
        line = (
            f"[fpkit build] {self.done}/{self.total} samples  {rate * images:,.0f} img/s  "
            f"ETA {int(eta // 60)}:{int(eta % 60):02d}"
        )
        self.stream.write(("\r" + line) if self.tty else line + "\n")
        if self.tty and self.done >= self.total:
            self.stream.write("\n")
        self.stream.flush()
