"""Cloud mode in the QA demo: the page's server sends Segment calls through a relay, as a back end would.

`driptag demo` runs a relay (`driptag.relay.service.Relay`) in its own process, on a spool in a temporary
folder, delivering to the Drip REST API emulator that the demo app itself serves at ``/emulator/api``.
The page's cloud forms post to this blueprint (``/cloud/...``); the demo server builds the Segment call,
posts it to the relay's ``/v1/identify`` or ``/v1/track`` with the demo source's write key, and keeps
the call, with the relay's answer and the Drip records it becomes, to show what happens to it next:

- pending (with its attempts and when the next one is due), delivered, or a dead letter with Drip's
  error: read from the spool (the records waiting, `relay.status.dead_letters`) each time the page
  asks — a record the relay took that is neither waiting nor a dead letter was delivered;
- skipped, with the relay's reason, when the call gives Drip nothing;
- the Drip API requests that carried each record, from what the emulator received.

Which records a call becomes is the relay's own mapping (`driptag.relay.mapping.map_message`), run on
the call as sent, with the e-mail the relay remembers for its user (`Spool.remembered_email`).

Everything lives on the app (`cloud_for(app)`); nothing at module level but constants. The relay is
started and stopped by `running_relay(app, drip_api_url)`, so `create_app()` works without one: the
panel then says why cloud mode is off. The demo's API token is made up per app, is known only to the
relay and the emulator, and is shown as its last 4 characters at most.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import datetime
import json
import secrets
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from flask import Blueprint, Flask, Response, current_app, jsonify, request

from ..messages import kind_of
from ..emulators.drip_api import URL_PREFIX, drip_api_for
from ..relay.config import mask, parse_config
from ..relay.mapping import DripRecord, InvalidMessage, drip_requests, map_message
from ..relay.service import Relay
from ..relay.status import dead_letters, spool_status
from ..version import __version__

__all__ = ["CloudDemo", "DEMO_WRITE_KEY", "FAULT_CHOICES", "bp", "cloud_for", "new_api_token", "running_relay"]

DEMO_WRITE_KEY = "driptag-demo-write-key"
# The faults the page offers: a server error (retried with back-off), Drip's rate limit (the relay pauses
# for Retry-After) and a refused record (a dead letter).
FAULT_CHOICES = ("500", "429", "422")
RATE_LIMIT_SECONDS = 5.0  # Retry-After of an injected 429: long enough to watch the pause
MAX_FAULT_COUNT = 100
MAX_CALLS = 100
MAX_REQUESTS_SHOWN = 200
MAX_FORM_BYTES = 64 * 1024
MAX_TEXT_CHARS = 1000
ANONYMOUS_ID = "demo-visitor"
RELAY_TIMEOUT = 15.0
EXTENSION_KEY = "driptag_demo_cloud"

bp = Blueprint("cloud", __name__, url_prefix="/cloud")


def new_api_token() -> str:
    """A made-up Drip API token for one demo: it works only with the emulator of that demo."""
    return "demotoken" + secrets.token_hex(16)  # Drip's shape: 20 to 128 letters and digits


# ---------------------------------------------------------------------------------------------
# What the demo remembers of each call


@dataclasses.dataclass(frozen=True)
class _Expected:
    """One Drip record a call became, and the single request that carries it."""

    kind: str
    campaign_id: str | None
    record: dict[str, Any]
    path: str
    body: dict[str, Any]


@dataclasses.dataclass
class _Call:
    seq: int
    method: str
    at: float
    message: dict[str, Any]
    status: int | None            # the relay's HTTP status; None when it did not answer
    answer: Any                   # the relay's answer body (JSON), or what went wrong
    skipped: str | None = None
    records: tuple[_Expected, ...] = ()

    @property
    def message_id(self) -> str:
        return self.message["messageId"]


class CloudDemo:
    """Cloud mode's state on one demo app: the relay (once started), the calls sent, the demo source."""

    def __init__(self, *, account: str, campaign_id: str | None, api_token: str, write_key: str = DEMO_WRITE_KEY,
                 off_reason: str | None = None) -> None:
        self.account = account
        self.campaign_id = campaign_id
        self.write_key = write_key
        self._api_token = api_token
        self.off_reason = off_reason
        self.relay: Relay | None = None
        self.relay_url: str | None = None
        self._client: httpx.Client | None = None
        self._lock = threading.Lock()
        self._calls: collections.deque[_Call] = collections.deque(maxlen=MAX_CALLS)
        self._seq = 0

    @property
    def token_hint(self) -> str:
        """The API token as the page may show it: its last 4 characters."""
        return mask(self._api_token)

    @property
    def enabled(self) -> bool:
        return self.off_reason is None and self.relay is not None

    @property
    def why_off(self) -> str | None:
        if self.off_reason is not None:
            return self.off_reason
        if self.relay is None:
            return "The relay is not running: `driptag demo` starts one beside the page."
        return None

    def relay_config(self) -> Any:
        """The relay's configuration: one source, the demo's account and campaign, with the demo token."""
        source: dict[str, Any] = {"writeKey": self.write_key, "account": self.account, "apiToken": self._api_token}
        if self.campaign_id:
            source["campaignId"] = self.campaign_id
        return parse_config({"sources": [source]}, "the demo's relay", {})

    def page_config(self) -> dict[str, Any]:
        return {"enabled": self.enabled, "why": self.why_off, "relayUrl": self.relay_url,
                "writeKey": self.write_key, "token": self.token_hint, "faults": list(FAULT_CHOICES)}

    # -- the relay ----------------------------------------------------------------------------

    def attach(self, relay: Relay, relay_url: str) -> None:
        self.relay, self.relay_url = relay, relay_url
        self._client = httpx.Client(timeout=RELAY_TIMEOUT, trust_env=False)

    def detach(self) -> None:
        client, self._client = self._client, None
        self.relay = None
        if client is not None:
            client.close()

    # -- sending ------------------------------------------------------------------------------

    def send(self, method: str, message: dict[str, Any]) -> _Call:
        """Post one call to the relay as a back end would (HTTP Basic, the write key as the user)."""
        client, relay, url = self._client, self.relay, self.relay_url
        if client is None or relay is None or url is None:
            raise RuntimeError(self.why_off or "cloud mode is off")
        sent_at = time.time()
        try:
            response = client.post(f"{url}/v1/{method}", json=message, auth=(self.write_key, ""))
            status: int | None = response.status_code
            try:
                answer: Any = response.json()
            except ValueError:
                answer = response.text[:MAX_TEXT_CHARS]
        except httpx.HTTPError as error:
            status, answer = None, f"the relay did not answer: {error}"
        call = _Call(0, method, sent_at, message, status, answer)
        if status == 200:
            call.skipped, call.records = self._expected(relay, message)
        with self._lock:
            self._seq += 1
            call.seq = self._seq
            self._calls.append(call)
        return call

    def _expected(self, relay: Relay, message: dict[str, Any]) -> tuple[str | None, tuple[_Expected, ...]]:
        """What the relay made of a call it took: the reason it sends nothing, or its Drip records."""
        source = relay.config.source_for(self.write_key)
        if source is None:
            return None, ()
        try:
            mapped = map_message(message, key_style=source.key_style, campaign_id=source.campaign_id,
                                 recall=_Recall(relay, self.write_key))
        except InvalidMessage:
            return None, ()
        if mapped.skipped:
            return mapped.skipped, ()
        return None, tuple(_expected(source.account, record) for record in mapped.records)

    @property
    def sent(self) -> int:
        """How many calls were sent so far: the number of the last one (numbers go on after a clear, so a page
        that still shows older calls never mistakes a new one for one of them)."""
        with self._lock:
            return self._seq

    def clear_calls(self) -> None:
        with self._lock:
            self._calls.clear()

    # -- what the page shows ------------------------------------------------------------------

    def view(self, app: Flask, after: int) -> dict[str, Any]:
        """The relay's side (each call and what became of its records) and the emulator's side."""
        emulator = drip_api_for(app)
        api_requests = [entry for entry in emulator.requests() if "/_" not in entry["path"]]
        shown = [_request_view(entry) for entry in api_requests if entry["n"] > after][-MAX_REQUESTS_SHOWN:]
        data: dict[str, Any] = {"enabled": self.enabled, "why": self.why_off, "faults": emulator.faults(),
                                "requests": shown, "last": max([after] + [entry["n"] for entry in api_requests])}
        relay = self.relay
        if relay is None or not self.enabled:
            data.update(calls=[], relay=None)
            return data
        with self._lock:
            calls = list(self._calls)
        data["relay"], records = _relay_view(relay, self.write_key)
        links = _link_requests(calls, api_requests, records["dead"])
        data["calls"] = [_call_view(call, records, links) for call in calls]
        return data


class _Recall:
    """The e-mail the relay remembers for a userId or anonymousId of the demo source (read-only)."""

    def __init__(self, relay: Relay, write_key: str) -> None:
        self.relay = relay
        self.write_key = write_key

    def __call__(self, id_kind: str, ident: str) -> str | None:
        sender = self.relay.delivery.senders.get(self.write_key)
        if sender is None:
            return None
        return self.relay.spool.remembered_email(sender.source_id, id_kind, ident)


def _expected(account: str, record: DripRecord) -> _Expected:
    [single] = drip_requests(account, [record])
    return _Expected(record.kind, record.campaign_id, record.record, single["path"], single["body"])


def cloud_for(app: Flask) -> CloudDemo:
    return app.extensions[EXTENSION_KEY]


def init_app(app: Flask, cloud: CloudDemo) -> None:
    app.extensions[EXTENSION_KEY] = cloud
    app.register_blueprint(bp)


@contextlib.contextmanager
def running_relay(app: Flask, drip_api_url: str) -> Iterator[Relay | None]:
    """Run the demo's relay while the block runs: in this process, on a spool in a temporary folder (removed
    afterwards), delivering to `drip_api_url` (the demo's Drip API emulator). Yields None, starting nothing,
    when cloud mode is off for this app (real Drip)."""
    cloud = cloud_for(app)
    if cloud.off_reason is not None:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="driptag-demo-") as folder:
        relay = Relay(None, Path(folder) / "relay.sqlite3", drip_api_url, config=cloud.relay_config())
        try:
            host, port = relay.start("127.0.0.1", 0)
            cloud.attach(relay, f"http://{host}:{port}")
            yield relay
        finally:
            cloud.detach()
            relay.stop()


# ---------------------------------------------------------------------------------------------
# Reading the spool and the emulator


def _relay_view(relay: Relay, write_key: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The demo source's summary, and its records: waiting by (messageId, kind, campaign), dead letters."""
    now = time.time()
    status = spool_status(relay.spool.path, relay.config, now)
    source = relay.config.source_for(write_key)
    sender = relay.delivery.senders.get(write_key)
    summary = next((item for item in status["sources"] if source and item["account"] == source.account), None)
    waiting: dict[tuple[Any, str, Any], Any] = {}
    backoff_until, failures = 0.0, 0
    paused_until = 0.0
    if sender is not None and source is not None:
        for row in relay.spool.waiting(sender.source_id):
            waiting.setdefault((row.message_id, row.kind, row.campaign_id), row)
        backoff_until, failures = sender.backoff_until, sender.failures
        paused_until = relay.spool.paused_until(source.account, "single")
    letters = {}
    for letter in dead_letters(relay.spool.path):
        letters.setdefault((letter["messageId"], letter["kind"], letter["campaignId"]), letter)
    view = {
        "pending": status["pending"],
        "deadLetters": status["deadLetters"],
        "delivered": summary["delivered"] if summary else {"lastHour": 0, "lastDay": 0},
        "skipped": summary["skipped"] if summary else {},
        "paused": summary["paused"] if summary else None,
        "pausedFor": round(paused_until - now, 1) if paused_until > now else None,
        "pauseReason": summary["requests"]["single"]["pauseReason"] if summary else None,
        "backoffFor": round(backoff_until - now, 1) if backoff_until > now else None,
        "failures": failures,
        "lastError": summary["lastError"] if summary else None,
    }
    records = {"waiting": waiting, "dead": letters, "now": now,
               "next": max(backoff_until, paused_until), "lastError": view["lastError"]}
    return view, records


def _matches(expected: _Expected, entry: dict[str, Any]) -> bool:
    """Whether a request the emulator received carried this record (alone, or in a batch)."""
    body = entry.get("body")
    path = _api_path(entry)
    if path == expected.path:
        return body == expected.body
    field = "events" if expected.kind == "event" else "subscribers"
    if expected.kind != "campaign" and path == expected.path.replace(f"/{field}", f"/{field}/batches"):
        try:
            return expected.record in body["batches"][0][field]
        except (TypeError, KeyError, IndexError):
            return False
    return False


def _link_requests(calls: list[_Call], api_requests: list[dict[str, Any]],
                   letters: dict[tuple[Any, str, Any], Any]) -> dict[tuple[int, int], list[dict[str, Any]]]:
    """The requests that carried each record of each call, oldest first. A record's requests end with its
    2xx (or, for a dead letter, Drip's refusal); a request belongs to one record at most, the oldest call's
    first, so two calls with the same record share nothing."""
    links: dict[tuple[int, int], list[dict[str, Any]]] = {}
    taken: set[int] = set()
    for call in calls:
        for index, expected in enumerate(call.records):
            dead = (call.message_id, expected.kind, expected.campaign_id) in letters
            found: list[dict[str, Any]] = []
            for entry in api_requests:
                if entry["n"] in taken or entry["time"] < call.at or not _matches(expected, entry):
                    continue
                taken.add(entry["n"])
                found.append({"n": entry["n"], "status": entry["status"], "fault": entry["fault"]})
                status = entry["status"] or 0
                if 200 <= status < 300 or (dead and 400 <= status < 500 and status not in (401, 403, 429)):
                    break
            links[(call.seq, index)] = found
    return links


def _call_view(call: _Call, records: dict[str, Any],
               links: dict[tuple[int, int], list[dict[str, Any]]]) -> dict[str, Any]:
    now = records["now"]
    shown = []
    for index, expected in enumerate(call.records):
        key = (call.message_id, expected.kind, expected.campaign_id)
        item: dict[str, Any] = {"kind": expected.kind, "campaignId": expected.campaign_id, "record": expected.record,
                                "requests": links.get((call.seq, index), [])}
        row = records["waiting"].get(key)
        letter = records["dead"].get(key)
        if row is not None:
            due = max(row.not_before, records["next"])
            item.update(state="pending", attempts=row.attempts,
                        retryIn=round(due - now, 1) if due > now else None,
                        error=(records["lastError"] or {}).get("error") if row.attempts else None)
        elif letter is not None:
            item.update(state="dead", status=letter["status"], error=letter["error"])
        else:
            item.update(state="delivered")
        shown.append(item)
    if call.status != 200:
        state = "refused"
    elif call.skipped:
        state = "skipped"
    elif any(item["state"] == "dead" for item in shown):
        state = "dead"
    elif any(item["state"] == "pending" for item in shown):
        state = "pending"
    else:
        state = "delivered"
    return {"seq": call.seq, "method": call.method, "at": _iso(call.at), "path": f"/v1/{call.method}",
            "message": call.message, "status": call.status, "answer": call.answer, "skipped": call.skipped,
            "state": state, "records": shown}


def _api_path(entry: dict[str, Any]) -> str:
    """A request's path as Drip's API names it (without the emulator's /emulator/api)."""
    path = entry.get("path") or ""
    return path[len(URL_PREFIX):] if path.startswith(URL_PREFIX + "/") else path


def _request_view(entry: dict[str, Any]) -> dict[str, Any]:
    return {"n": entry["n"], "at": _iso(entry["time"]), "method": entry["method"], "path": _api_path(entry),
            "status": entry["status"], "fault": entry["fault"], "body": entry["body"]}


def _iso(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).isoformat(timespec="milliseconds") \
        .replace("+00:00", "Z")


# ---------------------------------------------------------------------------------------------
# The page's requests


class _FormError(Exception):
    """Fields of a cloud form that cannot make a call: field name -> one line, shown next to the field."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(errors.values()))
        self.errors = errors


def _cloud() -> CloudDemo:
    return cloud_for(current_app)


def _error(status: int, message: str) -> tuple[Response, int]:
    return jsonify(error=message), status


def _form() -> dict[str, Any]:
    """The page's JSON body: an object of strings (the form's fields as typed)."""
    if request.mimetype != "application/json":
        raise _FormError({"": "send the form as application/json"})
    if (request.content_length or 0) > MAX_FORM_BYTES:
        raise _FormError({"": f"the form is larger than {MAX_FORM_BYTES // 1024} KB"})
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise _FormError({"": "the form must be sent as a JSON object"})
    for name, value in body.items():
        if not isinstance(value, (str, int)) or isinstance(value, bool):
            raise _FormError({str(name)[:40]: "must be text"})
    return body


def _text(form: dict[str, Any], name: str) -> str:
    value = form.get(name, "")
    text = str(value).strip()
    if len(text) > MAX_TEXT_CHARS:
        raise _FormError({name: f"at most {MAX_TEXT_CHARS} characters"})
    return text


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON: use a number or null")


def _object(form: dict[str, Any], name: str) -> dict[str, Any]:
    """A JSON object typed into a textarea; blank means {}."""
    text = str(form.get(name, "")).strip()
    if not text:
        return {}
    try:
        value = json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as error:
        raise _FormError({name: f"Invalid JSON in {name}: {error.msg} (line {error.lineno}, column {error.colno})"}) \
            from None
    except RecursionError:
        raise _FormError({name: f"Invalid JSON in {name}: nested too deeply"}) from None
    except ValueError as error:
        raise _FormError({name: f"Invalid JSON in {name}: {error}"}) from None
    if not isinstance(value, dict):
        raise _FormError({name: f'{name} must be a JSON object, like {{"plan": "pro"}}, not {kind_of(value)}.'})
    return value


def _message(kind: str, user_id: str) -> dict[str, Any]:
    """What a server-side Segment library puts in every call."""
    message: dict[str, Any] = {"type": kind, "messageId": f"demo-{uuid.uuid4()}",
                               "timestamp": _iso(time.time()),
                               "context": {"library": {"name": "driptag-demo", "version": __version__}}}
    if user_id:
        message["userId"] = user_id
    else:
        message["anonymousId"] = ANONYMOUS_ID  # Segment's API needs one of the two
    return message


def _identify_message(form: dict[str, Any]) -> dict[str, Any]:
    errors: dict[str, str] = {}
    user_id = email = ""
    traits: dict[str, Any] = {}
    for name, read in (("userId", _text), ("email", _text), ("traits", _object)):
        try:
            value = read(form, name)
        except _FormError as error:
            errors.update(error.errors)
            continue
        if name == "userId":
            user_id = value
        elif name == "email":
            email = value
        else:
            traits = value
    if errors:
        raise _FormError(errors)
    message = _message("identify", user_id)
    if email:
        traits["email"] = email
    message["traits"] = traits
    return message


def _track_message(form: dict[str, Any]) -> dict[str, Any]:
    errors: dict[str, str] = {}
    values: dict[str, Any] = {}
    for name, read in (("userId", _text), ("event", _text), ("properties", _object)):
        try:
            values[name] = read(form, name)
        except _FormError as error:
            errors.update(error.errors)
    if "event" in values and not values["event"]:
        errors["event"] = "Type an event name, like Order Completed: Drip needs an action name."
    if errors:
        raise _FormError(errors)
    message = _message("track", values["userId"])
    message["event"] = values["event"]
    message["properties"] = values["properties"]
    return message


@bp.post("/identify")
@bp.post("/track")
def send_call() -> tuple[Response, int]:
    """A cloud form: build the Segment call and post it to the relay; the page gets the call's entry."""
    cloud = _cloud()
    method = request.path.rsplit("/", 1)[-1]
    try:
        form = _form()
        message = _identify_message(form) if method == "identify" else _track_message(form)
    except _FormError as error:
        return jsonify(errors=error.errors), 400
    if not cloud.enabled:
        return _error(409, cloud.why_off or "cloud mode is off")
    call = cloud.send(method, message)
    return jsonify(seq=call.seq, status=call.status, answer=call.answer), 200


@bp.get("/state")
def state() -> tuple[Response, int]:
    """What the relay holds and what the emulator received since `after` (an arrival index)."""
    after_text = request.args.get("after", "0")
    if not after_text.isdigit() or len(after_text) > 18:
        return _error(400, "after must be an arrival index (a non-negative integer)")
    response = jsonify(_cloud().view(current_app, int(after_text)))
    response.headers["Cache-Control"] = "no-store"
    return response, 200


@bp.post("/faults")
def add_fault() -> tuple[Response, int]:
    """The emulator answers the next `count` API requests with `fault` (500, 429 or 422)."""
    try:
        form = _form()
        fault = _text(form, "fault")
        count_text = _text(form, "count") or "1"
    except _FormError as error:
        return jsonify(errors=error.errors), 400
    errors = {}
    if fault not in FAULT_CHOICES:
        errors["fault"] = f"choose one of {', '.join(FAULT_CHOICES)}"
    if not count_text.isdigit() or not 1 <= int(count_text) <= MAX_FAULT_COUNT:
        errors["count"] = f"a whole number from 1 to {MAX_FAULT_COUNT}"
    if errors:
        return jsonify(errors=errors), 400
    entry = drip_api_for(current_app).inject(fault, int(count_text),
                                             seconds=RATE_LIMIT_SECONDS if fault == "429" else None)
    return jsonify(entry), 201


@bp.delete("/faults")
def clear_faults() -> tuple[Response, int]:
    drip_api_for(current_app).clear_faults()
    return Response(status=204), 204


@bp.delete("/calls")
def clear_calls() -> tuple[Response, int]:
    """Forget the calls listed (what the relay holds is not touched)."""
    _cloud().clear_calls()
    return Response(status=204), 204


@bp.delete("/received")
def clear_received() -> tuple[Response, int]:
    """Forget what the emulator received (not its pending faults)."""
    drip_api_for(current_app).clear()
    return Response(status=204), 204
