"""The one escaping path for values placed into JavaScript, and for HTML attributes.

Every value that reaches a template is serialised as JSON and then made safe for an inline
``<script>`` element, the same rule as Flask's ``tojson``: ``<``, ``>``, ``&``, ``'``, U+2028 and
U+2029 become ``\\uXXXX`` escapes. Nothing is ever placed into JavaScript by string formatting.

Jinja's ``htmlsafe_json_dumps`` (its ``tojson`` filter) escapes the first four; the JSON it is given is
written here: keys sorted, no white space, non-ASCII kept as it is (smaller), NaN and Infinity refused
(they are not JSON), and the two line separators escaped (older JavaScript engines end a string at them).
"""

from __future__ import annotations

import html
import json
from typing import Any

from jinja2 import Undefined, UndefinedError
from jinja2.utils import htmlsafe_json_dumps
from markupsafe import Markup

_LINE_SEPARATORS = str.maketrans({"\u2028": "\\u2028", "\u2029": "\\u2029"})


def script_json(value: Any) -> Markup:
    """Return ``value`` as a JavaScript literal that is safe inside an inline ``<script>``."""
    return htmlsafe_json_dumps(value, dumps=_json_without_line_separators, ensure_ascii=False, sort_keys=True,
                               separators=(",", ":"), allow_nan=False, default=_not_json)


def html_attribute(value: str) -> Markup:
    """Return ``value`` escaped for a double-quoted HTML attribute."""
    return Markup(html.escape(value, quote=True))


def _json_without_line_separators(value: Any, **options: Any) -> str:
    return json.dumps(value, **options).translate(_LINE_SEPARATORS)


def _not_json(value: Any) -> Any:
    if isinstance(value, Undefined):
        # A value missing from the template context: a StrictUndefined raises UndefinedError, naming it, as
        # soon as it is turned into a string; any other Undefined is refused here all the same.
        str(value)
        raise UndefinedError("a template value is undefined")
    raise TypeError(f"Object of type {value.__class__.__name__} is not JSON serializable")
