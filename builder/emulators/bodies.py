"""What both emulators need to judge a JSON body: how deeply it nests, and a parse error on one short line."""

from __future__ import annotations

from typing import Any


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
