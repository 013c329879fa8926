"""The offline Drip emulator: its script, and the collector it reports to.

``bp`` is a Flask blueprint mounted at ``/emulator``:

- ``GET /emulator/<account>.js`` serves ``static/emulator/track.js`` behind a one-line config
  prelude, ``window.dripEmulatorDefaults = {...};``, built with :func:`driptag.loader.escaping.script_json`.
  The app config keys ``DRIP_EMULATOR_CONFIG_DELAY_MS`` (default 50), ``DRIP_EMULATOR_CAMPAIGNS``
  (campaign ids, default none) and ``DRIP_EMULATOR_LATENCY_MS`` (default 5) set it.
- ``/emulator/events`` is the collector: ``POST`` one report (a JSON object) or a list of them,
  ``GET`` the stored reports (``?account=ID`` filters, ``?after=N`` keeps those with ``n > N``),
  ``DELETE`` clears them. It keeps the last 10,000 reports, rejects bodies over 64 KiB with 413
  and anything that is not JSON objects (or is nested over 64 levels) with 400.

The collector's state lives on the app (``app.extensions["driptag_collector"]``), never in this
module; :func:`collector_for` returns it.
"""

from __future__ import annotations

import collections
import copy
import functools
import math
import re
import threading
from collections.abc import Iterable
from typing import Any

from flask import Blueprint, Flask, Response, abort, current_app, jsonify, request
from werkzeug.exceptions import ClientDisconnected, RequestEntityTooLarge

from ..loader.escaping import script_json
from ..messages import kind_of
from ..resources import resource_dir
from .bodies import nesting, short_error, strict_json

__all__ = [
    "COLLECTOR_PATH",
    "Collector",
    "MAX_BODY_BYTES",
    "MAX_REPORTS",
    "bp",
    "collector_for",
    "emulator_script",
]

COLLECTOR_PATH = "/emulator/events"
MAX_REPORTS = 10_000
MAX_BODY_BYTES = 64 * 1024
MAX_NESTING = 64  # JSON nesting accepted in a report (the emulator's own reports stay far below)
_EXTENSION_KEY = "driptag_collector"
_ACCOUNT = re.compile(r"[0-9]{1,20}")  # ASCII digits only (\d would accept other scripts' digits)
_JSON_TYPES = ("application/json",)

bp = Blueprint("emulator", __name__, url_prefix="/emulator")


# ---------------------------------------------------------------------------------------------
# The script


@functools.cache
def _track_js() -> str:
    """The text of static/emulator/track.js (read once)."""
    return (resource_dir("static", "emulator") / "track.js").read_text(encoding="utf-8")


def _delay(name: str, value: Any) -> int | float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a non-negative number of milliseconds, not {value!r:.60}")
    return value


def _campaigns(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, (str, int)) and not isinstance(value, bool):
        value = [value]  # one campaign given on its own, not an iterable of characters
    if not isinstance(value, Iterable):
        raise ValueError(f"campaigns must be campaign-id strings, not {value!r:.60}")
    out = []
    for item in value:
        if isinstance(item, bool) or not isinstance(item, (str, int)):
            raise ValueError(f"campaigns must be campaign-id strings, not {item!r:.60}")
        out.append(str(item))
    return out


def emulator_script(
    *,
    config_delay_ms: int | float = 50,
    campaigns: Iterable[str] = (),
    latency_ms: int | float = 5,
    collector: str | None = COLLECTOR_PATH,
) -> str:
    """The emulator as served: a one-line config prelude, then track.js.

    ``collector`` is the URL the emulator POSTs its reports to (relative URLs resolve against the
    page); ``None`` turns reporting off.
    """
    if collector is not None and not isinstance(collector, str):
        raise ValueError(f"collector must be a URL string or None, not {collector!r:.60}")
    defaults = {
        "configDelay": _delay("config_delay_ms", config_delay_ms),
        "campaigns": _campaigns(campaigns),
        "latency": _delay("latency_ms", latency_ms),
        "collector": collector,
    }
    return f"window.dripEmulatorDefaults = {script_json(defaults)};\n{_track_js()}"


@bp.get("/<account>.js")
def script(account: str) -> Response:
    if not _ACCOUNT.fullmatch(account):
        abort(404)
    config = current_app.config
    body = emulator_script(
        config_delay_ms=config.get("DRIP_EMULATOR_CONFIG_DELAY_MS", 50),
        campaigns=config.get("DRIP_EMULATOR_CAMPAIGNS", ()),
        latency_ms=config.get("DRIP_EMULATOR_LATENCY_MS", 5),
    )
    response = Response(body, mimetype="application/javascript")
    response.headers["Cache-Control"] = "no-store"
    return response


# ---------------------------------------------------------------------------------------------
# The collector


class Collector:
    """The last ``limit`` reports, in arrival order; safe to use from several threads.

    Each stored report is the posted object plus ``n``, its arrival index (1, 2, 3, ...; not
    reset by :meth:`clear`, so a poller using ``after`` never sees an index twice).
    """

    def __init__(self, limit: int = MAX_REPORTS) -> None:
        self._lock = threading.Lock()
        self._reports: collections.deque[dict[str, Any]] = collections.deque(maxlen=limit)
        self._count = 0

    def add(self, reports: list[dict[str, Any]]) -> list[int]:
        """Store the reports (dicts) in order; return their arrival indexes."""
        indexes = []
        with self._lock:
            for report in reports:
                self._count += 1
                stored = dict(report)
                stored["n"] = self._count
                self._reports.append(stored)
                indexes.append(self._count)
        return indexes

    def reports(self, account: str | int | None = None, after: int | None = None) -> list[dict[str, Any]]:
        """Copies of the stored reports, oldest first; only ``account``'s when given."""
        with self._lock:
            selected = list(self._reports)
        if account is not None:
            selected = [r for r in selected if _same_account(r.get("account"), str(account))]
        if after is not None:
            selected = [r for r in selected if r["n"] > after]
        return copy.deepcopy(selected)

    def clear(self) -> None:
        with self._lock:
            self._reports.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._reports)


def _same_account(value: Any, account: str) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, (str, int)) and str(value) == account


def collector_for(app: Flask) -> Collector:
    """The collector of ``app``, created on first use."""
    # dict.setdefault is atomic: two threads racing here get the same collector.
    return app.extensions.setdefault(_EXTENSION_KEY, Collector())


def _error(status: int, message: str) -> tuple[Response, int]:
    return jsonify(error=message), status


@bp.post("/events")
def post_events():
    # The declared Content-Length first. Then the body as actually read: the limit is set for this
    # request only (Flask 3.1), one byte above the allowed size, so a streamed (chunked) body is
    # read up to that one extra byte, which proves it too large (werkzeug's max-limited stream
    # stops quietly at its limit rather than raising).
    declared = request.content_length
    if declared is not None and declared > MAX_BODY_BYTES:
        return _error(413, f"the body is larger than {MAX_BODY_BYTES} bytes")
    request.max_content_length = MAX_BODY_BYTES + 1
    try:
        data = request.get_data(cache=False)
    except RequestEntityTooLarge:
        return _error(413, f"the body is larger than {MAX_BODY_BYTES} bytes")
    except ClientDisconnected:
        return _error(400, "the body ended early")
    if len(data) > MAX_BODY_BYTES:
        return _error(413, f"the body is larger than {MAX_BODY_BYTES} bytes")
    mimetype = request.mimetype  # checked after the size: an oversized body is 413 whatever its type
    if mimetype not in _JSON_TYPES and not (mimetype.startswith("application/") and mimetype.endswith("+json")):
        return _error(400, "the body must be JSON, sent as Content-Type: application/json")
    if not data:
        return _error(400, "the body is empty; send a report object or a list of them")
    try:
        value = strict_json(data)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return _error(400, f"the body is not valid JSON: {short_error(exc)}")
    if nesting(value, MAX_NESTING) > MAX_NESTING:
        # Deeply nested values would later break the recursive copy and serialisation of GET.
        return _error(400, f"the body is nested more than {MAX_NESTING} levels deep")
    reports = value if isinstance(value, list) else [value]
    for position, report in enumerate(reports):
        if not isinstance(report, dict):
            where = f"item {position}" if isinstance(value, list) else "the body"
            return _error(400, f"{where} is {kind_of(report)}, not a report object")
    indexes = collector_for(current_app).add(reports)
    return jsonify(stored=len(indexes), n=indexes), 200


@bp.get("/events")
def get_events():
    account = request.args.get("account")
    after_text = request.args.get("after")
    after = None
    if after_text is not None:
        if not re.fullmatch(r"[0-9]{1,18}", after_text):
            return _error(400, "after must be a report index (a non-negative integer)")
        after = int(after_text)
    return jsonify(collector_for(current_app).reports(account=account, after=after))


@bp.delete("/events")
def delete_events():
    collector_for(current_app).clear()
    return Response(status=204)
