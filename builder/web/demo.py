"""The QA demo site, served by `driptag demo`.

`create_app(config)` is an application factory in the style of Flask's tutorial: a blueprint for the
page and `/drip.js`, plus the emulator blueprint of `driptag.emulators.trackjs` (`/emulator/<account>.js` and
the collector `/emulator/events`), the Drip REST API emulator of `driptag.emulators.drip_api`
(`/emulator/api`) and cloud mode's blueprint of `driptag.web.demo_cloud` (`/cloud/...`). Nothing lives at
module level but constants: every piece of state is on the app. `run_demo` also runs the relay, beside
the page, for cloud mode; an app without it says that cloud mode is off.

Config keys (all optional):

- ``DEMO_ACCOUNT``: the Drip account (default ``83702741``).
- ``DEMO_CAMPAIGN_ID``: the campaign identified users are subscribed to. Default: the demo campaign
  ``7654321`` with the emulator, none with real Drip. ``""`` or ``None`` means no campaign.
- ``DEMO_DRIP``: ``"emulator"`` (default, offline) or ``"real"`` (track.js from tag.getdrip.com).
- ``DEMO_EMULATOR_ORIGIN``: where the emulator is reachable when the page is opened under a host
  name that `Settings` does not allow over http (anything but 127.0.0.1/localhost), for example
  ``http://127.0.0.1:5000``. Without it, ``http://127.0.0.1:<port of the request>`` is used.
- ``DRIP_EMULATOR_CAMPAIGNS`` and the other ``DRIP_EMULATOR_*`` keys of `driptag.emulators.trackjs`.
  ``DRIP_EMULATOR_CAMPAIGNS`` defaults to the demo's campaign, so the emulator knows it.
- ``DEMO_API_TOKEN``: the made-up Drip API token the relay and the Drip API emulator share (default: a
  new random one). ``DRIP_API_TOKENS`` is set from it; ``DRIP_API_CAMPAIGNS`` defaults to the demo's
  campaign; the other ``DRIP_API_*`` keys of `driptag.emulators.drip_api` apply as they are.

The device-mode forms never reach the server: the page's script parses them and calls the loader.
The cloud-mode forms do (a back end sends those calls): `driptag.web.demo_cloud` checks them and answers
a mistake with the field it is about, never with a server error.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import signal
import socket
import sys
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, Flask, Response, current_app, render_template, request
from werkzeug.serving import make_server

from ..emulators import drip_api
from ..emulators import trackjs as emulator
from ..loader.render import build_manifest, render
from ..resources import resource_dir
from ..loader.settings import DEFAULT_SCRIPT_ORIGIN, Settings, SettingsError
from ..version import __version__
from . import demo_cloud

__all__ = ["DEFAULT_ACCOUNT", "DEMO_CAMPAIGN_ID", "bp", "create_app", "run_demo"]

DEFAULT_ACCOUNT = "83702741"
DEMO_CAMPAIGN_ID = "7654321"
MODES = ("emulator", "real")
_LOCAL_HOSTS = ("127.0.0.1", "localhost")
# Hosts to listen on that include 127.0.0.1, where the page finds the emulator (http is allowed only there).
_EMULATOR_HOSTS = _LOCAL_HOSTS + ("", "0.0.0.0", "::", "[::]")
_EXTENSION_KEY = "driptag_demo"

bp = Blueprint("demo", __name__)


@dataclasses.dataclass(frozen=True)
class _DemoState:
    """What the app knows about its demo: validated once, when the app is created."""

    mode: str
    # The loader as it would be pasted on a site, with track.js from Drip.
    site_settings: Settings
    # Where the emulator is when the page's host cannot serve it over http (None: 127.0.0.1:<port>).
    fallback_origin: str | None

    @property
    def account(self) -> str:
        return self.site_settings.account

    @property
    def campaign_id(self) -> str | None:
        return self.site_settings.campaign_id


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """The demo site. Raises SettingsError for an invalid account or campaign."""
    app = Flask(
        __name__,
        template_folder=str(resource_dir("templates")),
        static_folder=str(resource_dir("static")),
        static_url_path="/static",
    )
    app.config.update(
        DEMO_ACCOUNT=DEFAULT_ACCOUNT,
        DEMO_DRIP="emulator",
        DEMO_EMULATOR_ORIGIN=None,
        SEND_FILE_MAX_AGE_DEFAULT=0,
    )
    if config:
        app.config.update(config)
    # Never the debugger, and never a traceback in a response: whatever the config says.
    app.config["DEBUG"] = False
    app.config["PROPAGATE_EXCEPTIONS"] = False
    app.debug = False
    # JSON answers keep their keys in order: the page shows the Drip API requests with their fields as sent.
    app.json.sort_keys = False  # type: ignore[attr-defined]

    mode = app.config["DEMO_DRIP"]
    if mode not in MODES:
        raise ValueError(f"DEMO_DRIP must be one of {', '.join(MODES)}, not {mode!r:.60}")
    campaign = app.config.get("DEMO_CAMPAIGN_ID", DEMO_CAMPAIGN_ID if mode == "emulator" else None)
    # Validates the account and campaign: SettingsError before any server starts.
    site_settings = Settings(account=app.config["DEMO_ACCOUNT"], campaign_id=None if campaign in (None, "") else campaign)
    fallback = app.config["DEMO_EMULATOR_ORIGIN"]
    if fallback is not None:
        # Checked now, with the script_origin setting's rules (http only for 127.0.0.1 and localhost).
        fallback = site_settings.replace(script_origin=f"{fallback}/emulator").script_origin
    state = _DemoState(mode=mode, site_settings=site_settings, fallback_origin=fallback)
    app.extensions[_EXTENSION_KEY] = state
    if state.campaign_id and "DRIP_EMULATOR_CAMPAIGNS" not in app.config:
        app.config["DRIP_EMULATOR_CAMPAIGNS"] = [state.campaign_id]

    token = app.config.get("DEMO_API_TOKEN") or demo_cloud.new_api_token()
    app.config["DRIP_API_TOKENS"] = {state.account: token}
    if state.campaign_id and "DRIP_API_CAMPAIGNS" not in app.config:
        app.config["DRIP_API_CAMPAIGNS"] = [state.campaign_id]
    drip_api.api_config(app.config)  # a wrong DRIP_API_* setting is a ValueError now, not a 500 later
    # With real Drip the relay stays off: the demo never sends anything to Drip's REST API.
    off = None if mode == "emulator" else (
        "Cloud mode is off with --drip real: the demo's relay delivers only to the Drip REST API emulator, "
        "never to Drip. For real Drip, run `driptag relay serve` with your own API token.")
    cloud = demo_cloud.CloudDemo(account=state.account, campaign_id=state.campaign_id, api_token=token,
                                 write_key=app.config.get("DEMO_WRITE_KEY") or demo_cloud.DEMO_WRITE_KEY,
                                 off_reason=off)
    cloud.relay_config()  # the token and write key are checked now (ConfigError, a ValueError, naming them)

    app.register_blueprint(bp)
    app.register_blueprint(emulator.bp)
    app.register_blueprint(drip_api.bp)
    demo_cloud.init_app(app, cloud)
    app.after_request(_security_headers)
    return app


def _state() -> _DemoState:
    return current_app.extensions[_EXTENSION_KEY]


def _request_port() -> int | None:
    try:
        return urlsplit("//" + request.host).port
    except ValueError:
        return None


def page_settings() -> Settings:
    """The settings of the loader this page runs (/drip.js), for the current request.

    With real Drip: the site's settings. With the emulator: track.js from this server's
    `/emulator`, at the origin the browser used when that is 127.0.0.1 or localhost (http is
    allowed only there), else at DEMO_EMULATOR_ORIGIN or http://127.0.0.1:<port>.
    """
    state = _state()
    if state.mode == "real":
        return state.site_settings
    try:
        parts = urlsplit("//" + request.host)
        if parts.hostname in _LOCAL_HOSTS:
            return state.site_settings.replace(script_origin=f"http://{request.host.lower()}/emulator")
    except (ValueError, SettingsError):
        pass
    if state.fallback_origin:
        return state.site_settings.replace(script_origin=state.fallback_origin)
    port = _request_port()
    try:
        return state.site_settings.replace(script_origin=f"http://127.0.0.1{f':{port}' if port else ''}/emulator")
    except SettingsError:
        return state.site_settings.replace(script_origin="http://127.0.0.1/emulator")


def _emulator_origin(settings: Settings) -> str:
    parts = urlsplit(settings.script_origin)
    return f"{parts.scheme}://{parts.netloc}"


def _is_same_origin(settings: Settings) -> bool:
    return urlsplit(settings.script_origin).netloc.lower() == request.host.lower()


@bp.get("/")
def index() -> Response:
    state = _state()
    cloud = demo_cloud.cloud_for(current_app)
    settings = page_settings()
    site_html = render(state.site_settings, "html")
    manifests = {
        "html": build_manifest(state.site_settings, "html"),
        "js": build_manifest(state.site_settings, "js"),
        "page": build_manifest(settings, "js"),
    }
    remote_emulator = state.mode == "emulator" and not _is_same_origin(settings)
    page_config = {
        "account": state.account,
        "campaignId": state.campaign_id,
        "mode": state.mode,
        "scriptUrl": settings.script_url,
        "collector": emulator.COLLECTOR_PATH if state.mode == "emulator" else None,
        "callbackTimeout": settings.callback_timeout_ms,
        "globalName": settings.global_name,
        "cloud": cloud.page_config(),
    }
    body = render_template(
        "demo.html",
        state=state,
        settings=settings,
        site_settings=state.site_settings,
        snippet=site_html,
        manifests=manifests,
        page_config=page_config,
        remote_emulator=remote_emulator,
        cloud=cloud,
        version=__version__,
    )
    response = Response(body, mimetype="text/html")
    response.headers["Content-Security-Policy"] = _page_csp(state, settings)
    return response


@bp.get("/drip.js")
def drip_js() -> Response:
    """The loader this page runs: the `js` format, from the same builder code as `driptag build`."""
    response = Response(render(page_settings(), "js"), mimetype="application/javascript")
    response.headers["Cache-Control"] = "no-store"
    return response


def _page_csp(state: _DemoState, settings: Settings) -> str:
    script = ["'self'"]
    connect = ["'self'"]
    img = ["'self'", "data:"]
    style = ["'self'"]
    frame = ["'none'"]
    if state.mode == "real":
        # Real Drip's track.js loads more of its own files and talks to its servers; allow Drip's
        # hosts (https only) so that QA sees Drip as a site would, not a CSP of this page.
        script.append(DEFAULT_SCRIPT_ORIGIN)
        script.append("https://*.getdrip.com")
        connect.append("https://*.getdrip.com")
        img.append("https:")
        style.append("'unsafe-inline'")
        style.append("https://*.getdrip.com")
        frame = ["https://*.getdrip.com"]
    elif not _is_same_origin(settings):
        script.append(_emulator_origin(settings))
    return "; ".join([
        "default-src 'none'",
        f"script-src {' '.join(script)}",
        f"connect-src {' '.join(connect)}",
        f"img-src {' '.join(img)}",
        f"style-src {' '.join(style)}",
        f"frame-src {' '.join(frame)}",
        "font-src 'none'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ])


def _security_headers(response: Response) -> Response:
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    return response


class _QuietPolling(logging.Filter):
    """Drops werkzeug's access-log lines for the page's polling of the collector and of cloud mode's state."""

    _POLLED = (f'"GET {emulator.COLLECTOR_PATH}?', '"GET /cloud/state?')

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
            return not any(polled in message for polled in self._POLLED)
        except Exception:  # noqa: BLE001 - a log filter must never break logging
            return True


def _display_host(host: str) -> str:
    if host in ("", "0.0.0.0", "::", "[::]"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _listen(host: str, port: int) -> socket.socket:
    """A socket listening on host:port (port 0: any free port). Bound here, not by werkzeug, which prints
    two lines of its own and exits when the port is taken: this raises one OSError naming the address."""
    address = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    listening = socket.socket(family, socket.SOCK_STREAM)
    try:
        listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as werkzeug does: restart at once
        if family == socket.AF_INET6:
            listening.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # :: takes 127.0.0.1 too
        listening.bind((address, port))
        listening.listen(128)
    except OSError as error:
        listening.close()
        raise OSError(error.errno, f"cannot listen on {host}:{port}: {error.strerror or error}") from None
    return listening


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM (kill, a service manager, a container stopping) stops the demo as Ctrl+C does: the relay
    stops and its temporary spool is removed. Only the main thread may set signal handlers; run elsewhere,
    the demo leaves them alone."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_demo(*, account: str | int | None = None, campaign_id: str | int | None = None, host: str = "127.0.0.1",
             port: int = 5000, drip: str = "emulator") -> None:
    """Serve the demo site until Ctrl+C (or SIGTERM): threaded, never with the debugger or the reloader. With
    the emulator, the relay runs beside it for cloud mode (on a spool in a temporary folder, removed at exit),
    delivering to the Drip REST API emulator that this server serves."""
    if drip not in MODES:
        raise ValueError(f"drip must be one of {', '.join(MODES)}, not {drip!r:.60}")
    if drip == "emulator" and host not in _EMULATOR_HOSTS:
        raise ValueError(f"--host {host:.60}: with the emulator the page loads track.js over http from "
                         "127.0.0.1, so listen on 127.0.0.1, localhost, 0.0.0.0 or ::, or use --drip real")
    config: dict[str, Any] = {"DEMO_ACCOUNT": DEFAULT_ACCOUNT if account is None else account, "DEMO_DRIP": drip}
    if campaign_id is not None:
        config["DEMO_CAMPAIGN_ID"] = campaign_id
    app = create_app(config)  # SettingsError before anything listens
    listening = _listen(host, port)
    bound_port = listening.getsockname()[1]
    try:
        server = make_server(host, port, app, threaded=True, fd=listening.fileno())
    finally:
        listening.close()  # the server works on its own duplicate of the socket
    # The page polls the collector twice a second: keep those requests out of the terminal.
    access_log = logging.getLogger("werkzeug")
    if not any(isinstance(existing, _QuietPolling) for existing in access_log.filters):
        access_log.addFilter(_QuietPolling())
    shown_host = _display_host(host)
    state = app.extensions[_EXTENSION_KEY]
    url = f"http://{shown_host}:{bound_port}/"
    where = ("offline Drip emulator" if drip == "emulator" else f"real Drip ({DEFAULT_SCRIPT_ORIGIN})")
    campaign = state.campaign_id or "none"
    print(f"driptag demo {__version__}: account {state.account}, campaign {campaign}, {where}", flush=True)
    try:
        # The relay reaches the Drip REST API emulator on this server over loopback, whatever --host is.
        with _terminate_as_interrupt(), \
                demo_cloud.running_relay(app, f"http://127.0.0.1:{bound_port}{drip_api.URL_PREFIX}") as relay:
            print(f"  open {url}  (Ctrl+C to stop)", flush=True)
            if drip == "emulator" and shown_host not in _LOCAL_HOSTS:
                # The emulator's track.js comes over http, which the script_origin setting allows only from
                # 127.0.0.1 or localhost.
                print(f"  note: with the emulator, open the page as http://127.0.0.1:{bound_port}/ on this machine",
                      flush=True)
            cloud = demo_cloud.cloud_for(app)
            if relay is not None:
                print(f"  cloud mode: relay {cloud.relay_url} (write key {cloud.write_key}), delivering to the Drip "
                      f"API emulator with the demo token {cloud.token_hint}", flush=True)
            else:
                print("  cloud mode: off with real Drip", flush=True)
            try:
                server.serve_forever()  # werkzeug's returns on Ctrl+C
            except KeyboardInterrupt:
                pass
    finally:
        server.server_close()
    print("driptag demo: stopped", file=sys.stderr, flush=True)
