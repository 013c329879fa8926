"""Minifying the loader: comments and white space removed, local names shortened.

calmjs.parse is pure Python and reads ES5, which is why the loader template is kept ES5.
"""

from __future__ import annotations

from typing import Any

from calmjs.parse import asttypes, es5
from calmjs.parse.unparsers.es5 import minify_print
from calmjs.parse.walkers import walk


def minify(source: str) -> str:
    """Remove comments and white space, shorten local names (calmjs.parse reads ES5), and rewrite what
    has a shorter equal: true and false as !0 and !1, and consecutive var statements as one."""
    program = es5(source)
    for node in [program, *walk(program)]:  # walk() does not yield the program itself
        if isinstance(node, asttypes.Boolean):
            node.value = "!0" if node.value == "true" else "!1"
        elif isinstance(node, asttypes.FuncBase):
            node.elements = _join_vars(node.elements)
        elif isinstance(node, (asttypes.Program, asttypes.Block)):
            node._children_list = _join_vars(node._children_list)
    return minify_print(program, obfuscate=True, obfuscate_globals=False, drop_semi=True) + "\n"


def _join_vars(statements: list[Any]) -> list[Any]:
    joined: list[Any] = []
    for statement in statements:
        if isinstance(statement, asttypes.VarStatement) and joined and isinstance(joined[-1], asttypes.VarStatement):
            joined[-1]._children_list.extend(statement._children_list)
        else:
            joined.append(statement)
    return joined
