"""Text that came from a file, made safe to print.

Names and strings read from a fingerprint file (layer, class and dataset names, the teacher's
architecture, HDF5 object names quoted in an error) are untrusted: a damaged or hostile file must
not be able to write control or escape sequences to a user's terminal, nor split a one-line error
over several lines.  :func:`printable` is the one place that escapes them; the CLI's error path,
``fpkit inspect``/``audit`` text and plot titles all go through it.
"""

from __future__ import annotations

import unicodedata

_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
# categories escaped: controls (C0, DEL, C1), format characters (bidi overrides and isolates,
# zero-width characters), surrogates, private use, unassigned, line and paragraph separators
_UNSAFE = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}


def _escape(ch: str) -> str:
    if ch in _SHORT:
        return _SHORT[ch]
    o = ord(ch)
    return f"\\x{o:02x}" if o < 0x100 else f"\\u{o:04x}" if o < 0x10000 else f"\\U{o:08x}"


def printable(s: object) -> str:
    """``str(s)`` with every non-printable character escaped as repr does (``\\x1b``, ``\\u202e``,
    ``\\n``); ordinary letters of any script, digits, punctuation and spaces are kept."""
    s = str(s)
    if s.isascii() and s.isprintable():  # the common case, fast
        return s
    return "".join(
        _escape(ch) if ch in _SHORT or unicodedata.category(ch) in _UNSAFE or ch.isspace() and ch != " " else ch
        for ch in s
    )


def printable_tree(obj):
    """A copy of a JSON-like value (dicts, lists, strings, numbers) with every string, keys
    included, passed through :func:`printable`."""
    if isinstance(obj, str):
        return printable(obj)
    if isinstance(obj, dict):
        return {printable_tree(k): printable_tree(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(printable_tree(v) for v in obj)
    return obj


__all__ = ["printable", "printable_tree"]
