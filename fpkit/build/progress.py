"""Progress lines of a build on stderr (rewritten in place on a terminal, every 5 s otherwise)."""

from __future__ import annotations

import sys
import time
from typing import TextIO

ESTIMATE_AFTER_S = 2.0  # seconds of teacher loop after which the time is estimated once


def forwards_line(samples: int, k: int, subset: dict | None = None) -> str:
    """The work a build is about to do, said before it starts: samples x views = teacher forwards
    (one forward of one view image), and which part of the split (--samples/--limit)."""
    part = f" ({subset['start']}:{subset['stop']} of {subset['source_num_samples']:,})" if subset else ""
    return (
        f"[fpkit build] {samples:,} samples{part} x {k:,} view{'s' if k != 1 else ''} = "
        f"{samples * k:,} teacher forwards"
    )


def _duration(seconds: float) -> str:
    """``about 42 s``, ``about 12 min``, ``about 3 h 20 min``."""
    if seconds < 90:
        return f"about {seconds:.0f} s"
    minutes = round(seconds / 60)
    return f"about {minutes} min" if minutes < 120 else f"about {minutes // 60} h {minutes % 60} min"


class Progress:
    """Counts finished samples of ``total`` and prints the rates (images, i.e. samples, and
    teacher views per second, over the same span) and the time left."""

    def __init__(self, total: int, quiet: bool, stream: TextIO | None = None):
        self.total, self.quiet = total, quiet
        self.stream = stream or sys.stderr
        self.done = 0
        self.start = time.perf_counter()
        self.last = 0.0
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.estimated = False  # the one-off estimate after the first steps (ESTIMATE_AFTER_S)

    def update(self, n: int, images: int) -> None:
        """``n`` more samples are done, each with ``images`` views."""
        self.done += n
        now = time.perf_counter()
        if not (self.quiet or self.estimated) and self.done < self.total and now - self.start >= ESTIMATE_AFTER_S:
            self.estimated = True
            el = now - self.start
            left = (self.total - self.done) * el / self.done
            self.stream.write(
                ("\r" if self.tty else "") + f"[fpkit build] estimate: {_duration(left)} left for the teacher loop "
                f"(the first {self.done:,} sample{'s' if self.done != 1 else ''} took {el:.1f} s)\n"
            )
        if self.quiet or (now - self.last < (0.5 if self.tty else 5.0) and self.done < self.total):
            return
        self.last = now
        el = now - self.start
        rate = self.done / el if el > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else 0.0
        line = (
            f"[fpkit build] {self.done}/{self.total} samples  {format_rate(rate)} images/s "
            f"({rate * images:,.0f} views/s)  "
            f"ETA {int(eta // 60)}:{int(eta % 60):02d}"
        )
        self.stream.write(("\r" + line) if self.tty else line + "\n")
        if self.tty and self.done >= self.total:
            self.stream.write("\n")
        self.stream.flush()


def format_rate(per_second: float) -> str:
    """A rate with three significant digits below 100 (0.0224, 2.24, 22.4), else whole numbers."""
    return f"{per_second:,.0f}" if per_second >= 100 else f"{per_second:.3g}"
