"""How the teacher modules quote a foreign exception in their own one-line error messages."""

from __future__ import annotations


def first_line(e: BaseException) -> str:
    """The first line of ``e``'s message (at most 200 characters), or its class name if it has none."""
    text = str(e).strip().splitlines()
    return text[0][:200] if text else type(e).__name__
