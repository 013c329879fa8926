"""Minifying the loader: comments and white space removed, local names shortened.

calmjs.parse is pure Python and reads ES5, which is why the loader template is kept ES5. Two rewrites of
its syntax tree make the output shorter still; they go through calmjs.parse's public node constructors,
iteration and attributes only.
"""

from __future__ import annotations

from typing import Any

from calmjs.parse import asttypes, es5
from calmjs.parse.unparsers.es5 import minify_print


def minify(source: str) -> str:
    """Remove comments and white space, shorten local names (calmjs.parse reads ES5), and rewrite what
    has a shorter equal: true and false as !0 and !1, and consecutive var statements as one."""
    program = _shortened(es5(source))
    return minify_print(program, obfuscate=True, obfuscate_globals=False, drop_semi=True) + "\n"


# Nodes that hold their statements (or declarations) only as children, not as named attributes: they are
# rebuilt from their children with their own constructor.
_LISTS = (asttypes.Program, asttypes.Block, asttypes.VarStatement)


def _shortened(node: Any) -> Any:
    """`node` with the rewrites applied below it; the node to put in its place (a new one for _LISTS)."""
    if isinstance(node, asttypes.Boolean):
        node.value = "!0" if node.value == "true" else "!1"
        return node
    if isinstance(node, _LISTS):
        children = [_shortened(child) for child in node]
        return type(node)(children if isinstance(node, asttypes.VarStatement) else _join_vars(children))
    for name, value in list(vars(node).items()):
        if name.startswith("_"):
            continue
        if isinstance(value, asttypes.Node):
            setattr(node, name, _shortened(value))
        elif isinstance(value, list):
            setattr(node, name, [_shortened(item) if isinstance(item, asttypes.Node) else item for item in value])
    if isinstance(node, asttypes.FuncBase):
        node.elements = _join_vars(node.elements)
    return node


def _join_vars(statements: list[Any]) -> list[Any]:
    """Consecutive var statements as one: `var a=1;var b` is `var a=1,b`."""
    joined: list[Any] = []
    for statement in statements:
        if isinstance(statement, asttypes.VarStatement) and joined and isinstance(joined[-1], asttypes.VarStatement):
            joined[-1] = asttypes.VarStatement([*joined[-1], *statement])
        else:
            joined.append(statement)
    return joined
