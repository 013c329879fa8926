"""Ingest: Segment's HTTP Tracking API in front of the spool.

The libraries people already use send here unchanged once their host option points at the relay:
analytics-python (`/v1/batch`, JSON, Basic auth and `writeKey` in the body, gzip optional),
@segment/analytics-node (`/v1/batch`, Basic auth), Analytics.js 2.0's Segment.io destination (one call
per request to `/v1/i`, `/v1/t`, `/v1/p`, `/v1/s`, `/v1/g`, `/v1/a`, or batches to `/v1/b`, as
`text/plain` with `writeKey` in the body), the current mobile libraries (batches to `/v1/b`, the Kotlin
one gzipped with chunked transfer encoding) and the classic Android and iOS ones (gzipped batches to
`/v1/import`, chunked, without Content-Length).

A client hears `200 {"success": true}` only after the spool committed the request's messages with an
fsync. Everything else is an error status with `{"success": false, "error": "<one line>"}`:

- 400: the body is not what the API takes (nothing is stored): Content-Type other than
  application/json or text/plain (a missing one is read as JSON), a charset other than UTF-8, a
  Content-Encoding other than gzip, malformed gzip, more than 500 KB once decompressed, not UTF-8,
  malformed JSON, NaN or Infinity, a number beyond a double, a lone surrogate escape (UTF-8 cannot
  store it), nesting deeper than the JSON parser goes, a body that is not an object, `batch` not a
  list, more than 2,500 messages; on a single-call endpoint, a message over 32 KB or one the mapping
  calls invalid. 400 rather than 413 or 415: the Segment libraries treat 400 as final and retry the
  others, and retrying cannot make these requests acceptable.
- 401: no write key, or one no source has. The key is the HTTP Basic user name when there is one
  (Segment reads it first; analytics-python sends both), else `writeKey` in the body.
- 429 with Retry-After: more messages wait than the configuration's maxPending allows; nothing stored.
- 503 with Retry-After: the spool could not commit (disk full, read-only, I/O error); nothing stored.
- 500: a fault of the relay itself, logged (at most once a minute for a repeating fault).

In a batch, a message over 32 KB is dropped and the others are stored; messages the mapping calls
invalid are skipped and counted, and the request still gets its 200. A message's size is its JSON
(compact, UTF-8) plus the size of the batch's shared `context` and `integrations` it inherits.

A batch's top-level `context` and `integrations` objects are merged into each of its messages one
level deep: a key the message has wins with its whole value (the message's `context.traits` replaces
the batch's, it is not merged with it); a message whose `context` is not an object keeps it.

CORS: every answer under /v1/ carries `Access-Control-Allow-Origin: *` and exposes Retry-After; a
preflight is answered 204, allowing the headers Analytics.js 2.0 sends (X-Retry-Count on its
retries). The per-message path is lean by design: one spool.accept (one commit shared with
concurrent requests) per request, counters incremented once per request, no logging.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import threading
import time
import zlib
from collections.abc import Callable
from typing import Any

import flask
from werkzeug.exceptions import HTTPException

from ..messages import kind_of
from .config import RelayConfig, Source
from .mapping import InvalidMessage, check_message
from .spool import Accepted, SpoolError

log = logging.getLogger("driptag.relay")

MAX_REQUEST_BYTES = 500 * 1024  # decompressed, as Segment's API
MAX_MESSAGE_BYTES = 32 * 1024
MAX_MESSAGES = 2500
BUSY_RETRY_AFTER = 5  # seconds: the spool drains at Drip's pace; a client retries soon
SPOOL_RETRY_AFTER = 30  # seconds: a full or read-only disk needs someone to act
HEALTH_TIMEOUT = 5.0
PREFLIGHT_MAX_AGE = 86400
# What a browser may send cross-origin: Analytics.js 2.0 adds Basic credentials to every request and
# X-Retry-Count to every retry; a header missing here blocks the request in the browser.
_ALLOWED_HEADERS = "Content-Type, Authorization, Content-Encoding, X-Retry-Count"

# Each path a client posts to → the call's type, or "batch".
PATHS = {"identify": "identify", "i": "identify", "track": "track", "t": "track", "page": "page", "p": "page",
         "screen": "screen", "s": "screen", "group": "group", "g": "group", "alias": "alias", "a": "alias",
         "batch": "batch", "b": "batch", "import": "batch"}
TYPES = frozenset(("identify", "track", "page", "screen", "group", "alias"))
_SHARED = ("context", "integrations")

# Why a request (or a message of a batch) was refused: the `reason` label of the rejected counter.
UNAUTHORIZED = "unauthorized"
CONTENT_TYPE = "content type"
CONTENT_ENCODING = "content encoding"
BAD_GZIP = "bad gzip"
TOO_LARGE = "too large"
BAD_JSON = "bad json"
NOT_AN_OBJECT = "not an object"
BAD_BATCH = "batch not a list"
TOO_MANY = "too many messages"
MESSAGE_TOO_LARGE = "message too large"
INVALID_MESSAGE = "invalid message"
BUSY = "busy"
SPOOL_FAILED = "spool error"
NOT_FOUND = "not found"
NOT_ALLOWED = "method not allowed"
INTERNAL = "internal error"

_SUCCESS = b'{"success": true}'
_JSON = "application/json"
_KB = 1024


class Refused(Exception):
    """A request answered with an error status: `reason` for the metrics, `error` for the client."""

    def __init__(self, status: int, reason: str, error: str, headers: dict[str, str] | None = None):
        super().__init__(error)
        self.status = status
        self.reason = reason
        self.error = error
        self.headers = headers or {}


def create_app(relay: Any) -> flask.Flask:
    """The relay's WSGI app. `relay` has `config` (a RelayConfig, replaced on reload, so read per
    request), `spool` (a Spool) and `metrics` (a Metrics)."""
    app = flask.Flask(__name__, static_folder=None)
    ingest = Ingest(relay)
    blueprint = flask.Blueprint("ingest", __name__)
    blueprint.add_url_rule("/v1/<call>", "call", ingest.call, methods=["POST", "OPTIONS"])
    # Segment's bulk import tool posted to `/v1/import/`: a trailing slash changes nothing.
    blueprint.add_url_rule("/v1/<call>/", "call_slash", ingest.call, methods=["POST", "OPTIONS"])
    blueprint.add_url_rule("/health", "health", ingest.health, methods=["GET"])
    blueprint.add_url_rule("/metrics", "metrics", ingest.metrics_text, methods=["GET"])
    app.register_blueprint(blueprint)
    app.register_error_handler(HTTPException, ingest.http_error)
    app.register_error_handler(Exception, ingest.unexpected)
    app.after_request(_cors)
    return app


class Ingest:
    """The views, and what they keep between requests (the write-key index, the health probe)."""

    def __init__(self, relay: Any):
        self.relay = relay
        self._index: tuple[RelayConfig | None, dict[str, Source]] = (None, {})
        self._probe_lock = threading.Lock()
        self._probe_done: threading.Event | None = None
        self._complaints = _Throttle(60.0)

    # -- /v1/* -------------------------------------------------------------------------------------

    def call(self, call: str) -> flask.Response:
        kind = PATHS.get(call)
        if kind is None:
            return self._refuse(Refused(404, NOT_FOUND, _NO_SUCH_ENDPOINT))
        if flask.request.method == "OPTIONS":
            return flask.Response(status=204, headers={
                "Access-Control-Allow-Methods": "POST, OPTIONS",
                "Access-Control-Allow-Headers": _ALLOWED_HEADERS,
                "Access-Control-Max-Age": str(PREFLIGHT_MAX_AGE)})
        try:
            self._ingest(kind)
        except Refused as refusal:
            return self._refuse(refusal)
        return flask.Response(_SUCCESS, status=200, content_type=_JSON)

    def _ingest(self, kind: str) -> None:
        relay = self.relay
        config: RelayConfig = relay.config
        spool = relay.spool
        environ = flask.request.environ

        # The Basic user is known before the body is read: an unknown one costs nothing more.
        source = None
        user = _basic_user(environ.get("HTTP_AUTHORIZATION"))
        if user:
            source = self._source(config, user)
            if source is None:
                raise Refused(401, UNAUTHORIZED, "unknown write key")
        if spool.pending >= config.max_pending:
            raise _busy(spool.pending)

        data = _read_body(environ, flask.request.stream)
        body = _parse_json(data)
        if not isinstance(body, dict):
            raise Refused(400, NOT_AN_OBJECT, f"the body must be a JSON object, not {kind_of(body)}")
        if source is None:
            key = body.get("writeKey")
            if not isinstance(key, str) or not key:
                raise Refused(401, UNAUTHORIZED, "no write key: send it as the HTTP Basic user name "
                                                 "or as writeKey in the body")
            source = self._source(config, key)
            if source is None:
                raise Refused(401, UNAUTHORIZED, "unknown write key")

        measure = len(data) * _MAX_GROWTH > MAX_MESSAGE_BYTES
        if kind == "batch":
            messages, too_large = _batch_messages(body, measure)
        else:
            if body.get("type") is None:
                body["type"] = kind
            if measure and _size(body) > MAX_MESSAGE_BYTES:
                raise Refused(400, MESSAGE_TOO_LARGE, f"the message is over {MAX_MESSAGE_BYTES // _KB} KB")
            try:
                check_message(body)  # before the spool: a refused call must not count as skipped there
            except InvalidMessage as error:
                raise Refused(400, INVALID_MESSAGE, str(error)) from None
            messages, too_large = [body], 0
        if spool.pending + len(messages) > config.max_pending:
            raise _busy(spool.pending)

        accepted = Accepted()
        if messages:
            try:
                accepted = spool.accept(source, messages)
            except SpoolError as error:
                self._complain(f"ingest: {error}; answering 503 (nothing was stored)")
                raise Refused(503, SPOOL_FAILED, f"the relay could not store the messages ({error}); "
                                                 "nothing was stored: retry later",
                              {"Retry-After": str(SPOOL_RETRY_AFTER)}) from None
        if kind != "batch" and accepted.invalid:
            raise Refused(400, INVALID_MESSAGE, accepted.invalid[0])
        self._count(source, messages, accepted, too_large)

    def _count(self, source: Source, messages: list[Any], accepted: Accepted, too_large: int) -> None:
        metrics = self.relay.metrics
        name = source.name
        types: dict[str, int] = {}
        for message in messages:
            kind = message.get("type") if isinstance(message, dict) else None
            label = kind if isinstance(kind, str) and kind in TYPES else "invalid"
            types[label] = types.get(label, 0) + 1
        for label, count in types.items():
            metrics.accepted.labels(source=name, type=label).inc(count)
        for reason, count in accepted.skipped.items():
            metrics.skipped.labels(source=name, reason=reason).inc(count)
        if accepted.invalid:
            metrics.skipped.labels(source=name, reason="invalid").inc(len(accepted.invalid))
        if accepted.duplicates:
            metrics.duplicates.labels(source=name).inc(accepted.duplicates)
        if too_large:
            metrics.rejected.labels(reason=MESSAGE_TOO_LARGE).inc(too_large)

    def _source(self, config: RelayConfig, write_key: str) -> Source | None:
        """The source with this write key; the index is rebuilt when the configuration was replaced."""
        index = self._index
        if index[0] is not config:
            index = (config, {source.write_key: source for source in config.sources})
            self._index = index
        return index[1].get(write_key)

    def _refuse(self, refusal: Refused) -> flask.Response:
        self.relay.metrics.rejected.labels(reason=refusal.reason).inc()
        return _error(refusal.status, refusal.error, refusal.headers)

    # -- /health and /metrics ------------------------------------------------------------------------

    def health(self) -> flask.Response:
        """200 when the spool commits a write now (a real one, with its fsync), else 503."""
        spool = self.relay.spool
        error = self._probe(spool)
        payload: dict[str, Any] = {"ok": error is None, "pending": spool.pending}
        if error is not None:
            payload["error"] = error
        return flask.Response(json.dumps(payload), status=200 if error is None else 503, content_type=_JSON)

    def _probe(self, spool: Any) -> str | None:
        """Commit a write through the spool's writer, waiting at most HEALTH_TIMEOUT. At most one probe
        is in flight: a stuck writer must not collect a thread per health check."""
        with self._probe_lock:
            if self._probe_done is not None and not self._probe_done.is_set():
                return "the previous check is still waiting for the spool to commit"
            done = self._probe_done = threading.Event()
        outcome: list[str | None] = []

        def probe() -> None:
            try:
                spool.run(_rewrite_user_version)
                outcome.append(None)
            except SpoolError as error:
                outcome.append(str(error))
            except Exception as error:  # noqa: BLE001 - any failure means the spool cannot take writes
                outcome.append(f"the spool could not commit: {error}")
            finally:
                done.set()

        threading.Thread(target=probe, name="health-probe", daemon=True).start()
        if not done.wait(HEALTH_TIMEOUT):
            return f"the spool did not commit within {HEALTH_TIMEOUT:g} s"
        return outcome[0]

    def metrics_text(self) -> flask.Response:
        body, content_type = self.relay.metrics.render()
        return flask.Response(body, status=200, content_type=content_type)

    # -- errors --------------------------------------------------------------------------------------

    def http_error(self, error: HTTPException) -> flask.Response:
        """Routing errors as JSON: 404 for an unknown path, 405 for a wrong method."""
        status = error.code or 500
        if status == 404:
            return self._refuse(Refused(404, NOT_FOUND, _NO_SUCH_ENDPOINT))
        if status == 405:
            allowed = ", ".join(sorted(getattr(error, "valid_methods", None) or ()))
            return self._refuse(Refused(405, NOT_ALLOWED, f"{flask.request.method} is not allowed here; use "
                                        f"{allowed or 'another method'}", {"Allow": allowed} if allowed else None))
        return self._refuse(Refused(status, "bad request" if status < 500 else INTERNAL,
                                    _one_line(error.description or error.name)))

    def unexpected(self, error: Exception) -> flask.Response:
        """A fault of the relay, never of the input: 500, logged with its traceback."""
        self._complain("ingest: unexpected error; answering 500", exc_info=error)
        return self._refuse(Refused(500, INTERNAL, "internal error in the relay: nothing was stored; retry later"))

    def _complain(self, text: str, exc_info: BaseException | None = None) -> None:
        suppressed = self._complaints.allow()
        if suppressed is None:
            return
        if suppressed:
            text += f" ({suppressed} more like it in the last minute were not logged)"
        log.error(text, exc_info=exc_info)


_NO_SUCH_ENDPOINT = ("no such endpoint: POST to /v1/identify, /v1/track, /v1/page, /v1/screen, /v1/group, "
                     "/v1/alias or /v1/batch (or /v1/i, /v1/t, /v1/p, /v1/s, /v1/g, /v1/a, /v1/b, /v1/import)")


def _busy(pending: int) -> Refused:
    return Refused(429, BUSY, f"the relay has {pending} records waiting to be delivered; retry later",
                   {"Retry-After": str(BUSY_RETRY_AFTER), "X-RateLimit-Reset": str(BUSY_RETRY_AFTER)})


def _error(status: int, error: str, headers: dict[str, str] | None = None) -> flask.Response:
    body = json.dumps({"success": False, "error": _one_line(error)}, ensure_ascii=False)
    return flask.Response(body, status=status, headers=headers, content_type=_JSON)


def _cors(response: flask.Response) -> flask.Response:
    """Browsers (Analytics.js in cloud mode) read the answers of /v1/*, errors included."""
    if flask.request.path.startswith("/v1/"):
        response.headers["Access-Control-Allow-Origin"] = "*"
        response.headers["Access-Control-Expose-Headers"] = "Retry-After, X-RateLimit-Reset"
    return response


def _rewrite_user_version(db: Any) -> None:
    """A write that changes nothing: the header's user_version written back as it is. It still makes
    the commit write and fsync a page, which is what a disk-full or read-only spool cannot do."""
    version = int(db.execute("PRAGMA user_version").fetchone()[0])
    db.execute(f"PRAGMA user_version = {version}")


# -- the request body ----------------------------------------------------------------------------------


_TEXT_TYPES = ("application/json", "text/plain")
_CHARSET = re.compile(r"""charset\s*=\s*["']?([^"';\s]*)""", re.IGNORECASE)
_GZIP_SLACK = 4 * _KB  # gzip's framing: a compressed body may be a little larger than what it holds


def _read_body(environ: dict[str, Any], stream: Any) -> bytes:
    """The request body, decompressed, at most MAX_REQUEST_BYTES (Refused otherwise)."""
    content_type = environ.get("CONTENT_TYPE", "")
    if content_type:
        mimetype, _, parameters = content_type.partition(";")
        mimetype = mimetype.strip().lower()
        if mimetype not in _TEXT_TYPES:
            raise Refused(400, CONTENT_TYPE, f"Content-Type {_show(mimetype)} is not accepted: "
                                             "send application/json or text/plain")
        charset = _CHARSET.search(parameters)
        if charset and charset.group(1).lower() not in ("utf-8", "utf8"):
            raise Refused(400, CONTENT_TYPE, f"charset {_show(charset.group(1))} is not accepted: send UTF-8")
    encoding = environ.get("HTTP_CONTENT_ENCODING", "").strip().lower()
    if encoding not in ("", "identity", "gzip", "x-gzip"):
        raise Refused(400, CONTENT_ENCODING, f"Content-Encoding {_show(encoding)} is not accepted: "
                                             "send gzip or no encoding")
    gzipped = encoding in ("gzip", "x-gzip")
    cap = MAX_REQUEST_BYTES + (_GZIP_SLACK if gzipped else 0)
    length = environ.get("CONTENT_LENGTH")
    if length and length.isdigit() and int(length) > cap:
        raise _too_large(gzipped)
    chunks: list[bytes] = []
    size = 0
    while size <= cap:
        chunk = stream.read(cap + 1 - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    if size > cap:
        raise _too_large(gzipped)
    data = b"".join(chunks)
    return _gunzip(data) if gzipped else data


def _too_large(gzipped: bool) -> Refused:
    return Refused(400, TOO_LARGE, f"the request body is over {MAX_REQUEST_BYTES // _KB} KB"
                                   + (" (compressed)" if gzipped else ""))


def _gunzip(data: bytes) -> bytes:
    """Decompress gzip (one or more members), never holding more than MAX_REQUEST_BYTES + 1 of output:
    a small body that would inflate to gigabytes is refused after the first 500 KB."""
    parts: list[bytes] = []
    size = 0
    rest = data
    while True:
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            part = inflater.decompress(rest, MAX_REQUEST_BYTES + 1 - size)
        except zlib.error as error:
            raise Refused(400, BAD_GZIP, f"the body is not valid gzip ({error})") from None
        size += len(part)
        if size > MAX_REQUEST_BYTES:
            raise Refused(400, TOO_LARGE, f"the request body is over {MAX_REQUEST_BYTES // _KB} KB once decompressed")
        parts.append(part)
        if not inflater.eof:
            raise Refused(400, BAD_GZIP, "the body is not valid gzip (it is cut short)")
        rest = inflater.unused_data
        if not rest:
            return b"".join(parts)


class _NotStorable(ValueError):
    """Valid JSON syntax, but a value the relay refuses (NaN, a number beyond a double)."""


def _no_constant(name: str) -> Any:
    raise _NotStorable(f"{name} is not a JSON number: send a number or leave the value out")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise _NotStorable(f"the number {_show(text)} is beyond the range of a double")
    return value


def _double_int(text: str) -> int:
    if len(text) > 400:
        raise _NotStorable(f"the number {_show(text)} is beyond the range of a double")
    value = int(text)
    try:
        float(value)
    except OverflowError:
        raise _NotStorable(f"the number {_show(text)} is beyond the range of a double") from None
    return value


_DECODER = json.JSONDecoder(parse_constant=_no_constant)
_CAREFUL_DECODER = json.JSONDecoder(parse_constant=_no_constant, parse_float=_finite_float,
                                    parse_int=_double_int)
# What could hold a value the fast decoder would let through: a surrogate escape (it may be lone), a
# number with an exponent of 100 or more (standing alone, so that hex in ids such as "3e512" does not
# count), a run of 200 digits. A number beyond a double needs one of the last two (its integer digits
# plus its exponent exceed 308). Rare in real traffic; when seen, the careful decoder reads the body.
_DOUBTFUL = re.compile(r"\\u[dD][89abcdefABCDEF]"
                       r"|(?<![^\s:,\[])-?[0-9][0-9.]*[eE]\+?0*[1-9][0-9]{2,}(?![^\s,\]}])"
                       r"|(?<![0-9])[0-9]{200}")
_COMPACT = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), check_circular=False)
# How much longer a message's compact JSON can be than its text in the request: a number can grow
# (`1e15` → `1000000000000000.0`); nothing else does. Below this, no message needs measuring.
_MAX_GROWTH = 5


def _parse_json(data: bytes) -> Any:
    """The body as JSON, refusing what cannot be stored or handed on (Refused with the reason)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise Refused(400, BAD_JSON, f"the body is not UTF-8 (byte {error.start} is not valid)") from None
    if text.startswith("\ufeff"):
        text = text[1:]
    if not text.strip():
        raise Refused(400, BAD_JSON, "the body is empty: expected a JSON object")
    careful = _DOUBTFUL.search(text) is not None
    try:
        value = (_CAREFUL_DECODER if careful else _DECODER).decode(text)
        if careful:
            _COMPACT.encode(value).encode("utf-8")  # a lone surrogate fails here
    except RecursionError:
        raise Refused(400, BAD_JSON, "the body is nested too deeply") from None
    except json.JSONDecodeError as error:
        raise Refused(400, BAD_JSON, f"the body is not valid JSON: {error.msg} "
                                     f"(line {error.lineno}, column {error.colno})") from None
    except UnicodeEncodeError:
        raise Refused(400, BAD_JSON, "the body has a lone surrogate escape (\\ud800-\\udfff without its "
                                     "pair), which UTF-8 cannot store") from None
    except ValueError as error:
        raise Refused(400, BAD_JSON, str(error)) from None
    return value


def _size(value: Any) -> int:
    """A value's size as compact UTF-8 JSON."""
    try:
        return len(_COMPACT.encode(value).encode("utf-8"))
    except RecursionError:
        raise Refused(400, BAD_JSON, "the body is nested too deeply") from None


def _batch_messages(body: dict[str, Any], measure: bool) -> tuple[list[Any], int]:
    """A batch's messages with its shared context and integrations merged in, and how many were
    dropped for being over MAX_MESSAGE_BYTES."""
    items = body.get("batch")
    if not isinstance(items, list):
        raise Refused(400, BAD_BATCH, f'"batch" must be a list of messages, not {kind_of(items)}')
    if len(items) > MAX_MESSAGES:
        raise Refused(400, TOO_MANY, f"the batch has {len(items)} messages; at most {MAX_MESSAGES:,} per request")
    shared = [(key, body[key]) for key in _SHARED if isinstance(body.get(key), dict)]
    shared_size = _size(dict(shared)) if measure and shared else 0
    messages = []
    too_large = 0
    for item in items:
        if measure and _size(item) + shared_size > MAX_MESSAGE_BYTES:
            too_large += 1
            continue
        if shared and isinstance(item, dict):
            for key, value in shared:
                own = item.get(key, _ABSENT)
                if own is _ABSENT:
                    item[key] = value
                elif isinstance(own, dict):
                    item[key] = {**value, **own}
        messages.append(item)
    return messages, too_large


_ABSENT: Any = object()


# -- small helpers ---------------------------------------------------------------------------------------


def _basic_user(header: str | None) -> str | None:
    """The user name of HTTP Basic credentials; None without Basic credentials (e.g. a Bearer token)."""
    if not header:
        return None
    scheme, _, credentials = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(credentials.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        raise Refused(401, UNAUTHORIZED, "the Authorization header's Basic credentials are not valid "
                                         "base64 of writeKey:password") from None
    return decoded.partition(":")[0] or None


def _show(text: str) -> str:
    """A client's text in an error: quoted, on one line, at most 40 characters of it."""
    shown = json.dumps(text)
    return shown if len(shown) <= 42 else shown[:41] + "…\""


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


class _Throttle:
    """Lets a repeating complaint through at most once per `seconds`; allow() → None (stay quiet) or
    the number of complaints held back since the last one let through."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic):
        self.seconds = seconds
        self.clock = clock
        self._lock = threading.Lock()
        self._last = -float("inf")
        self._held = 0

    def allow(self) -> int | None:
        with self._lock:
            now = self.clock()
            if now - self._last < self.seconds:
                self._held += 1
                return None
            held, self._held, self._last = self._held, 0, now
            return held
