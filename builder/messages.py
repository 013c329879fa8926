"""Values and text as they may appear in a message: on one line, short, every control character escaped.

A message that quotes what the user gave (a setting's value, an unknown key, a flag's argument) must not
become a second line, a terminal escape sequence or ten megabytes of output. Everything driptag shows of
such input goes through `one_line` or `show`; `kind_of` names a JSON value's kind ("not an array").
"""

from __future__ import annotations

import reprlib
from typing import Any

# Containers are shown a few items and two levels deep: a bounded repr even for a deeply nested JSON value.
_REPR = reprlib.Repr()
_REPR.maxlevel = 2
_REPR.maxdict = _REPR.maxlist = _REPR.maxtuple = _REPR.maxset = 4
_REPR.maxstring = _REPR.maxother = _REPR.maxlong = 80


def _escaped(text: str) -> str:
    """`text` with every character that is not printable (newlines, NUL, U+2028, …) as its Python escape."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def one_line(text: str, limit: int = 300) -> str:
    """`text` on one line: control characters escaped, cut after `limit` characters with an ellipsis."""
    escaped = _escaped(text[:limit])
    return escaped if len(text) <= limit else escaped + "…"


def show(value: Any, limit: int = 40) -> str:
    """The offending value for a message: a string quoted (with its length when cut), anything else as
    its short repr."""
    if isinstance(value, str):
        if len(value) <= limit:
            return f"'{_escaped(value)}'"
        return f"'{_escaped(value[:limit])}'… ({len(value):,} characters)"
    try:
        text = _REPR.repr(value)
    except ValueError:  # an int too long to turn into digits (Python's int/str conversion limit)
        text = f"an integer of {value.bit_length():,} bits" if isinstance(value, int) else type(value).__name__
    return one_line(text, limit)


def kind_of(value: Any) -> str:
    """A decoded JSON value's kind, with its article, as a message says what it got: "a string", "null"."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
