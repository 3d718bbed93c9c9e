"""fpkit._text.printable: names read from a file reach the terminal escaped, on one line."""

import pytest

from fpkit._text import printable, printable_tree


@pytest.mark.parametrize(
    "raw, shown",
    [
        ("layer1.conv", "layer1.conv"),
        ("héllo 日本 Ünïcode", "héllo 日本 Ünïcode"),  # ordinary letters of any script are kept
        ("a\x1b[31mb", "a\\x1b[31mb"),  # ESC: colours, cursor moves, title changes
        ("x\x08\x0cy\x00", "x\\x08\\x0cy\\x00"),  # backspace, form feed, NUL
        ("l1\nl2\r\t", "l1\\nl2\\r\\t"),  # a message stays on one line
        ("\x7f\x85\x9b", "\\x7f\\x85\\x9b"),  # DEL and C1 controls (CSI, NEL)
        ("\u202eevil\u2066\u2069\u200b", "\\u202eevil\\u2066\\u2069\\u200b"),  # bidi overrides, zero width
        ("\u2028\u2029", "\\u2028\\u2029"),  # line and paragraph separators
        ("bad\udcff", "bad\\udcff"),  # a lone surrogate (bytes that were not UTF-8)
        ("\U000e0001", "\\U000e0001"),  # a tag character (format, outside the BMP)
        ("C:\\path", "C:\\path"),
    ],
)
def test_printable(raw, shown):
    assert printable(raw) == shown
    assert printable(raw).isprintable()


def test_printable_is_idempotent_and_takes_any_object():
    s = "a\x1b\u202e\n"
    assert printable(printable(s)) == printable(s)
    assert printable(3) == "3" and printable(None) == "None"


def test_printable_tree_escapes_keys_and_values_only_of_strings():
    tree = {"k\x1b": ["v\n", 1, 2.5, None, True, {"x": "\u202e"}], "n": (1, "\x08")}
    assert printable_tree(tree) == {"k\\x1b": ["v\\n", 1, 2.5, None, True, {"x": "\\u202e"}], "n": (1, "\\x08")}
