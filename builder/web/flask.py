"""Flask extension: the driptag snippet in Jinja templates, with a CSP nonce per request.

    from driptag.web.flask import Driptag

    app.config["DRIPTAG"] = {"account": "83702741", "campaignId": "1234567"}
    Driptag(app)                      # or: driptag = Driptag(); driptag.init_app(app)

    {# in a template's <head> #}
    {{ drip_snippet(nonce=csp_nonce) }}

Settings come from the ``settings=`` argument (a :class:`~driptag.Settings`, or a mapping with the JSON
keys of a Segment settings object) or else from ``app.config["DRIPTAG"]`` (such a mapping). They are
validated by ``init_app``, which raises :class:`~driptag.SettingsError` naming every bad setting, so a
misconfigured app fails at start-up rather than on its first page.

``drip_snippet(nonce=None)`` returns the ``html`` format (a ``<link rel="preload">`` for track.js unless
the ``preload`` setting is off, and the inline ``<script>`` element) as Markup. Rendering is cached per
settings by :func:`driptag.render`: the loader is built once per process and each call only joins the
cached elements around that request's nonce. A nonce that is not base64/base64url raises ValueError (the
page fails rather than ship a script the CSP would block).

The extension keeps its state on the app (``app.extensions["driptag"]``, a :class:`DriptagState`),
never in this module, so one process can serve several apps with different accounts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Flask, current_app
from markupsafe import Markup

from ..loader.render import render
from ..loader.settings import Problem, Settings, SettingsError

__all__ = ["CONFIG_KEY", "EXTENSION_KEY", "Driptag", "DriptagState"]

CONFIG_KEY = "DRIPTAG"
EXTENSION_KEY = "driptag"


class DriptagState:
    """What one app knows: its validated settings."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def snippet(self, nonce: str | None = None) -> Markup:
        """The inline ``<script>`` element, with ``nonce`` on it when given."""
        return Markup(render(self.settings, "html", nonce=nonce))

    def script(self) -> str:
        """The loader as an external script (the ``js`` format), e.g. for a route serving ``/drip.js``."""
        return render(self.settings, "js")


class Driptag:
    """The Flask extension. ``Driptag(app)``, or ``Driptag()`` then ``init_app(app)`` per app."""

    def __init__(self, app: Flask | None = None, settings: Settings | Mapping[str, Any] | None = None) -> None:
        self._settings = settings
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        settings = _settings(self._settings if self._settings is not None else app.config.get(CONFIG_KEY), app)
        state = DriptagState(settings)
        render(settings, "html")  # builds (and caches) the loader now, not on the first request
        app.extensions[EXTENSION_KEY] = state
        app.jinja_env.globals["drip_snippet"] = state.snippet

    @staticmethod
    def state(app: Flask | None = None) -> DriptagState:
        """The state of ``app`` (default: the current app)."""
        app = app if app is not None else current_app
        try:
            return app.extensions[EXTENSION_KEY]
        except KeyError:
            raise RuntimeError("driptag is not set up on this app: call Driptag(app) or init_app(app)") from None

    def snippet(self, nonce: str | None = None) -> Markup:
        """``drip_snippet`` for Python code (a view): the current app's snippet."""
        return self.state().snippet(nonce)


def _settings(value: Any, app: Flask) -> Settings:
    if isinstance(value, Settings):
        return value
    if value is None:
        raise SettingsError([Problem("account", f'is required: set app.config["{CONFIG_KEY}"] = '
                                                '{"account": "83702741", …} or pass Driptag(app, settings=…)')])
    if not isinstance(value, Mapping):
        raise SettingsError([Problem("settings", f'app.config["{CONFIG_KEY}"] must be a dict of settings by their '
                                                 f'JSON keys, like {{"account": "83702741"}}, not a {type(value).__name__}')])
    return Settings.from_mapping(value, note=app.logger.info)

