"""What both emulators need to judge a JSON body: strict parsing, how deeply it nests, and a parse error on
one short line."""

from __future__ import annotations

import json
import math
from typing import Any


def strict_json(data: bytes) -> Any:
    """The JSON document in UTF-8 ``data``. NaN and Infinity are refused, and so is a number beyond a double's
    range (1e400), which Python would read as infinity and serve back as Infinity: not JSON. Raises
    ValueError (JSONDecodeError and UnicodeDecodeError are ValueErrors) or RecursionError."""
    return json.loads(data.decode("utf-8"), parse_constant=_reject_constant, parse_float=_finite_float)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:40]} is beyond a double's range")
    return value


def nesting(value: Any, limit: int) -> int:
    """How deeply lists and dicts nest in `value`, without recursion; it stops counting past `limit`."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (list, dict)):
            deepest = max(deepest, depth)
            if depth > limit:
                break
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return deepest


def short_error(exc: BaseException) -> str:
    """A parser's error for an answer: at most 120 characters."""
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 120 else text[:117] + "..."
