"""An offline stand-in for Drip's REST API v2: the endpoints the relay calls, with Drip's answers.

``bp`` is a Flask blueprint mounted at ``/emulator/api``. The API endpoints (all ``POST``, JSON,
HTTP Basic with the API token as the user) answer as Drip documents them:

- ``/v2/<account>/subscribers`` ``{"subscribers": [person]}``: upsert, ``200`` with the subscriber;
- ``/v2/<account>/campaigns/<campaign_id>/subscribers``: the same, ``200``;
- ``/v2/<account>/events`` ``{"events": [event]}``: ``204``;
- ``/v2/<account>/subscribers/batches`` and ``/events/batches``
  ``{"batches": [{"subscribers"|"events": [1..1000 records]}]}``: ``201 {}``.

Errors use Drip's body ``{"errors": [{"code", "attribute"?, "message"}]}``, except the hourly quota's
``429``, whose body is the one Drip documents for it. Every answer for a configured account carries
``X-RateLimit-Limit`` and ``X-RateLimit-Remaining`` for its endpoint class (the single-record endpoints
share one budget, the batch endpoints another), counted over a sliding window.

Beside the API, for tests and the demo (no auth, never faulted, never counted):

- ``/_faults``: ``POST {"fault", "count"?, "path"?, "seconds"?}`` makes the next matching requests
  fail (see :data:`FAULTS`); ``GET`` lists what is pending, ``DELETE`` clears it;
- ``/_received``: ``GET`` what was accepted (subscribers, events, campaign subscriptions, records a
  batch skipped) and every request seen; ``DELETE`` clears it.

Configuration comes from the app's config (read on each request, see :func:`api_config`); the state
lives on the app (``app.extensions``), never in this module: :func:`drip_api_for` returns it.
:func:`serve_in_thread` serves an app on 127.0.0.1 with werkzeug's threaded server, which the
``drop`` and ``reset`` faults need (they act on the connection itself).
"""

from __future__ import annotations

import collections
import contextlib
import copy
import dataclasses
import datetime
import hashlib
import hmac
import math
import os
import re
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from flask import Blueprint, Flask, Response, current_app, jsonify, request
from werkzeug.exceptions import ClientDisconnected, RequestEntityTooLarge
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server
from .bodies import nesting, short_error, strict_json

__all__ = [
    "ApiConfig",
    "CONCURRENCY_MESSAGE",
    "DripApiState",
    "FAULTS",
    "MAX_BATCH_RECORDS",
    "MAX_NESTING",
    "RATE_LIMIT_BODY",
    "URL_PREFIX",
    "api_config",
    "bp",
    "create_app",
    "drip_api_for",
    "serve_in_thread",
    "start_server",
]

URL_PREFIX = "/emulator/api"
MAX_BATCH_RECORDS = 1000  # Drip: "An Array with between 1 and 1000 objects"
MAX_NESTING = 100  # Ruby's JSON parser (Drip's) refuses documents nested deeper than this
MAX_REQUESTS_KEPT = 100_000
MAX_RECORDS_KEPT = 1_000_000  # per kind
MAX_ERRORS_LISTED = 100
MAX_ADMIN_BODY_BYTES = 64 * 1024
RAW_BODY_KEPT = 1000  # characters of a body that is not JSON kept in the request log
BODY_LIMIT_DEFAULT = 32 * 1024 * 1024

# Drip's documented answer past the hourly quota (its docs spell the anchor "rate-limting").
RATE_LIMIT_BODY = {
    "message": "API rate limit exceeded. Please try again in an hour.",
    "documentation": "https://www.getdrip.com/docs/rest-api#rate-limting",
}
# Drip's words for two requests about one subscriber at once; it calls this "a rate limit error".
CONCURRENCY_MESSAGE = "Too many concurrent requests for the same subscriber"

FAULTS = (
    "500", "502", "503", "429", "429-no-retry-after", "concurrency",
    "delay", "timeout", "drop", "reset", "401", "422",
)
_DEFAULT_SECONDS = {"429": 1.0, "delay": 1.0, "timeout": 10.0}
_MAX_FAULT_SECONDS = 3600.0
_MAX_FAULT_COUNT = 1_000_000

_EXTENSION_KEY = "driptag_drip_api"
_JSON_TYPES = ("application/json", "application/vnd.api+json")  # Drip accepts both
_SINGLE, _BATCH = "single", "batch"
_KINDS = ("subscribers", "events", "campaign_subscriptions")
_EMAIL_SHAPE = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_LINKS_TEMPLATE = "{base}/v2/accounts/{{subscribers.account}}"
# Fields of a request that steer the upsert and are not part of the stored subscriber.
_CONTROL_FIELDS = {"new_email", "remove_tags", "double_optin", "starting_email_index", "reactivate_if_removed"}

bp = Blueprint("drip_api", __name__, url_prefix=URL_PREFIX)


# ---------------------------------------------------------------------------------------------
# Configuration


@dataclasses.dataclass(frozen=True)
class ApiConfig:
    """The emulator's settings, from these app config keys (defaults in brackets):

    - ``DRIP_API_TOKENS``: account ID -> the API token it accepts [none];
    - ``DRIP_API_CAMPAIGNS``: the campaign IDs that exist [none];
    - ``DRIP_API_SINGLE_PER_HOUR`` [3600], ``DRIP_API_BATCH_PER_HOUR`` [50]: requests per window and
      account, for the single-record and the batch endpoints; ``DRIP_API_WINDOW_SECONDS`` [3600];
    - ``DRIP_API_RETRY_AFTER`` [False]: send ``Retry-After`` with the quota's 429 (Drip documents none);
    - ``DRIP_API_MAX_BODY_BYTES`` [32 MiB]: larger bodies get 413;
    - ``DRIP_API_CONCURRENCY_CHECK`` [True]: a single-record request about a subscriber another one
      is still being answered for gets Drip's concurrency error;
    - ``DRIP_API_BATCH_INVALID`` ["reject"]: a batch with an invalid record gets 422 as a whole;
      "skip" takes the valid records, answers 201 and lists the others under ``skipped``.
    """

    tokens: Mapping[str, str] = dataclasses.field(default_factory=dict, repr=False)
    campaigns: frozenset[str] = frozenset()
    single_per_window: int = 3600
    batch_per_window: int = 50
    window_seconds: float = 3600.0
    retry_after: bool = False
    max_body_bytes: int = BODY_LIMIT_DEFAULT
    concurrency_check: bool = True
    batch_invalid: str = "reject"

    def limit(self, endpoint_class: str) -> int:
        return self.single_per_window if endpoint_class == _SINGLE else self.batch_per_window


def api_config(config: Mapping[str, Any]) -> ApiConfig:
    """The emulator's settings from an app config; ``ValueError`` naming the key when one is wrong."""
    return ApiConfig(
        tokens=_tokens(config.get("DRIP_API_TOKENS")),
        campaigns=_campaigns(config.get("DRIP_API_CAMPAIGNS")),
        single_per_window=_count("DRIP_API_SINGLE_PER_HOUR", config.get("DRIP_API_SINGLE_PER_HOUR", 3600)),
        batch_per_window=_count("DRIP_API_BATCH_PER_HOUR", config.get("DRIP_API_BATCH_PER_HOUR", 50)),
        window_seconds=_seconds("DRIP_API_WINDOW_SECONDS", config.get("DRIP_API_WINDOW_SECONDS", 3600)),
        retry_after=_flag("DRIP_API_RETRY_AFTER", config.get("DRIP_API_RETRY_AFTER", False)),
        max_body_bytes=_count("DRIP_API_MAX_BODY_BYTES", config.get("DRIP_API_MAX_BODY_BYTES", BODY_LIMIT_DEFAULT)),
        concurrency_check=_flag("DRIP_API_CONCURRENCY_CHECK", config.get("DRIP_API_CONCURRENCY_CHECK", True)),
        batch_invalid=_choice("DRIP_API_BATCH_INVALID", config.get("DRIP_API_BATCH_INVALID", "reject"),
                              ("reject", "skip")),
    )


def _identifier(value: Any) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str) and value:
        return value
    return None


def _tokens(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(f"DRIP_API_TOKENS must map account IDs to API tokens, not a {type(value).__name__}")
    tokens = {}
    for account, token in value.items():
        name = _identifier(account)
        if name is None:
            raise ValueError(f"DRIP_API_TOKENS: {account!r:.40} is not an account ID")
        if not isinstance(token, str) or not token:
            # The token itself is never shown.
            raise ValueError(f"DRIP_API_TOKENS: the token of account {name} must be a non-empty string")
        tokens[name] = token
    return tokens


def _campaigns(value: Any) -> frozenset[str]:
    if value is None:
        return frozenset()
    if isinstance(value, (str, int)) and not isinstance(value, bool):
        value = [value]  # one campaign on its own, not an iterable of characters
    if not isinstance(value, Iterable) or isinstance(value, Mapping):
        raise ValueError(f"DRIP_API_CAMPAIGNS must be campaign IDs, not {value!r:.60}")
    out = set()
    for item in value:
        name = _identifier(item)
        if name is None:
            raise ValueError(f"DRIP_API_CAMPAIGNS: {item!r:.40} is not a campaign ID")
        out.add(name)
    return frozenset(out)


def _count(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{key} must be a non-negative integer, not {value!r:.40}")
    return value


def _seconds(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{key} must be a positive number of seconds, not {value!r:.40}")
    return float(value)


def _flag(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{key} must be true or false, not {value!r:.40}")
    return value


def _choice(key: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"{key} must be one of {', '.join(choices)}, not {value!r:.40}")
    return value


# ---------------------------------------------------------------------------------------------
# State


@dataclasses.dataclass
class _Fault:
    fault: str
    remaining: int
    path: str | None
    seconds: float | None

    def public(self) -> dict[str, Any]:
        return {"fault": self.fault, "remaining": self.remaining, "path": self.path, "seconds": self.seconds}


class DripApiState:
    """What one app's emulator remembers: faults pending, quota windows, accepted records, requests.

    Safe to use from several threads (the server is threaded). Every request and every accepted
    record gets ``n``, an arrival index that :meth:`clear` does not reset, so a poller using
    ``after`` never sees an index twice. ``clock`` (monotonic seconds) times the quota windows.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._faults: list[_Fault] = []
        self._windows: dict[tuple[str, str], collections.deque[float]] = {}
        self._records: dict[str, collections.deque[dict[str, Any]]] = {
            kind: collections.deque(maxlen=MAX_RECORDS_KEPT) for kind in (*_KINDS, "skipped")}
        self._requests: collections.deque[dict[str, Any]] = collections.deque(maxlen=MAX_REQUESTS_KEPT)
        self._people: dict[str, dict[str, dict[str, Any]]] = {}
        self._in_flight: set[tuple[str, str]] = set()
        self._sequence = 0
        self._wake = threading.Event()

    # -- faults ---------------------------------------------------------------------------------

    def inject(self, fault: str, count: int = 1, path: str | None = None,
               seconds: float | None = None) -> dict[str, Any]:
        """Make the next ``count`` API requests whose path contains ``path`` (any, when None) fail.

        ``seconds``: Retry-After of a ``429`` (default 1), the wait of ``delay`` (default 1) and the
        hold of ``timeout`` (default 10). Faults wait in the order injected; a request takes the first
        that matches it.
        """
        fault = _fault_name(fault)
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= _MAX_FAULT_COUNT:
            raise ValueError(f"count must be an integer from 1 to {_MAX_FAULT_COUNT}, not {count!r:.40}")
        if path is not None and (not isinstance(path, str) or not path or len(path) > 1000):
            raise ValueError(f"path must be a non-empty string (part of the request path), not {path!r:.60}")
        if seconds is not None:
            if (isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(seconds)
                    or not 0 <= seconds <= _MAX_FAULT_SECONDS):
                raise ValueError(f"seconds must be a number from 0 to {_MAX_FAULT_SECONDS:g}, not {seconds!r:.40}")
            seconds = float(seconds)
        elif fault in _DEFAULT_SECONDS:
            seconds = _DEFAULT_SECONDS[fault]
        entry = _Fault(fault, count, path, seconds)
        with self._lock:
            self._faults.append(entry)
            return entry.public()

    def faults(self) -> list[dict[str, Any]]:
        """The faults still pending, in the order they will be used."""
        with self._lock:
            return [entry.public() for entry in self._faults]

    def clear_faults(self) -> None:
        """Forget pending faults, and cut short the waits of requests held by ``delay``/``timeout``."""
        with self._lock:
            self._faults.clear()
            wake, self._wake = self._wake, threading.Event()
        wake.set()

    def _take_fault(self, path: str) -> tuple[_Fault | None, threading.Event]:
        with self._lock:
            for entry in self._faults:
                if entry.path is None or entry.path in path:
                    entry.remaining -= 1
                    if entry.remaining <= 0:
                        self._faults.remove(entry)
                    return dataclasses.replace(entry), self._wake
            return None, self._wake

    # -- quotas ---------------------------------------------------------------------------------

    def _prune(self, window: collections.deque[float], now: float, seconds: float) -> None:
        while window and window[0] <= now - seconds:
            window.popleft()

    def _take_quota(self, account: str, endpoint_class: str, limit: int, seconds: float) -> tuple[bool, float | None]:
        """Count one request if the window has room; else (False, seconds until the oldest leaves)."""
        now = self._clock()
        with self._lock:
            window = self._windows.setdefault((account, endpoint_class), collections.deque())
            self._prune(window, now, seconds)
            if len(window) >= limit:
                wait = window[0] + seconds - now if window else seconds
                return False, wait
            window.append(now)
            return True, None

    def _refund_quota(self, account: str, endpoint_class: str) -> None:
        with self._lock:
            window = self._windows.get((account, endpoint_class))
            if window:
                window.pop()

    def remaining(self, account: str, endpoint_class: str, limit: int, seconds: float) -> int:
        """Requests left in the window for an account's ``"single"`` or ``"batch"`` endpoints."""
        now = self._clock()
        with self._lock:
            window = self._windows.get((account, endpoint_class))
            if window is None:
                return limit
            self._prune(window, now, seconds)
            return max(0, limit - len(window))

    def reset_quotas(self) -> None:
        """Empty every quota window (as if an hour had passed)."""
        with self._lock:
            self._windows.clear()

    # -- subscribers being answered for -------------------------------------------------------

    def _claim(self, keys: set[tuple[str, str]]) -> bool:
        with self._lock:
            if keys & self._in_flight:
                return False
            self._in_flight |= keys
            return True

    def _release(self, keys: set[tuple[str, str]]) -> None:
        with self._lock:
            self._in_flight -= keys

    # -- what was accepted --------------------------------------------------------------------

    def _next(self) -> int:
        with self._lock:
            self._sequence += 1
            return self._sequence

    def _accept(self, kind: str, account: str, records: list[dict[str, Any]], via: str,
                campaign_id: str | None = None, wall: float | None = None) -> list[dict[str, Any]]:
        """Store accepted records; upsert subscribers; return the subscribers as Drip shows them."""
        wall = time.time() if wall is None else wall
        shown = []
        with self._lock:
            for record in records:
                self._sequence += 1
                stored: dict[str, Any] = {"n": self._sequence, "account": account, "via": via}
                if campaign_id is not None:
                    stored["campaign_id"] = campaign_id
                stored["record"] = record
                stored["time"] = wall
                self._records[kind].append(stored)
                if kind != "events":
                    shown.append(self._upsert(account, record, wall))
        return shown

    def _skip(self, kind: str, account: str, record: Any, errors: list[dict[str, str]]) -> None:
        with self._lock:
            self._sequence += 1
            self._records["skipped"].append({"n": self._sequence, "account": account, "kind": kind,
                                             "record": record, "errors": errors, "time": time.time()})

    def _upsert(self, account: str, record: dict[str, Any], wall: float) -> dict[str, Any]:
        """Merge a subscriber record into the account's people (lock held); a copy of the result."""
        people = self._people.setdefault(account, {})
        email = record.get("email")
        if not isinstance(email, str):
            return {key: value for key, value in record.items() if key not in _CONTROL_FIELDS}
        key = email.lower()
        person = people.get(key)
        new_email = record.get("new_email")
        if isinstance(new_email, str) and new_email:
            if person is None:
                key, email = new_email.lower(), new_email  # Drip: creates the subscriber with new_email
                person = people.get(key)
            elif new_email.lower() not in people:
                del people[key]
                key, email = new_email.lower(), new_email
                people[key] = person
        if person is None:
            digest = hashlib.sha256(f"{account}\n{key}".encode()).hexdigest()[:20]
            person = {"id": digest, "status": "active", "email": email, "custom_fields": {}, "tags": [],
                      "time_zone": "Etc/UTC", "created_at": _iso(wall), "links": {"account": account}}
            people[key] = person
        for field, value in record.items():
            if field in _CONTROL_FIELDS or field in ("custom_fields", "tags", "email", "id", "links"):
                continue
            person[field] = value
        person["email"] = email
        if isinstance(record.get("custom_fields"), dict):
            person["custom_fields"].update(record["custom_fields"])
        for tag in record.get("tags") or ():
            if tag not in person["tags"]:
                person["tags"].append(tag)
        removed = set(record.get("remove_tags") or ())
        person["tags"] = [tag for tag in person["tags"] if tag not in removed]
        return copy.deepcopy(person)

    def subscriber(self, account: str | int, email: str) -> dict[str, Any] | None:
        """The subscriber as the upserts so far made it (a copy), or None."""
        with self._lock:
            person = self._people.get(str(account), {}).get(email.lower())
            return copy.deepcopy(person)

    def _log(self, entry: dict[str, Any]) -> None:
        with self._lock:
            self._requests.append(entry)

    def received(self, after: int | None = None) -> dict[str, list[dict[str, Any]]]:
        """Copies of the accepted records by kind, oldest first, and the batch records skipped."""
        with self._lock:
            lists = {kind: list(records) for kind, records in self._records.items()}
        if after is not None:
            lists = {kind: [item for item in items if item["n"] > after] for kind, items in lists.items()}
        return copy.deepcopy(lists)

    def requests(self, after: int | None = None) -> list[dict[str, Any]]:
        """Copies of the requests seen (the last 100,000), in the order they were answered."""
        with self._lock:
            entries = list(self._requests)
        if after is not None:
            entries = [entry for entry in entries if entry["n"] > after]
        return copy.deepcopy(entries)

    def clear(self) -> None:
        """Forget accepted records, the requests seen and the people (not faults, not quotas)."""
        with self._lock:
            for records in self._records.values():
                records.clear()
            self._requests.clear()
            self._people.clear()

    def _snapshot(self, after: int | None) -> dict[str, Any]:
        """Everything GET /_received shows, taken under one lock (records are never changed once stored)."""
        with self._lock:
            data: dict[str, Any] = {kind: list(records) for kind, records in self._records.items()}
            data["requests"] = list(self._requests)
            data["last"] = self._sequence
        if after is not None:
            for kind in (*_KINDS, "skipped", "requests"):
                data[kind] = [item for item in data[kind] if item["n"] > after]
        return data


def drip_api_for(app: Flask) -> DripApiState:
    """The emulator state of ``app``, created on first use (``DRIP_API_CLOCK`` sets its clock)."""
    state = app.extensions.get(_EXTENSION_KEY)
    if state is None:
        # dict.setdefault is atomic: two threads racing here get the same state.
        clock = app.config.get("DRIP_API_CLOCK", time.monotonic)
        state = app.extensions.setdefault(_EXTENSION_KEY, DripApiState(clock))
    return state


def _fault_name(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if value not in FAULTS:
        raise ValueError(f"fault must be one of {', '.join(FAULTS)}, not {value!r:.40}")
    return value


def _iso(wall: float) -> str:
    return datetime.datetime.fromtimestamp(wall, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------------------------------------
# Answers


def _errors(status: int, *errors: dict[str, str]) -> Response:
    response = jsonify(errors=list(errors))
    response.status_code = status
    return response


def _error(code: str, message: str, attribute: str | None = None) -> dict[str, str]:
    item = {"code": code}
    if attribute is not None:
        item["attribute"] = attribute
    item["message"] = message
    return item


def _unauthorized() -> Response:
    response = _errors(401, _error("authentication_error", "You must be authenticated to access this resource"))
    response.headers["WWW-Authenticate"] = 'Basic realm="Drip API"'
    return response


def _not_found() -> Response:
    return _errors(404, _error("not_found_error", "The resource you requested was not found"))


def _gateway_page(status: int, title: str) -> Response:
    """What a proxy in front of an API answers when the app behind it fails: HTML, not JSON."""
    body = f"<html><head><title>{status} {title}</title></head><body><h1>{status} {title}</h1></body></html>\n"
    return Response(body, status=status, mimetype="text/html")


def _rate_limited(retry_after: int | None) -> Response:
    response = jsonify(RATE_LIMIT_BODY)
    response.status_code = 429
    if retry_after is not None:
        response.headers["Retry-After"] = str(retry_after)
    return response


def _concurrency_error() -> Response:
    return _errors(429, _error("rate_limit_error", CONCURRENCY_MESSAGE))


def _dropped(sock: socket.socket | None) -> Response:
    """No answer at all: the connection is closed before a byte of the response is written."""
    def body() -> Iterator[bytes]:
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        # werkzeug's server treats a ConnectionError from the body as a dropped connection and
        # writes nothing; the status line is only sent with the first chunk.
        raise ConnectionAbortedError("connection dropped by the Drip API emulator (injected fault)")
        yield b""  # pragma: no cover - makes this a generator
    return Response(body(), status=200, mimetype="application/json")


def _reset(sock: socket.socket | None) -> Response:
    """The status line, headers and part of the body, then a TCP reset (RST, not a clean close).

    SO_LINGER 0 makes closing the socket abortive; the socket is closed at once by putting another
    descriptor in its place (dup2), before the server's own orderly shutdown could send a FIN.
    Without werkzeug's socket (another server, the test client) the response just stops there.
    """
    partial = b'{"subscribers": [{"email": "'

    def body() -> Iterator[bytes]:
        yield partial
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                spare, other = socket.socketpair()
                with spare, other:
                    os.dup2(spare.fileno(), sock.fileno())
        raise ConnectionResetError("connection reset by the Drip API emulator (injected fault)")
    response = Response(body(), status=200, mimetype="application/json")
    response.headers["Content-Length"] = str(len(partial) + 200)
    return response


# ---------------------------------------------------------------------------------------------
# Reading a request


class _BadBody(Exception):
    def __init__(self, response: Response, text: str | None = None) -> None:
        self.response = response
        self.text = text


def _read_body(limit: int) -> bytes:
    """The body, at most ``limit`` bytes (413 beyond, also for a chunked body); 400 if it ends early."""
    def too_large() -> _BadBody:
        message = f"The request body is larger than {limit} bytes"
        return _BadBody(_errors(413, _error("request_entity_too_large", message)))
    declared = request.content_length
    if declared is not None and declared > limit:
        raise too_large()
    # One byte above the limit, for this request only: a streamed body read up to that extra byte
    # proves too large (werkzeug's limited stream stops quietly at its limit instead of raising).
    request.max_content_length = limit + 1
    try:
        data = request.get_data(cache=False)
    except RequestEntityTooLarge:
        raise too_large() from None
    except ClientDisconnected:
        raise _BadBody(_errors(400, _error("parsing_error", "The request body ended early"))) from None
    if len(data) > limit:
        raise too_large()
    return data


def _parse_json(data: bytes) -> Any:
    """The JSON document in ``data``; a 400 ``parsing_error`` for anything else."""
    def bad(message: str) -> _BadBody:
        return _BadBody(_errors(400, _error("parsing_error", f"JSON parsing error: {message}")),
                        data[:RAW_BODY_KEPT * 4].decode("utf-8", "replace")[:RAW_BODY_KEPT])
    if not data.strip():
        raise bad("the request body is empty")
    try:
        value = strict_json(data)
    except RecursionError:
        raise bad(f"nesting deeper than {MAX_NESTING} levels") from None
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise bad(short_error(exc)) from None
    if nesting(value, MAX_NESTING) > MAX_NESTING:
        raise bad(f"nesting of {MAX_NESTING + 1} is too deep")
    return value


def _basic_token() -> str | None:
    """The user part of HTTP Basic credentials (Drip's API token; the password is not looked at)."""
    authorization = request.authorization
    if authorization is None or authorization.type != "basic" or not authorization.username:
        return None
    return authorization.username


def _authenticated(config: ApiConfig, token: str | None) -> bool:
    """The token belongs to some configured account (compared in constant time)."""
    if token is None:
        return False
    found = False
    for known in config.tokens.values():
        found |= hmac.compare_digest(known.encode(), token.encode())
    return found


def _may_use(config: ApiConfig, account: str, token: str) -> bool:
    known = config.tokens.get(account)
    return known is not None and hmac.compare_digest(known.encode(), token.encode())


# ---------------------------------------------------------------------------------------------
# Checking records (Drip's validation error codes; the emulator's own messages)


def _is_email(value: Any) -> bool:
    return isinstance(value, str) and len(value) <= 254 and _EMAIL_SHAPE.fullmatch(value) is not None


def _is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_iso_time(value: Any) -> bool:
    if not isinstance(value, str) or not 10 <= len(value) <= 40:
        return False
    try:
        datetime.datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


def _label(field: str) -> str:
    """A field's name the way Drip's messages write it: ``base_lead_score`` -> ``Base lead score``."""
    return field.replace("_", " ").capitalize()


def _check_common(record: dict[str, Any], at: str) -> list[dict[str, str]]:
    """Checks shared by subscriber and campaign records."""
    errors = []
    if "new_email" in record and not _is_email(record["new_email"]):
        errors.append(_error("email_error", "New email is invalid", f"{at}new_email"))
    if "custom_fields" in record and not isinstance(record["custom_fields"], dict):
        errors.append(_error("format_error", "Custom fields must be an object", f"{at}custom_fields"))
    for field in ("tags", "remove_tags"):
        if field in record:
            value = record[field]
            if not isinstance(value, list) or not all(isinstance(tag, str) for tag in value):
                errors.append(_error("format_error", f"{_label(field)} must be an array of strings", f"{at}{field}"))
    for field in ("prospect", "double_optin"):
        if field in record and not isinstance(record[field], bool):
            errors.append(_error("format_error", f"{_label(field)} must be true or false", f"{at}{field}"))
    for field in ("base_lead_score", "lifetime_value"):
        if field in record and not _is_integer(record[field]):
            errors.append(_error("format_error", f"{_label(field)} must be an integer", f"{at}{field}"))
    if "eu_consent" in record and record["eu_consent"] not in ("granted", "denied"):
        errors.append(_error("format_error", "Eu consent must be granted or denied", f"{at}eu_consent"))
    if "time_zone" in record and not isinstance(record["time_zone"], str):
        errors.append(_error("format_error", "Time zone must be a string", f"{at}time_zone"))
    return errors


def _check_email(record: dict[str, Any], at: str, alternatives: tuple[str, ...]) -> list[dict[str, str]]:
    """``email`` must be an address, unless absent (null, "") and one of ``alternatives`` identifies the person."""
    email = record.get("email")
    if email is None or email == "":
        if any(record.get(key) not in (None, "") for key in alternatives):
            return []
        return [_error("presence_error", "Email is required", f"{at}email")]
    if not _is_email(email):
        return [_error("email_error", "Email is invalid", f"{at}email")]
    return []


def _check_subscriber(record: dict[str, Any], at: str) -> list[dict[str, str]]:
    # Drip: "Either email or id or visitor_uuid must be included."
    return _check_email(record, at, ("id", "visitor_uuid")) + _check_common(record, at)


def _check_campaign_subscriber(record: dict[str, Any], at: str) -> list[dict[str, str]]:
    return _check_email(record, at, ()) + _check_common(record, at)


def _check_event(record: dict[str, Any], at: str) -> list[dict[str, str]]:
    errors = _check_email(record, at, ("id",))  # Drip: "Either email or id must be included."
    action = record.get("action")
    if action is None or action == "":
        errors.append(_error("presence_error", "Action is required", f"{at}action"))
    elif not isinstance(action, str):
        errors.append(_error("format_error", "Action must be a string", f"{at}action"))
    if "properties" in record:
        properties = record["properties"]
        if not isinstance(properties, dict):
            errors.append(_error("format_error", "Properties must be an object", f"{at}properties"))
        elif "value" in properties:
            value = properties["value"]
            if not _is_integer(value) or not 0 <= value <= 2_147_483_647:
                errors.append(_error("range_error", "Value must be an integer from 0 to 2147483647",
                                     f"{at}properties.value"))
    if "occurred_at" in record and not _is_iso_time(record["occurred_at"]):
        errors.append(_error("time_error", "Occurred at must be a valid time in ISO-8601 format", f"{at}occurred_at"))
    if "prospect" in record and not isinstance(record["prospect"], bool):
        errors.append(_error("format_error", "Prospect must be true or false", f"{at}prospect"))
    return errors


@dataclasses.dataclass(frozen=True)
class _Endpoint:
    name: str             # for messages
    kind: str             # where accepted records go: subscribers, events, campaign_subscriptions
    key: str              # the body's list: subscribers or events
    endpoint_class: str   # single or batch
    check: Callable[[dict[str, Any], str], list[dict[str, str]]]
    success: int


_SUBSCRIBERS = _Endpoint("subscribers", "subscribers", "subscribers", _SINGLE, _check_subscriber, 200)
_SUBSCRIBER_BATCHES = _Endpoint("subscriber batches", "subscribers", "subscribers", _BATCH, _check_subscriber, 201)
_EVENTS = _Endpoint("events", "events", "events", _SINGLE, _check_event, 204)
_EVENT_BATCHES = _Endpoint("event batches", "events", "events", _BATCH, _check_event, 201)
_CAMPAIGN = _Endpoint("campaign subscribers", "campaign_subscriptions", "subscribers", _SINGLE,
                      _check_campaign_subscriber, 200)


def _shape_error(message: str, attribute: str) -> _BadBody:
    return _BadBody(_errors(422, _error("parsing_error", f"JSON parsing error: {message}", attribute)))


def _records_of(endpoint: _Endpoint, body: Any) -> list[Any]:
    """The records of a body of the right shape; a 422 for any other shape."""
    key = endpoint.key
    if endpoint.endpoint_class == _SINGLE:
        expected = f'the body must be {{"{key}": [one {key[:-1]} object]}}'
        if not isinstance(body, dict) or key not in body:
            raise _shape_error(expected, key)
        records = body[key]
        if not isinstance(records, list):
            raise _shape_error(expected, key)
        if len(records) != 1:
            message = f"{key.capitalize()} must contain exactly one {key[:-1]}"
            raise _BadBody(_errors(422, _error("length_error", message, key)))
        return records
    expected = f'the body must be {{"batches": [{{"{key}": [1 to {MAX_BATCH_RECORDS} {key}]}}]}}'
    if not isinstance(body, dict) or not isinstance(body.get("batches"), list):
        raise _shape_error(expected, "batches")
    batches = body["batches"]
    if len(batches) != 1:
        raise _BadBody(_errors(422, _error("length_error", "Batches must contain exactly one batch", "batches")))
    if not isinstance(batches[0], dict) or not isinstance(batches[0].get(key), list):
        raise _shape_error(expected, f"batches[0].{key}")
    records = batches[0][key]
    if not 1 <= len(records) <= MAX_BATCH_RECORDS:
        raise _BadBody(_errors(422, _error(
            "length_error", f"A batch must contain between 1 and {MAX_BATCH_RECORDS} {key}, not {len(records)}",
            f"batches[0].{key}")))
    return records


def _check_records(endpoint: _Endpoint, records: list[Any]) -> list[list[dict[str, str]]]:
    """Each record's errors (an empty list for a valid one)."""
    out = []
    for position, record in enumerate(records):
        at = (f"{endpoint.key}[{position}]." if endpoint.endpoint_class == _SINGLE
              else f"batches[0].{endpoint.key}[{position}].")
        if not isinstance(record, dict):
            out.append([_error("format_error", f"{endpoint.key[:-1].capitalize()} must be an object", at[:-1])])
        else:
            out.append(endpoint.check(record, at))
    return out


# ---------------------------------------------------------------------------------------------
# One API request


class _Exchange:
    """One API request: runs the checks in Drip's order and logs what was answered."""

    def __init__(self, endpoint: _Endpoint | None, account: str, campaign_id: str | None = None) -> None:
        self.app = current_app._get_current_object()  # type: ignore[attr-defined]
        self.state = drip_api_for(self.app)
        self.config = api_config(self.app.config)
        self.endpoint = endpoint
        self.account = account
        self.campaign_id = campaign_id
        self.entry: dict[str, Any] = {
            "n": self.state._next(), "time": time.time(), "method": request.method, "path": request.path,
            "account": account, "status": None, "fault": None, "auth": False, "body": None,
        }
        self.claimed: set[tuple[str, str]] = set()
        self.data = b""
        self.parsed: Any = None
        self.parse_error: _BadBody | None = None

    def run(self) -> Response:
        token = _basic_token()
        self.entry["auth"] = _authenticated(self.config, token) and _may_use(self.config, self.account, token or "")
        dropped = False
        try:
            # The body first, as a front proxy would: a body too large is refused before anything else.
            self.data = _read_body(self.config.max_body_bytes)
        except _BadBody as bad:
            response = self._with_limits(bad.response)
        else:
            self._log_body(self.data)
            fault, wake = self.state._take_fault(request.path)
            if fault is not None:
                self.entry["fault"] = fault.fault
                dropped = fault.fault in ("drop", "reset")
            try:
                if fault is not None and fault.fault != "delay":
                    response = self._fault(fault, wake)
                else:
                    response = self._process(token)
                    if fault is not None:  # delay: the request was handled; only its answer waits
                        wake.wait(fault.seconds or 0)
            finally:
                self.state._release(self.claimed)
        self.entry["status"] = None if dropped else response.status_code
        self.state._log(self.entry)
        return response

    def _log_body(self, data: bytes) -> None:
        """Parse the body once: the log keeps the document (or the start of the text), the checks reuse it."""
        try:
            self.parsed = _parse_json(data)
            self.entry["body"] = self.parsed
        except _BadBody as bad:
            self.parse_error = bad
            self.entry["body"] = bad.text

    def _fault(self, fault: _Fault, wake: threading.Event) -> Response:
        name = fault.fault
        sock = request.environ.get("werkzeug.socket")
        if name == "drop":
            return _dropped(sock)
        if name == "reset":
            return _reset(sock)
        if name == "timeout":
            wake.wait(fault.seconds or 0)
            return _gateway_page(504, "Gateway Time-out")
        if name == "500":
            return self._with_limits(_errors(500, _error("server_error", "Internal server error (injected fault)")))
        if name == "502":
            return self._with_limits(_gateway_page(502, "Bad Gateway"))
        if name == "503":
            return self._with_limits(_gateway_page(503, "Service Temporarily Unavailable"))
        if name in ("429", "429-no-retry-after"):
            retry_after = math.ceil(fault.seconds or 0) if name == "429" else None
            return self._with_limits(_rate_limited(retry_after), exhausted=True)
        if name == "concurrency":
            return self._with_limits(_concurrency_error())
        if name == "401":
            return self._with_limits(_unauthorized())
        # 422
        return self._with_limits(_errors(422, _error("validation_error", "Invalid record (injected fault)", "email")))

    def _process(self, token: str | None) -> Response:
        config, endpoint = self.config, self.endpoint
        if not _authenticated(config, token):
            return self._with_limits(_unauthorized())
        if endpoint is None or not _may_use(config, self.account, token or ""):
            return self._with_limits(_not_found())
        if self.campaign_id is not None and self.campaign_id not in config.campaigns:
            return self._with_limits(_not_found())
        limit = config.limit(endpoint.endpoint_class)
        allowed, wait = self.state._take_quota(self.account, endpoint.endpoint_class, limit, config.window_seconds)
        if not allowed:
            retry_after = max(1, math.ceil(wait or 0)) if config.retry_after else None
            return self._with_limits(_rate_limited(retry_after), exhausted=True)
        try:
            return self._with_limits(self._accept_body(endpoint))
        except _BadBody as bad:
            return self._with_limits(bad.response)

    def _accept_body(self, endpoint: _Endpoint) -> Response:
        mimetype = request.mimetype
        if mimetype not in _JSON_TYPES and not (mimetype.startswith("application/") and mimetype.endswith("+json")):
            raise _BadBody(_errors(415, _error(
                "format_error", "The request body must be JSON, sent with Content-Type: application/json")))
        if self.parse_error is not None:
            raise self.parse_error
        body = self.parsed
        records = _records_of(endpoint, body)
        errors = _check_records(endpoint, records)
        if endpoint.endpoint_class == _SINGLE:
            found = errors[0]
            if found:
                raise _BadBody(_errors(422, *found[:MAX_ERRORS_LISTED]))
            if self.config.concurrency_check and not self._claim(records[0]):
                self.state._refund_quota(self.account, endpoint.endpoint_class)
                return _concurrency_error()
            shown = self.state._accept(endpoint.kind, self.account, records, _SINGLE, self.campaign_id)
            if endpoint.success == 204:
                return Response(status=204)
            response = jsonify(links={"subscribers.account": _LINKS_TEMPLATE.format(base=self._base())},
                               subscribers=[self._with_href(person) for person in shown])
            response.status_code = endpoint.success
            return response
        invalid = [item for found in errors for item in found]
        if invalid and self.config.batch_invalid == "reject":
            raise _BadBody(_errors(422, *invalid[:MAX_ERRORS_LISTED]))
        valid = [record for record, found in zip(records, errors) if not found]
        for record, found in zip(records, errors):
            if found:
                self.state._skip(endpoint.kind, self.account, record, found)
        self.state._accept(endpoint.kind, self.account, valid, _BATCH)
        response = jsonify({})
        response.status_code = 201
        return response

    def _claim(self, record: dict[str, Any]) -> bool:
        email = record.get("email")
        if not isinstance(email, str):
            return True
        keys = {(self.account, email.lower())}
        if not self.state._claim(keys):
            return False
        self.claimed = keys
        return True

    def _base(self) -> str:
        return request.host_url.rstrip("/") + URL_PREFIX

    def _with_href(self, person: dict[str, Any]) -> dict[str, Any]:
        if "id" in person:
            person["href"] = f"{self._base()}/v2/{self.account}/subscribers/{person['id']}"
        return person

    def _with_limits(self, response: Response, exhausted: bool = False) -> Response:
        """Drip's rate-limit headers for this account's endpoint class (when the account is configured)."""
        if self.endpoint is not None and self.account in self.config.tokens:
            endpoint_class = self.endpoint.endpoint_class
            limit = self.config.limit(endpoint_class)
            remaining = 0 if exhausted else self.state.remaining(self.account, endpoint_class, limit,
                                                                 self.config.window_seconds)
            response.headers["X-RateLimit-Limit"] = str(limit)
            response.headers["X-RateLimit-Remaining"] = str(remaining)
        return response


# ---------------------------------------------------------------------------------------------
# Routes: the API


@bp.post("/v2/<account>/subscribers")
def subscribers(account: str) -> Response:
    return _Exchange(_SUBSCRIBERS, account).run()


@bp.post("/v2/<account>/subscribers/batches")
def subscriber_batches(account: str) -> Response:
    return _Exchange(_SUBSCRIBER_BATCHES, account).run()


@bp.post("/v2/<account>/events")
def events(account: str) -> Response:
    return _Exchange(_EVENTS, account).run()


@bp.post("/v2/<account>/events/batches")
def event_batches(account: str) -> Response:
    return _Exchange(_EVENT_BATCHES, account).run()


@bp.post("/v2/<account>/campaigns/<campaign_id>/subscribers")
def campaign_subscribers(account: str, campaign_id: str) -> Response:
    return _Exchange(_CAMPAIGN, account, campaign_id).run()


_ALL_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]


@bp.route("/v2/<account>/<path:rest>", methods=_ALL_METHODS)
@bp.route("/v2/<account>", methods=_ALL_METHODS)
def not_emulated(account: str, rest: str = "") -> Response:
    """Any other /v2 path or method: Drip's 404 (after the same auth check), and it is logged."""
    return _Exchange(None, account).run()


# ---------------------------------------------------------------------------------------------
# Routes: for tests and the demo


def _admin_error(status: int, message: str) -> tuple[Response, int]:
    return jsonify(error=message), status


def _admin_json() -> Any:
    """A small JSON object body for the admin routes; ValueError with a one-line reason otherwise."""
    declared = request.content_length
    if declared is not None and declared > MAX_ADMIN_BODY_BYTES:
        raise ValueError(f"the body is larger than {MAX_ADMIN_BODY_BYTES} bytes")
    request.max_content_length = MAX_ADMIN_BODY_BYTES + 1
    try:
        data = request.get_data(cache=False)
    except (RequestEntityTooLarge, ClientDisconnected):
        raise ValueError(f"the body is larger than {MAX_ADMIN_BODY_BYTES} bytes or ended early") from None
    if len(data) > MAX_ADMIN_BODY_BYTES:
        raise ValueError(f"the body is larger than {MAX_ADMIN_BODY_BYTES} bytes")
    try:
        value = _parse_json(data)
    except _BadBody:
        raise ValueError('the body must be a JSON object such as {"fault": "500", "count": 1}') from None
    if not isinstance(value, dict):
        raise ValueError('the body must be a JSON object such as {"fault": "500", "count": 1}')
    return value


@bp.post("/_faults")
def add_fault():
    try:
        body = _admin_json()
        unknown = sorted(set(body) - {"fault", "count", "path", "seconds"})
        if unknown:
            raise ValueError(f"unknown key {unknown[0]!r:.40}; the keys are fault, count, path, seconds")
        if "fault" not in body:
            raise ValueError(f"fault is required: one of {', '.join(FAULTS)}")
        entry = drip_api_for(current_app).inject(body["fault"], body.get("count", 1), body.get("path"),
                                                 body.get("seconds"))
    except ValueError as exc:
        return _admin_error(400, str(exc))
    return jsonify(entry), 201


@bp.get("/_faults")
def list_faults():
    return jsonify(faults=drip_api_for(current_app).faults())


@bp.delete("/_faults")
def delete_faults():
    drip_api_for(current_app).clear_faults()
    return Response(status=204)


@bp.get("/_received")
def get_received():
    after_text = request.args.get("after")
    after = None
    if after_text is not None:
        if not re.fullmatch(r"[0-9]{1,18}", after_text):
            return _admin_error(400, "after must be an arrival index (a non-negative integer)")
        after = int(after_text)
    return jsonify(drip_api_for(current_app)._snapshot(after))


@bp.delete("/_received")
def delete_received():
    drip_api_for(current_app).clear()
    return Response(status=204)


# ---------------------------------------------------------------------------------------------
# An app of its own, and a server for it


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """A Flask app with only the emulator's blueprint; ``config`` goes into ``app.config``, checked now."""
    app = Flask("driptag_drip_api")
    app.config.update(config or {})
    api_config(app.config)  # a wrong setting is a ValueError here, not a 500 on the first request
    app.register_blueprint(bp)
    return app


class _QuietHandler(WSGIRequestHandler):
    """werkzeug's handler without a log line per request (errors are still logged)."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


def start_server(app: Flask, port: int = 0) -> tuple[str, Callable[[], None]]:
    """Serve ``app`` on 127.0.0.1 (``port`` 0: any free one) in a daemon thread, with werkzeug's
    threaded server; return its base URL and a function that stops it (waking held requests)."""
    server: BaseWSGIServer = make_server("127.0.0.1", port, app, threaded=True, request_handler=_QuietHandler)
    # A short poll interval: shutdown() returns within 0.1 s instead of serve_forever's default 0.5 s.
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                              name=f"drip-api-{server.server_port}", daemon=True)
    thread.start()
    stopped = threading.Event()

    def shutdown() -> None:
        if stopped.is_set():
            return
        stopped.set()
        state = app.extensions.get(_EXTENSION_KEY)
        if isinstance(state, DripApiState):
            state.clear_faults()  # requests held by delay/timeout answer now
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    return f"http://127.0.0.1:{server.server_port}", shutdown


@contextlib.contextmanager
def serve_in_thread(app: Flask, port: int = 0) -> Iterator[str]:
    """``with serve_in_thread(app) as base_url:`` — :func:`start_server`, stopped on leaving."""
    base_url, shutdown = start_server(app, port)
    try:
        yield base_url
    finally:
        shutdown()
