"""The one escaping path for values placed into JavaScript, and for HTML attributes.

Every value that reaches a template is serialised as JSON and then made safe for an inline
``<script>`` element, the same rule as Flask's ``tojson``: ``<``, ``>``, ``&``, ``'``, U+2028 and
U+2029 become ``\\uXXXX`` escapes. Nothing is ever placed into JavaScript by string formatting.
"""

from __future__ import annotations

import html
import json
from typing import Any

from jinja2 import Undefined
from markupsafe import Markup

_SCRIPT_UNSAFE = {
    "<": "\\u003c",
    ">": "\\u003e",
    "&": "\\u0026",
    "'": "\\u0027",
    "\u2028": "\\u2028",
    "\u2029": "\\u2029",
}
_TABLE = str.maketrans(_SCRIPT_UNSAFE)


def script_json(value: Any) -> Markup:
    """Return ``value`` as a JavaScript literal that is safe inside an inline ``<script>``."""
    text = json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"), allow_nan=False,
                      default=_not_json)
    return Markup(text.translate(_TABLE))


def html_attribute(value: str) -> Markup:
    """Return ``value`` escaped for a double-quoted HTML attribute."""
    return Markup(html.escape(value, quote=True))


def _not_json(value: Any) -> Any:
    if isinstance(value, Undefined):  # a value missing from the template context: say which one
        value._fail_with_undefined_error()
    raise TypeError(f"Object of type {value.__class__.__name__} is not JSON serializable")
