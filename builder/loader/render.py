"""Rendering the loader: the `js` and `html` outputs, minified or readable, cached per settings.

Templates are rendered by Jinja with StrictUndefined, and every `{{ … }}` must go through one of two
filters: `js` (a value placed into JavaScript, see escaping.py) or `attr` (an HTML attribute). Any other
placement is an error at render time, so a template cannot place a raw value by mistake.

Minifying takes a parser (a third of a second), so it happens once per process, not once per account:
the loader template is rendered with a marker in place of every value, minified, and the markers are
turned back into `{{ name|js }}` placements of a second, minified template. Each settings object then
costs one Jinja render of that template (cached per settings, too), and the per-request `html` with a
fresh nonce only joins the cached parts of the elements around it.
"""

from __future__ import annotations

import base64
import functools
import gzip
import hashlib
import re
import warnings
from typing import Any

import jinja2
from markupsafe import Markup

from .escaping import html_attribute, script_json
from .minify import minify
from ..resources import resource_dir
from .settings import Settings
from ..version import __version__

FORMATS = ("js", "html")
_NONCE = re.compile(r"[A-Za-z0-9+/_=-]{1,512}")
_UNSAFE_IN_SCRIPT = re.compile(r"</script|<!--|<script", re.IGNORECASE)


def _placed_through_a_filter(value: Any) -> Markup:
    if isinstance(value, Markup):
        return value
    raise TypeError("a template placed a value without the |js or |attr filter")


@functools.cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(resource_dir("templates"))),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        finalize=_placed_through_a_filter,
        keep_trailing_newline=True,
        auto_reload=False,
    )
    env.filters["js"] = script_json
    env.filters["js_minified"] = _script_json_minified
    env.filters["attr"] = html_attribute
    return env


def browser_context(settings: Settings) -> dict[str, Any]:
    """What the loader template may know. The api_token is a server-side secret: it is never here."""
    return {
        "version": __version__,
        "account": settings.account,
        "campaign_id": settings.campaign_id,
        "script_url": settings.script_url,
        "script_selector": track_js_selector(settings.script_url),
        "global_name": settings.global_name,
        "snake_keys": settings.key_style == "snake",
        "consent_required": settings.consent == "required",
        "callback_timeout_ms": settings.callback_timeout_ms,
        "debug": settings.debug,
    }


def track_js_selector(script_url: str) -> str:
    """A CSS selector for a <script> whose src is track.js, with or without the scheme (Drip's own snippet
    omits it). Characters outside a validated URL's set are CSS-escaped, so the selector is always valid."""
    tail = script_url.split(":", 1)[-1]
    escaped = "".join(c if re.fullmatch(r"[A-Za-z0-9./:_~-]", c) else "\\%x " % ord(c) for c in tail)
    return f'script[src$="{escaped}"]'


_MARKER = re.compile(r'"@@driptag:([a-z_]+)@@"')


@functools.cache
def _minified_boolean(value: bool) -> str:
    """How minify() writes the literal true or false, learnt from minify() itself."""
    written = re.fullmatch(r"x=(.+?);?\n", minify(f"x={script_json(value)}"))
    if written is None:
        raise RuntimeError("cannot tell how the minifier writes a boolean")
    return written.group(1)


def _script_json_minified(value: Any) -> Markup:
    """script_json, with booleans written as minify() writes them: the minified template then gives
    exactly what minifying the readable loader gives (the marker stood where the value now is)."""
    if isinstance(value, bool):
        return Markup(_minified_boolean(value))
    return script_json(value)


@functools.cache
def _minified_template() -> jinja2.Template:
    """loader.js.j2, minified once, with each value placed again through the |js_minified filter."""
    names = browser_context(Settings(account="1234567")).keys()
    marked = _environment().get_template("loader.js.j2").render({name: f"@@driptag:{name}@@" for name in names})
    pieces = _MARKER.split(minify(marked))
    source = []
    for index, piece in enumerate(pieces):
        if index % 2:
            source.append("{{ %s|js_minified }}" % piece)
        else:
            if "{% endraw %}" in piece:
                raise RuntimeError("the minified loader cannot be made into a template")
            source.append("{% raw %}" + piece + "{% endraw %}")
    return _environment().from_string("".join(source))


@functools.lru_cache(maxsize=4096)
def _warn_api_token(settings: Settings) -> None:
    """One warning per settings (not one per minified/readable variant): the token is ignored."""
    warnings.warn("driptag: the API token is a server-side secret; it is not written into browser output",
                  stacklevel=4)


@functools.lru_cache(maxsize=4096)
def _loader(settings: Settings, minified: bool) -> str:
    if settings.api_token:
        _warn_api_token(settings)
    template = _minified_template() if minified else _environment().get_template("loader.js.j2")
    code = template.render(browser_context(settings))
    if _UNSAFE_IN_SCRIPT.search(code):  # cannot happen with escaped values; checked all the same
        raise RuntimeError("the rendered loader contains a sequence that would end an inline <script>")
    return code


def render(settings: Settings, fmt: str = "js", *, minify: bool = True, nonce: str | None = None) -> str:
    """The loader for `settings`: `js` (an external script) or `html` (the loader inline in a <script>
    element, after a <link rel="preload"> for track.js unless settings.preload is off or consent is required).

    `nonce` (html only) is a CSP nonce: base64 or base64url characters.
    """
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    code = _loader(settings, bool(minify))
    if fmt == "js":
        if nonce is not None:
            raise ValueError("a nonce belongs to the html format; for js put it on the page's <script src> tag")
        return code
    check_nonce(nonce)
    if nonce is None:
        return _snippet(settings, bool(minify))
    # The cached elements around a new nonce: no Jinja call.
    return str(html_attribute(nonce)).join(_snippet_parts(settings, bool(minify)))


def check_nonce(nonce: str | None) -> None:
    """ValueError unless `nonce` is None or 1 to 512 base64/base64url characters."""
    if nonce is not None and not (isinstance(nonce, str) and _NONCE.fullmatch(nonce)):
        raise ValueError("a CSP nonce is 1 to 512 base64 or base64url characters")


@functools.cache
def _snippet_template() -> jinja2.Template:
    return _environment().get_template("snippet.html.j2")


def _snippet_context(settings: Settings, minified: bool, nonce: str | None) -> dict[str, Any]:
    # The preload link asks for track.js while the browser reads the page, before the loader's script is
    # parsed, so the request does not wait for the loader. Not with consent required: nothing is
    # requested from Drip before consent.
    preload = settings.preload and settings.consent != "required"
    return {"body": Markup(_loader(settings, minified)), "nonce": nonce,
            "preload_url": settings.script_url if preload else None}


_NONCE_MARKER = "driptagNonceMarker"  # a valid nonce that the template cannot produce otherwise


@functools.lru_cache(maxsize=4096)
def _snippet(settings: Settings, minified: bool) -> str:
    return _snippet_template().render(_snippet_context(settings, minified, None))


@functools.lru_cache(maxsize=4096)
def _snippet_parts(settings: Settings, minified: bool) -> tuple[str, ...]:
    """snippet.html.j2 rendered once with a marker for the nonce, split around it: rendering the same
    settings with a new nonce is then one join (Jinja's per-render set-up costs ~20 us)."""
    html = _snippet_template().render(_snippet_context(settings, minified, _NONCE_MARKER))
    parts = tuple(html.split(str(html_attribute(_NONCE_MARKER))))
    if len(parts) < 2 or any(_NONCE_MARKER in part for part in parts):
        raise RuntimeError("snippet.html.j2 must place the nonce through the attr filter")
    return parts


def inline_body(html: str) -> str:
    """The body of the html format's <script> element: what a CSP hash covers."""
    start = html.index(">", html.index("<script")) + 1
    return html[start: html.rindex("</script>")]


def build_manifest(settings: Settings, fmt: str = "js", *, minify: bool = True,
                   nonce: str | None = None) -> dict[str, Any]:
    """Sizes and hashes of one output: what `driptag build --manifest` writes."""
    data = render(settings, fmt, minify=minify, nonce=nonce).encode("utf-8")
    manifest: dict[str, Any] = {
        "account": settings.account,
        "format": fmt,
        "minified": bool(minify),
        "bytes": len(data),
        "gzip_bytes": len(gzip.compress(data, compresslevel=9, mtime=0)),
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    if fmt == "js":
        manifest["integrity"] = "sha384-" + base64.b64encode(hashlib.sha384(data).digest()).decode("ascii")
    else:
        body = inline_body(data.decode("utf-8")).encode("utf-8")
        manifest["csp_hash"] = "'sha256-" + base64.b64encode(hashlib.sha256(body).digest()).decode("ascii") + "'"
    manifest["driptag_version"] = __version__
    return manifest
