"""Hostile input against the relay, over a real socket: fuzzed Segment calls (every field, any JSON type,
unicode, lone surrogates, deep nesting, numbers beyond a double, duplicate keys), bodies near and over the
size limits, Content-Type and Content-Encoding (gzip bombs, cut and corrupted gzip), Basic auth headers,
paths and methods, bodies cut short, and clients that trickle their bytes or send nothing at all.

Each test runs a relay in this process (waitress on 127.0.0.1) delivering to the Drip API emulator, and
keeps a ledger of what the relay acknowledged. What the relay answers is checked as it comes: never a
server error, only the answers its ingest documents, every error of its own `{"success": false, "error":
"<one line>"}`. Afterwards the relay must be healthy, and once its spool is empty its own counts (metrics,
`relay status --json`, the dead letters) and what the emulator received must account for every
acknowledged message: acknowledged = delivered + dead letters + skipped + duplicates, none lost.

Hypothesis runs derandomized (the same examples on every run) and without deadlines; several fuzzed
messages share one request where the API allows it.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import dataclasses
import functools
import gzip
import http.client
import io
import itertools
import json
import logging
import select
import socket
import struct
import subprocess
import sys
import threading
import urllib.parse
import zlib
from collections.abc import Iterator, Sequence
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from driptag.relay.status import dead_letters, spool_status
from relay_support import CAMPAIGN, WRITE_KEY, drip_api, relay_in_process, source, wait_for

KB = 1024
MESSAGE_LIMIT = 32 * KB      # a message over this is dropped from its batch (a single call: 400)
REQUEST_LIMIT = 500 * KB     # a body over this (decompressed) is 400
GZIP_SLACK = 4 * KB          # a gzipped body may be this much larger than REQUEST_LIMIT before it is read
WAITRESS_LIMIT = 1024 * KB   # waitress itself answers 413 to a body over this; the relay never sees it
# Budgets as Drip's but per second (relay and emulator alike): thousands of fuzzed records drain in seconds.
FAST = {"single": 3600, "batch": 50, "windowSeconds": 1}

BATCH_PATHS = ("/v1/batch", "/v1/b", "/v1/import", "/v1/import/")
CALL_PATHS = ("/v1/identify", "/v1/i", "/v1/track", "/v1/t", "/v1/page", "/v1/p", "/v1/screen", "/v1/s",
              "/v1/group", "/v1/g", "/v1/alias", "/v1/a", "/v1/track/")
SUCCESS = b'{"success": true}'
WAITRESS_PLAIN = "text/plain; charset=utf-8"
_ids = itertools.count(1)


def fuzz_settings(examples: int) -> settings:
    """The same examples on every run (CI is reproducible), no deadlines (a slow machine is no failure)."""
    return settings(max_examples=examples, derandomize=True, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.large_base_example])


def basic(user: bytes) -> bytes:
    return b"Basic " + base64.b64encode(user)


VALID_AUTH = {"Authorization": basic(WRITE_KEY.encode() + b":")}


# --- JSON written by hand: duplicate keys, raw number literals, unique message ids ---------------------------

@dataclasses.dataclass(frozen=True)
class Raw:
    """JSON text written as it is (numbers beyond a double, NaN, deep nesting, escapes)."""

    text: str


@dataclasses.dataclass(frozen=True)
class Obj:
    """A JSON object written pair by pair: a key may repeat (the last one counts)."""

    pairs: tuple[tuple[str, Any], ...]


@dataclasses.dataclass(frozen=True)
class Fresh:
    """A messageId made unique when the request is written: `prefix` and a number never used before."""

    prefix: str


class Writer:
    """Writes a value as JSON text; a lone surrogate in a string is written as a \\udXXX escape when
    `ascii_only`, else as its (invalid) UTF-8 bytes. Collects the message ids it made unique."""

    def __init__(self, ascii_only: bool) -> None:
        self.ascii_only = ascii_only
        self.ids: list[str] = []

    def text(self, value: Any) -> str:
        out: list[str] = []
        self._write(value, out)
        return "".join(out)

    def bytes(self, value: Any) -> bytes:
        return self.text(value).encode("utf-8", "surrogatepass")

    def _string(self, value: str) -> str:
        return json.dumps(value, ensure_ascii=self.ascii_only)

    def _write(self, value: Any, out: list[str]) -> None:
        if isinstance(value, Raw):
            out.append(value.text)
        elif isinstance(value, Fresh):
            made = f"{value.prefix}~{next(_ids)}"
            self.ids.append(made)
            out.append(self._string(made))
        elif isinstance(value, Obj):
            out.append("{")
            for index, (key, item) in enumerate(value.pairs):
                out.append(("," if index else "") + self._string(key) + ":")
                self._write(item, out)
            out.append("}")
        elif isinstance(value, dict):
            self._write(Obj(tuple(value.items())), out)
        elif isinstance(value, (list, tuple)):
            out.append("[")
            for index, item in enumerate(value):
                if index:
                    out.append(",")
                self._write(item, out)
            out.append("]")
        elif isinstance(value, str):
            out.append(self._string(value))
        else:
            out.append(json.dumps(value))


def nested(depth: int) -> Raw:
    """Arrays and objects `depth` deep."""
    opening = "".join('[{"a":' if level % 2 else "[" for level in range(depth))
    closing = "".join("}]" if level % 2 else "]" for level in reversed(range(depth)))
    return Raw(opening + "0" + closing)


def compact_size(value: Any) -> int:
    """A message's size as the relay measures it: compact JSON, UTF-8."""
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))


# --- what the clients saw, and what the relay must account for ------------------------------------------------

@dataclasses.dataclass
class Ledger:
    """What the clients of one test sent and heard."""

    requests: int = 0
    statuses: collections.Counter[int | str] = dataclasses.field(default_factory=collections.Counter)
    categories: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    acknowledged: int = 0  # messages of requests answered 200 that the relay keeps (not dropped for size)
    too_large: int = 0     # messages of requests answered 200 that the relay drops for being over 32 KB
    too_large_calls: int = 0  # single calls refused (400) for being over 32 KB
    ids: set[str] = dataclasses.field(default_factory=set)

    def answered(self, category: str, status: int | None, messages: int = 0, ids: Sequence[str] = (),
                 too_large: int = 0) -> None:
        self.requests += 1
        self.categories[category] += 1
        self.statuses[status if status is not None else "no answer"] += 1
        if status == 200:
            self.acknowledged += messages - too_large
            self.too_large += too_large
            self.ids.update(ids)


@dataclasses.dataclass
class Harness:
    relay: Any
    drip: Any
    http: httpx.Client
    ledger: Ledger
    host: str
    port: int


@contextlib.contextmanager
def fuzzed_relay(tmp_path) -> Iterator[Harness]:
    """A relay (subscribing identified people to a campaign) in front of the Drip API emulator."""
    with drip_api(DRIP_API_WINDOW_SECONDS=1) as drip, \
            relay_in_process(tmp_path, drip, source(campaignId=CAMPAIGN, rateLimits=FAST)) as relay, \
            httpx.Client(base_url=relay.url, timeout=30) as client:
        host, port = relay.url.removeprefix("http://").rsplit(":", 1)
        yield Harness(relay, drip, client, Ledger(), host, int(port))


def check_relay_answer(what: str, status: int, content_type: str | None, body: bytes, *,
                       posted_to_v1: bool = True, head: bool = False) -> None:
    """An answer of the relay's own: no server error; an error is one-line JSON; a 200 to a post is success."""
    assert status < 500, f"{what}: answered {status}: {body[:500]!r}"
    if head:
        assert body == b"", f"{what}: a HEAD answer with a body: {body[:200]!r}"
        return
    if status >= 400:
        assert content_type == "application/json", f"{what}: {status} as {content_type}: {body[:300]!r}"
        payload = json.loads(body)
        assert isinstance(payload, dict) and set(payload) == {"success", "error"} and payload["success"] is False, \
            f"{what}: {status} with {payload!r}"
        error = payload["error"]
        assert isinstance(error, str) and error and error.splitlines() == [error] and error == error.strip(), \
            f"{what}: the error is not one line of text: {error!r}"
    elif status == 200 and posted_to_v1:
        assert (content_type, body) == ("application/json", SUCCESS), f"{what}: 200 with {content_type} {body!r}"


def error_of(body: bytes) -> str:
    return json.loads(body)["error"]


def check_waitress_answer(what: str, status: int, content_type: str | None, body: bytes, expected: int,
                          title: str) -> None:
    """An answer waitress gives before the relay sees the request (its framing limits): plain text."""
    assert (status, content_type) == (expected, WAITRESS_PLAIN) and body.startswith(title.encode() + b"\r\n"), \
        f"{what}: expected waitress's {expected} {title}, got {status} {content_type} {body[:300]!r}"


def post(harness: Harness, path: str, content: bytes, headers: dict[str, Any]) -> tuple[int, str | None, bytes]:
    response = harness.http.post(path, content=content, headers=headers)
    return response.status_code, response.headers.get("content-type"), response.content


def request_head(method: str, path: str, headers: dict[str, Any]) -> bytes:
    """The request line and headers of an HTTP/1.1 request, written by hand (no client to tidy them)."""
    lines = [f"{method} {path} HTTP/1.1".encode(), b"Host: relay"]
    for name, value in headers.items():
        lines.append(name.encode() + b": " + (value if isinstance(value, bytes) else value.encode("latin-1")))
    return b"\r\n".join(lines) + b"\r\n\r\n"


def as_chunks(data: bytes, size: int, *, last: bool = True) -> bytes:
    """`data` in chunked transfer encoding."""
    pieces = [data[i:i + size] for i in range(0, len(data), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces) + (b"0\r\n\r\n" if last else b"")


class _Bytes:
    """What http.client's response parser reads from: bytes already received."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def makefile(self, mode: str) -> io.BytesIO:
        return io.BytesIO(self.data)


def parse_answer(data: bytes) -> tuple[int, str | None, bytes]:
    """The first HTTP answer in `data`: status, Content-Type and body."""
    response = http.client.HTTPResponse(_Bytes(data))  # type: ignore[arg-type]
    response.begin()
    return response.status, response.getheader("Content-Type"), response.read()


def read_all(sock: socket.socket, timeout: float = 15.0) -> bytes:
    """Everything the server sends until it closes the connection (a reset counts as closing)."""
    sock.settimeout(timeout)
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except ConnectionResetError:
        pass
    except socket.timeout:
        raise AssertionError(f"the relay neither answered nor closed within {timeout:g} s: {received[:300]!r}")
    return received


def exchange(harness: Harness, data: bytes) -> tuple[int, str | None, bytes]:
    """Send `data` on a new connection (the server may answer and close before all of it is sent) and
    read the first answer."""
    with socket.create_connection((harness.host, harness.port), timeout=15) as sock:
        with contextlib.suppress(OSError):
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        received = read_all(sock)
    assert received, "the relay closed the connection without an answer"
    return parse_answer(received)


def metric_samples(relay, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Every sample of a metric, by its labels."""
    found = {}
    for family in relay.metrics.registry.collect():
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def metric_by(relay, name: str, label: str) -> dict[str, int]:
    totals: dict[str, int] = collections.Counter()
    for labels, value in metric_samples(relay, name).items():
        totals[dict(labels)[label]] += int(value)
    return dict(totals)


def relay_status(relay) -> dict[str, Any]:
    """`driptag relay status --json` on the running relay's spool."""
    done = subprocess.run([sys.executable, "-m", "driptag", "relay", "status", "--spool", str(relay.spool.path),
                           "--json"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"relay status failed: {done.stderr}"
    return json.loads(done.stdout)


def assert_healthy(harness: Harness, category: str) -> None:
    """/health answers 200 and a normal track is acknowledged and reaches the emulator."""
    response = harness.http.get("/health")
    assert response.status_code == 200 and response.json()["ok"] is True, \
        f"after the {category} fuzz /health answered {response.status_code} {response.text}"
    email = f"healthy-{next(_ids)}@example.com"
    message = Fresh("healthy")
    writer = Writer(ascii_only=True)
    data = writer.bytes({"type": "track", "event": "Still Alive", "messageId": message,
                         "properties": {"email": email}})
    status, content_type, body = post(harness, "/v1/track", data, {**VALID_AUTH, "Content-Type": "application/json"})
    assert (status, body) == (200, SUCCESS), f"after the {category} fuzz a normal track got {status} {body!r}"
    harness.ledger.answered("normal track", status, 1, writer.ids)
    wait_for(lambda: any(r["email"] == email for r in harness.drip.records("events")),
             f"the normal track after the {category} fuzz reached the emulator", timeout=30)


@dataclasses.dataclass
class Accounting:
    acknowledged: int
    accepted: int
    delivered: dict[str, int]
    dead: dict[str, int]
    skipped: dict[str, int]
    duplicates: int
    lost: int


def account(harness: Harness) -> Accounting:
    """Once the spool is empty, every acknowledged message is delivered, a dead letter, skipped or a
    duplicate, by the relay's own counts and by what the emulator received."""
    relay, drip, ledger = harness.relay, harness.drip, harness.ledger
    wait_for(lambda: relay.spool.pending == 0, "the spool emptied", timeout=60)
    received = {kind: drip.state.received()[name] for kind, name in (
        ("subscriber", "subscribers"), ("event", "events"), ("campaign", "campaign_subscriptions"))}
    got = {kind: len(records) for kind, records in received.items()}
    # A sender counts a delivery just after the commit that emptied the spool: give it a moment.
    wait_for(lambda: {k: metric_by(relay, "driptag_relay_delivered_records_total", "kind").get(k, 0)
                      for k in got} == got, "the relay's delivered counts match what the emulator received",
             timeout=10)

    accepted = sum(metric_by(relay, "driptag_relay_accepted_messages_total", "type").values())
    skipped = metric_by(relay, "driptag_relay_skipped_messages_total", "reason")
    duplicates = sum(metric_by(relay, "driptag_relay_duplicate_messages_total", "source").values())
    rejected = metric_by(relay, "driptag_relay_rejected_total", "reason")
    letters = dead_letters(relay.spool.path)
    dead = dict(collections.Counter(letter["kind"] for letter in letters))

    assert accepted == ledger.acknowledged, \
        f"the clients heard 200 for {ledger.acknowledged} messages the relay keeps; it counts {accepted} accepted"
    assert rejected.get("message too large", 0) == ledger.too_large + ledger.too_large_calls, \
        f"{ledger.too_large} messages over 32 KB were sent in acknowledged batches and {ledger.too_large_calls} " \
        f"as single calls; the relay counts {rejected.get('message too large', 0)}"
    assert drip.state.received()["skipped"] == [], "the emulator skipped records of a batch"
    # Each identify or track kept gives one subscriber or event record: delivered, or a dead letter.
    primary = got["subscriber"] + got["event"] + dead.get("subscriber", 0) + dead.get("event", 0)
    lost = accepted - primary - sum(skipped.values()) - duplicates
    assert lost == 0, (f"{accepted} accepted != {got['subscriber']} + {got['event']} delivered + "
                       f"{dead.get('subscriber', 0)} + {dead.get('event', 0)} dead + {skipped} skipped + "
                       f"{duplicates} duplicates")
    # A campaign subscription follows the upsert of the same person.
    upserted = {r["record"]["email"].lower() for r in received["subscriber"]} | \
        {letter["email"] for letter in letters if letter["kind"] == "subscriber"}
    campaigns = [r["record"]["email"].lower() for r in received["campaign"]] + \
        [letter["email"] for letter in letters if letter["kind"] == "campaign"]
    assert set(campaigns) <= upserted, f"campaign subscriptions without an upsert: {set(campaigns) - upserted}"
    assert len(campaigns) <= got["subscriber"] + dead.get("subscriber", 0)
    for letter in letters:
        assert isinstance(letter["status"], int) and 400 <= letter["status"] < 500 and letter["error"], \
            f"a dead letter without Drip's error: {letter}"
        assert letter["messageId"] is None or letter["messageId"] in ledger.ids, \
            f"a dead letter of a message no client had acknowledged: {letter['messageId']!r}"

    status = relay_status(relay)
    (counted,) = status["sources"]
    assert (status["pending"], status["deadLetters"], counted["skipped"], counted["delivered"]["lastDay"]) == \
        (0, len(letters), dict(sorted(skipped.items())), sum(got.values())), \
        f"relay status disagrees with the metrics: {json.dumps(status)}"
    return Accounting(ledger.acknowledged, accepted, got, dead, skipped, duplicates, lost)


def report(category: str, ledger: Ledger, accounting: Accounting) -> None:
    """The figures of a run (pytest -s shows them; docs/relay-reliability.md quotes them)."""
    print(f"\n[{category}] requests {ledger.requests}; answers {dict(sorted(ledger.statuses.items(), key=str))}; "
          f"categories {dict(ledger.categories)}; acknowledged {accounting.acknowledged} = delivered "
          f"{accounting.delivered} + dead {accounting.dead} + skipped {accounting.skipped} + duplicates "
          f"{accounting.duplicates}; lost {accounting.lost}")


@pytest.fixture
def no_relay_errors(caplog):
    """No request may make the relay log an error (an unexpected fault, a message it could not map)."""
    with caplog.at_level(logging.ERROR, logger="driptag.relay"):
        yield
    errors = [record.getMessage() for record in caplog.get_records("call")
              if record.name.startswith("driptag.relay") and record.levelno >= logging.ERROR]
    assert errors == [], f"the relay logged errors: {errors[:5]}"


# --- fuzzed values ------------------------------------------------------------------------------------------

# Characters that trip up text handling: NUL and controls, bidirectional overrides, right-to-left scripts,
# a combining mark, emoji (one a ZWJ sequence), a BOM, JavaScript's line separators, the last code point.
ODD_CHARACTERS = "\x00\x1f\x7f\u202e\u200f\u2066\u05e9\u0645\u0301\U0001F600\u200d\ufeff\u2028\u2029" \
                     "\U0010FFFF\\\"\r\n\t\u00a0<"
ODD_STRINGS = ["\U0001F469\u200d\U0001F469\u200d\U0001F467", "</script>", "\r\n", "\u202e\u05e9\u05dc\u05d5\u05dd",
                   "\x00" * 3]
LONE_SURROGATES = ["\ud800", "x\udbff", "\udc00y", "\udfff", "\ud83d"]
SAFE_TEXT = st.text(st.characters(codec="utf-8") | st.sampled_from(ODD_CHARACTERS), max_size=16) | \
    st.sampled_from(ODD_STRINGS)
HOSTILE_TEXT = SAFE_TEXT | st.sampled_from(LONE_SURROGATES)
SAMPLES = ["ann@example.com", "Order Completed", "$12.50", "12,50", " 3.5e2xyz", "2026-01-02T03:04:05+01:00", "",
           "null", "true", "__proto__", "constructor", 1e308, -0.0, 5e-324, 2**53 + 1, 10**21, 2**63, -(2**64)]
# Number literals the relay takes: at the edge of a double, negative zero, underflow, long integers.
SAFE_RAW = [Raw("1e308"), Raw("-1.7976931348623157E+308"), Raw("-0"), Raw("0e0"), Raw("1E+2"), Raw("1e-400"),
            Raw("9" * 300), Raw("-" + "1" * 199), Raw("123456789012345678901234567890"), Raw("0.000001e-99"),
            Raw('"\\ud83d\\ude00"'), Raw('"\\u0000"'), nested(31), nested(33), nested(120)]
# What the relay refuses (the whole request): numbers beyond a double, NaN, lone surrogate escapes, nesting
# deeper than the parser goes; and nesting near the parser's limit, which may go either way.
HOSTILE_RAW = [Raw("1e400"), Raw("-1E+400"), Raw("1" + "0" * 309), Raw("0.5e0400"), Raw("9" * 250 + "e60"),
               Raw("NaN"), Raw("Infinity"), Raw("-Infinity"), Raw('"\\ud800"'), Raw('"x\\uDFFFy"'),
               Raw('"\\ud83d"'), nested(900), nested(5000), nested(20000)]
KEYS = ["email", "revenue", "total", "value", "Drip", "All", "campaignId", "traits", "tags", "address", "name",
        "occurred_at", "prospect", "__proto__", "constructor", "prototype", "", " ", "first name", "\u202ekey",
        "0", "1", "4294967295"]


def json_values(text: st.SearchStrategy[str], raw: list[Raw], max_leaves: int = 6) -> st.SearchStrategy[Any]:
    leaves = st.one_of(st.none(), st.booleans(), st.integers(),
                       st.floats(allow_nan=False, allow_infinity=False), text, st.sampled_from(SAMPLES),
                       st.sampled_from(raw))
    return st.recursive(leaves, lambda inner: st.lists(inner, max_size=4) | objects(inner, text),
                        max_leaves=max_leaves)


def objects(values: st.SearchStrategy[Any], text: st.SearchStrategy[str], keys: Sequence[str] = KEYS,
            max_size: int = 4) -> st.SearchStrategy[Obj]:
    """Objects whose keys may repeat."""
    return st.lists(st.tuples(st.sampled_from(keys) | text, values), max_size=max_size).map(
        lambda pairs: Obj(tuple(pairs)))


SAFE_VALUES = json_values(SAFE_TEXT, SAFE_RAW)
HOSTILE_VALUES = json_values(HOSTILE_TEXT, SAFE_RAW + HOSTILE_RAW)

VALID_EMAILS = ["ann@example.com", "BO@Example.COM", "carla+tag@example.co.uk",
                "\u043d\u043e\u0441@\u043f\u0440.\u0440\u0444", "d'arcy@example.ie", "\u202eeve@example.com",
                "nul\x00l@example.com"]
# Addresses Drip refuses: the relay takes the call, Drip answers 422, the record goes to the dead letters.
BAD_EMAILS = ["x", "a@b", "@example.com", "f@example.com ", "g@@example.com"]
EMAILS = st.sampled_from(VALID_EMAILS) | st.sampled_from(VALID_EMAILS + BAD_EMAILS + ["", " "])
IDENTITIES = ["u1", "u2", "u3", "ann@example.com", "BO@example.com", "", 42, 1.5, 1e300, "\u05e9\u05dc\u05d5\u05dd"]
EVENTS = ["Viewed", "Order Completed", "completed order", " Order Completed ", "", "\U0001F600 Bought",
          "\u202eevil", "a" * 300, "Signed\x00Up"]
TIMESTAMPS = ["2026-01-02T03:04:05Z", "2026-01-02T03:04:05.123456+05:30", "2026-01-02", "2026-13-45T99:99:99Z",
              "0000-01-01T00:00:00Z", "0001-01-01T00:00:00+23:59", "9999-12-31T23:59:59-23:59",
              "2026-01-02T03:04:05+24:00", "2026-01-02 03:04", "yesterday", "", "+002026-01-02T00:00:00Z"]
TRAIT_KEYS = ["firstName", "lastName", "name", "phone", "newEmail", "new_email", "tags", "removeTags", "prospect",
              "baseLeadScore", "euConsent", "euConsentMessage", "lifetimeValue", "timeZone", "smsNumber", "id",
              "userId", "address", "first_name", "plan", "some trait", "\u05e9\u05dd"]
PROPERTY_KEYS = ["revenue", "total", "value", "occurred_at", "prospect", "price", "currency", "sku", "items",
                 "some property", "\u202eprop"]
INTEGRATIONS = [{"All": False}, {"Drip": False}, {"All": False, "Drip": True}, {"Drip": {"campaignId": CAMPAIGN}},
                {"Drip": {"campaignId": "999"}}, {"Drip": {"campaignId": False}}, {"Drip": {"campaignId": 0}},
                {"Drip": {"doubleOptin": True}}, {"Drip": {"doubleOptin": "yes", "campaignId": 1234567}},
                {"All": True, "Drip": None}, {"Drip": []}]
TYPES = ["track", "identify", "page", "screen", "group", "alias", "Identify", "", "batch"]
FIELDS = ["type", "userId", "anonymousId", "event", "traits", "properties", "context", "integrations", "timestamp",
          "originalTimestamp", "messageId"]
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False),
                    SAFE_TEXT, st.sampled_from(SAMPLES))
ABSENT = Raw("")  # a field left out


@st.composite
def with_email(draw, keys: list[str], text: st.SearchStrategy[str]) -> Obj:
    """Traits or properties: often an e-mail (not always one Drip takes), then pairs with keys the mapping
    knows or any keys, and plain values."""
    pairs = [("email", draw(EMAILS))] if draw(st.integers(0, 5)) else []
    pairs += draw(st.lists(st.tuples(st.sampled_from(keys) | text if keys else text, SCALARS), max_size=3))
    return Obj(tuple(pairs))


@st.composite
def messages(draw, values: st.SearchStrategy[Any], text: st.SearchStrategy[str]) -> Obj:
    """One Segment message: a plausible call of any type, with up to three of its fields (any of them)
    replaced by any JSON at all or left out, and now and then a key given twice (the last one counts)."""
    def chance(one_in: int) -> bool:
        return draw(st.integers(1, one_in)) == 1

    kind = draw(st.sampled_from(["track", "identify"])) if draw(st.integers(0, 2)) else draw(st.sampled_from(TYPES))
    fields: dict[str, Any] = {"type": kind}
    if chance(2):
        fields["userId"] = draw(st.sampled_from(IDENTITIES))
    if chance(3):
        fields["anonymousId"] = draw(st.sampled_from(IDENTITIES))
    if kind == "track" or chance(6):
        fields["event"] = draw(st.sampled_from(EVENTS) | text)
    if kind != "track" or chance(6):
        fields["traits"] = draw(with_email(TRAIT_KEYS, text))
    if kind == "track" or chance(6):
        fields["properties"] = draw(with_email(PROPERTY_KEYS, text))
    if chance(3):
        fields["context"] = Obj((("traits", draw(with_email([], text))), ("ip", "10.0.0.1"),
                                 ("timezone", "Europe/Berlin")))
    if chance(4):
        fields["integrations"] = draw(st.sampled_from(INTEGRATIONS))
    if chance(2):
        fields["timestamp"] = draw(st.sampled_from(TIMESTAMPS))
    fields["messageId"] = Fresh(draw(text))
    for name in draw(st.lists(st.sampled_from(FIELDS), max_size=3)):
        fields[name] = draw(values) if draw(st.integers(0, 4)) else ABSENT
    pairs = [(name, value) for name, value in fields.items() if value is not ABSENT]
    if chance(10):
        pairs.insert(0, ("type", draw(st.sampled_from(TYPES))))
    if chance(8):
        pairs.append((draw(text), draw(values)))
    return Obj(tuple(pairs))


@dataclasses.dataclass(frozen=True)
class Call:
    """A fuzzed request: where it goes, its body and headers, how it is written, and whether the client
    sends it a second time (as a client retries after a timeout)."""

    path: str
    body: Any
    headers: dict[str, Any]
    ascii_only: bool
    resend: bool


# writeKey in the body, and whether the relay finds the source by it (a repeated key: the last one counts).
WRITE_KEYS: list[tuple[tuple[tuple[str, Any], ...], bool]] = [
    ((), False), ((("writeKey", WRITE_KEY),), True), ((("writeKey", "nope"),), False), ((("writeKey", 7),), False),
    ((("writeKey", None),), False), ((("writeKey", ""),), False),
    ((("writeKey", "nope"), ("writeKey", WRITE_KEY)), True),
    ((("writeKey", WRITE_KEY), ("writeKey", "")), False)]


@st.composite
def calls(draw) -> Call:
    hostile = draw(st.integers(0, 3)) == 0
    values, text = (HOSTILE_VALUES, HOSTILE_TEXT) if hostile else (SAFE_VALUES, SAFE_TEXT)
    path = draw(st.sampled_from(BATCH_PATHS + CALL_PATHS))
    shape = draw(st.integers(0, 24))
    if path in CALL_PATHS:
        pairs = list(draw(messages(values, text)).pairs)
    else:
        items = draw(st.lists(messages(values, text) | values if hostile else messages(values, text), max_size=6))
        pairs = [("batch", items)]
        if draw(st.booleans()):
            pairs.insert(0, ("context", draw(st.sampled_from([{"traits": {"email": "shared@example.com"}},
                                                               {"ip": "10.1.1.1"}]) | values)))
        if draw(st.integers(0, 3)) == 0:
            pairs.append(("integrations", draw(st.sampled_from(INTEGRATIONS) | values)))
        if shape == 1:  # "batch" twice: the last one counts
            pairs.insert(0, ("batch", draw(st.lists(messages(values, text), min_size=1, max_size=2))))
        if shape == 2:
            pairs = [("batch", draw(values))]  # usually not a list
    headers: dict[str, Any] = {}
    if draw(st.integers(0, 3)):
        headers.update(VALID_AUTH)
    pairs += draw(st.sampled_from(WRITE_KEYS))[0]
    content_type = draw(st.sampled_from([None, "application/json", "text/plain", "text/plain;charset=UTF-8"]))
    if content_type:
        headers["Content-Type"] = content_type
    body = draw(values) if shape == 0 else Obj(tuple(pairs))  # sometimes not an object at all
    return Call(path, body, headers, draw(st.booleans()), draw(st.integers(0, 7)) == 0)


def messages_in(path: str, data: bytes) -> int:
    """How many messages a 200 to this request means the relay took: a single call is one; a batch, the
    items of its (last) "batch" list."""
    if path in CALL_PATHS:
        return 1
    try:
        body = json.loads(data)
    except (ValueError, RecursionError):
        return 0  # not JSON the relay takes either
    return len(body["batch"]) if isinstance(body, dict) and isinstance(body.get("batch"), list) else 0


# The start of each error the relay documents for a body it cannot take.
BODY_ERRORS = ("the body is not UTF-8", "the body is empty", "the body is nested too deeply", "the body is not valid "
               "JSON", "the body has a lone surrogate escape", "the number ", "NaN is not", "Infinity is not",
               "-Infinity is not", "the body must be a JSON object", '"batch" must be a list', "the message is over",
               "a message must be a JSON object", "the message has no type", "unknown message type",
               "track: event must be")


def test_fuzzed_calls_get_documented_answers_and_every_acknowledged_message_is_accounted_for(
        tmp_path, no_relay_errors):
    with fuzzed_relay(tmp_path) as harness:
        ledger = harness.ledger

        @fuzz_settings(750)
        @given(call=calls())
        def send(call: Call) -> None:
            writer = Writer(call.ascii_only)
            data = writer.bytes(call.body)
            first = None
            for _ in range(2 if call.resend else 1):
                status, content_type, body = post(harness, call.path, data, call.headers)
                what = f"POST {call.path} {data[:300]!r}"
                assert status in (200, 400, 401), f"{what}: answered {status} {body[:300]!r}"
                check_relay_answer(what, status, content_type, body)
                if status == 400:
                    assert error_of(body).startswith(BODY_ERRORS), f"{what}: an undocumented refusal {body!r}"
                if status == 401:  # only when the key must come from the body
                    assert "Authorization" not in call.headers and error_of(body).startswith(
                        ("no write key", "unknown write key")), f"{what}: 401 {body!r}"
                ledger.answered("calls" if first is None else "calls sent again", status,
                                messages_in(call.path, data), writer.ids)
                if first is not None:  # a client's retry: acknowledged again (a duplicate) or refused again
                    assert (status, body) == first, f"{what}: first {first}, then {(status, body)}"
                first = (status, body)

        send()
        assert_healthy(harness, "calls")
        accounting = account(harness)
        report("calls", ledger, accounting)
        assert ledger.requests >= 800, f"only {ledger.requests} requests were fuzzed"
        assert {200, 400, 401} <= set(ledger.statuses), f"answers seen: {ledger.statuses}"
        assert ledger.statuses[200] >= ledger.requests // 3, f"too few calls were acknowledged: {ledger.statuses}"
        # The fuzz reached every outcome: delivered records of each kind, dead letters, each reason to skip.
        assert all(accounting.delivered.values()) and accounting.dead and accounting.duplicates, accounting
        assert {"no email", "integrations", "not forwarded", "invalid"} <= set(accounting.skipped), accounting


def test_a_single_call_refused_as_invalid_leaves_no_count_in_the_spool(tmp_path):
    """The fuzz found `relay status` counting refused single calls as skipped: they are counted nowhere."""
    with fuzzed_relay(tmp_path) as harness:
        for body in ({"type": "track", "properties": {"email": "ann@example.com"}}, {"type": "jump"}, {"event": 7}):
            status, _, answer = post(harness, "/v1/t", json.dumps(body).encode(), VALID_AUTH)
            assert status == 400, answer
        status, _, answer = post(harness, "/v1/b", b'{"batch": [{"type": "jump"}]}', VALID_AUTH)
        assert status == 200, answer
        assert spool_status(harness.relay.spool.path)["sources"][0]["skipped"] == {"invalid": 1}
        assert metric_by(harness.relay, "driptag_relay_skipped_messages_total", "reason") == {"invalid": 1}
        assert metric_by(harness.relay, "driptag_relay_rejected_total", "reason") == {"invalid message": 3}


# --- size limits ------------------------------------------------------------------------------------------------

FILLERS = ["x", "\u00e9", "\u20ac", "\U0001F600", "\x00", '"', "\u2028"]


def filled(template: dict[str, Any], key: str, size: int, character: str) -> dict[str, Any]:
    """`template` with `key` in its properties filled so that the message's compact size is `size`."""
    message = json.loads(json.dumps(template))
    message["properties"][key] = ""
    missing = size - compact_size(message)
    unit = compact_size(character) - 2
    message["properties"][key] = character * (missing // unit) + "x" * (missing % unit)
    assert compact_size(message) == size
    return message


def track(email: str, **properties: Any) -> dict[str, Any]:
    return {"type": "track", "event": "Viewed", "messageId": f"big~{next(_ids)}",
            "properties": {"email": email, **properties}}


@dataclasses.dataclass(frozen=True)
class Big:
    """A request at a size limit: `delta` bytes from it, filled with `character` (1 to 6 bytes in compact
    JSON), `extra` a few bytes more where the exact size does not matter."""

    case: str
    delta: int
    character: str
    extra: int


@st.composite
def bigs(draw) -> Big:
    case = draw(st.sampled_from(["message in a batch", "message with a shared context", "single call",
                                 "request", "gzipped request", "chunked request", "compressed over the limit",
                                 "over waitress's limit", "chunked over waitress's limit"]))
    delta = draw(st.sampled_from([-3, -1, 0, 1, 2, 7]) if case in ("message in a batch", "single call")
                 else st.sampled_from([-200, 200]) if case == "message with a shared context"
                 else st.sampled_from([-1, 0, 1, 4000, 90_000]))
    return Big(case, delta, draw(st.sampled_from(FILLERS)), draw(st.integers(2, 5)))


def test_messages_and_requests_at_and_over_the_size_limits(tmp_path, no_relay_errors):
    with fuzzed_relay(tmp_path) as harness:
        ledger = harness.ledger

        @fuzz_settings(60)
        @given(big=bigs())
        def send(big: Big) -> None:
            headers = {**VALID_AUTH, "Content-Type": "application/json"}
            email = f"big{next(_ids)}@example.com"
            if big.case in ("message in a batch", "message with a shared context", "single call"):
                shared = {"context": {"page": {"title": "t" * 5000}}} if "shared" in big.case else {}
                size = MESSAGE_LIMIT + big.delta - (compact_size(shared) if shared else 0)
                message = filled(track(email), "filler", size, big.character)
                body = message if big.case == "single call" else \
                    {**shared, "batch": [track(email), message, track(email)]}
                # Escaped or not, the request's text may be longer than the message's compact size.
                data = json.dumps(body, ensure_ascii=big.character in ("\x00", "\U0001F600")).encode()
                path = "/v1/track" if big.case == "single call" else "/v1/batch"
                status, content_type, answer = post(harness, path, data, headers)
                check_relay_answer(big.case, status, content_type, answer)
                over = big.delta > 0
                if big.case == "single call":
                    assert (status, error_of(answer) if over else None) == \
                        ((400, "the message is over 32 KB") if over else (200, None)), (big, answer)
                    ledger.answered(big.case, status, 1, [message["messageId"]])
                    ledger.too_large_calls += int(over)
                else:
                    assert status == 200, (big, answer)
                    ledger.answered(big.case, status, 3, [m["messageId"] for m in body["batch"]], int(over))
                return
            # A batch of messages under 32 KB, padded with white space to REQUEST_LIMIT + delta bytes.
            total = REQUEST_LIMIT + big.delta
            count = total // (30 * KB)
            messages = [filled(track(email), "filler", 30 * KB - 100, big.character) for _ in range(count)]
            text = json.dumps({"batch": messages}, ensure_ascii=False).encode()
            data = text + b" " * (total - len(text))
            assert len(data) == total
            over = total > REQUEST_LIMIT
            if big.case == "gzipped request":
                status, content_type, answer = post(harness, "/v1/batch", gzip.compress(data),
                                                    {**headers, "Content-Encoding": "gzip"})
                expected = "the request body is over 500 KB once decompressed"
            elif big.case == "compressed over the limit":
                # Stored without compression: the gzip itself is over the limit before it is decompressed.
                stored = gzip.compress(b'"' + b"x" * (REQUEST_LIMIT + GZIP_SLACK + big.extra) + b'"', 0)
                status, content_type, answer = post(harness, "/v1/batch", stored,
                                                    {**headers, "Content-Encoding": "gzip"})
                check_relay_answer(big.case, status, content_type, answer)
                assert (status, error_of(answer)) == (400, "the request body is over 500 KB (compressed)"), big
                ledger.answered(big.case, status)
                return
            elif big.case in ("over waitress's limit", "chunked over waitress's limit"):
                data += b" " * (WAITRESS_LIMIT + 1 - len(data) + big.extra)
                chunked = "chunked" in big.case
                head = request_head("POST", "/v1/batch", {**headers, "Transfer-Encoding": "chunked"} if chunked
                                    else {**headers, "Content-Length": str(len(data))})
                status, content_type, answer = exchange(harness, head + (as_chunks(data, 65536) if chunked else data))
                check_waitress_answer(big.case, status, content_type, answer, 413, "Request Entity Too Large")
                ledger.answered(big.case, status)
                return
            elif big.case == "chunked request":
                chunks = iter([data[i:i + 50_000] for i in range(0, len(data), 50_000)])
                response = harness.http.post("/v1/batch", content=chunks, headers=headers)
                status, content_type, answer = response.status_code, response.headers.get("content-type"), \
                    response.content
                expected = "the request body is over 500 KB"
            else:
                status, content_type, answer = post(harness, "/v1/batch", data, headers)
                expected = "the request body is over 500 KB"
            check_relay_answer(big.case, status, content_type, answer)
            assert (status, error_of(answer) if over else None) == ((400, expected) if over else (200, None)), \
                (big, answer[:200])
            ledger.answered(big.case, status, count, [m["messageId"] for m in messages])

        send()
        assert_healthy(harness, "size limit")
        accounting = account(harness)
        report("size limits", ledger, accounting)
        assert ledger.too_large and ledger.statuses[413] and ledger.statuses[400] and ledger.statuses[200], ledger


# --- Content-Type, Content-Encoding, gzip and Basic auth ------------------------------------------------------------

KEY = WRITE_KEY.encode()
# The Authorization header, and what the relay makes of it: the source's key, an unknown key, credentials
# that are not base64 of UTF-8, or no Basic user at all (the key must then be in the body).
AUTH_HEADERS: list[tuple[bytes | None, str]] = [
    (basic(KEY + b":"), "key"), (basic(KEY + b":secret:with:colons"), "key"), (basic(KEY), "key"),
    (b"basic " + base64.b64encode(KEY + b":"), "key"), (b"BASIC   " + base64.b64encode(KEY + b":"), "key"),
    (basic(b"nope:"), "unknown"), (basic(KEY.upper() + b":"), "unknown"), (basic(KEY + b" :"), "unknown"),
    (basic("\u043a\u043b\u044e\u0447:".encode()), "unknown"), (basic(b"\xe2\x80\xae" + KEY + b":"), "unknown"),
    (basic(b":" + KEY), "body"), (b"Basic", "body"),
    (b"Basic !!!", "invalid"), (b"Basic " + base64.b64encode(KEY + b":")[:-1], "invalid"),
    (b"Basic " + "\u043a\u043b\u044e\u0447".encode(), "invalid"), (b"Basic \xe9\xe9", "invalid"),
    (basic(b"\xff\xfe:"), "invalid"), (b"Bearer " + KEY, "body"), (b'Digest username="x", realm="y"', "body"),
    (b"", "body"), (None, "body")]
# Content-Type, and the start of the error when the relay refuses it.
CONTENT_TYPES: list[tuple[bytes | None, str | None]] = [
    (None, None), (b"application/json", None), (b"text/plain", None), (b"application/json; charset=utf-8", None),
    (b"text/plain;charset=UTF-8", None), (b"APPLICATION/JSON", None), (b'text/plain; charset="utf-8"', None),
    (b"application/json; charset=utf8", None), (b"application/json; boundary=x", None), (b"", None),
    (b"application/x-www-form-urlencoded", "Content-Type "), (b"multipart/form-data; boundary=--x", "Content-Type "),
    (b"text/html", "Content-Type "), (b"application/jsonp", "Content-Type "), (b"*/*", "Content-Type "),
    (b"application/json\xe9", "Content-Type "), (b"application/csp-report", "Content-Type "),
    (b"application", "Content-Type "), (b"application/json; charset=iso-8859-1", "charset "),
    (b"text/plain; charset=utf-16", "charset "), (b"text/plain; charset=", "charset ")]
# Content-Encoding, and how the body is then written: plain, gzip (in one of GZIP_FORMS), or refused.
ENCODINGS: list[tuple[bytes | None, str]] = [
    (None, "plain"), (b"identity", "plain"), (b"", "plain"), (b"gzip", "gzip"), (b"x-gzip", "gzip"),
    (b"GZip", "gzip"), (b"deflate", "refused"), (b"br", "refused"), (b"gzip, gzip", "refused"),
    (b"compress", "refused"), (b"zstd", "refused"), (b"gzip;q=1", "refused"), (b"\xff", "refused")]
MAYBE = "either"  # a corrupted byte may land where gzip does not look (the header's time stamp)
# How a gzipped body is written, and the start of the error it earns (None: it is read).
GZIP_FORMS: list[tuple[str, str | None]] = [
    ("one member", None), ("several members", None), ("stored, not compressed", None),
    ("empty members first", None), ("cut short", "the body is not valid gzip"), ("a corrupted byte", MAYBE),
    ("trailing garbage", "the body is not valid gzip"), ("bomb", "the request body is over 500 KB once decompressed"),
    ("bomb in members", "the request body is over 500 KB once decompressed"),
    ("gzip inside gzip", "the body is not UTF-8"), ("only empty members", "the body is empty"),
    ("not gzip", "the body is not valid gzip"), ("nothing", "the body is not valid gzip (it is cut short)")]


@functools.cache
def bomb() -> bytes:
    """64 MB of JSON white space in 64 KB of gzip."""
    squeezer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    spaces = b" " * (1 << 20)
    return squeezer.compress(b'{"batch": [') + b"".join(squeezer.compress(spaces) for _ in range(64)) + \
        squeezer.compress(b"]}") + squeezer.flush()


def gzipped(form: str, data: bytes, noise: int) -> bytes:
    """`data` gzipped in one of GZIP_FORMS; `noise` picks where a cut or a corrupted byte goes."""
    whole = gzip.compress(data)
    if form == "one member":
        return whole
    if form == "several members":
        step = max(1, len(data) // (2 + noise % 4))
        return b"".join(gzip.compress(data[i:i + step]) for i in range(0, len(data), step))
    if form == "stored, not compressed":
        return gzip.compress(data, 0)
    if form == "empty members first":
        return gzip.compress(b"") * (1 + noise % 50) + whole
    if form == "cut short":
        return whole[:noise % len(whole)]
    if form == "a corrupted byte":
        index = noise % len(whole)
        return whole[:index] + bytes([whole[index] ^ (1 + noise // 7 % 255)]) + whole[index + 1:]
    if form == "trailing garbage":
        return whole + [b"garbage", b"\x00\x00\x00\x00", b"\x1f\x8b", b"\x1f\x8b\x08"][noise % 4]
    if form == "bomb":
        return bomb()
    if form == "bomb in members":
        return gzip.compress(b'{"batch": [') + gzip.compress(b" " * (REQUEST_LIMIT + 1)) * 2
    if form == "gzip inside gzip":
        return gzip.compress(whole)
    if form == "only empty members":
        return gzip.compress(b"") * (1 + noise % 2000)
    if form == "not gzip":
        return data
    return b""


EMAIL_CHOICES = ["ann@example.com", "bo@example.com", "carla@example.com", "dan@example.com"]


@st.composite
def plain_messages(draw) -> dict[str, Any]:
    """A call the relay takes and Drip accepts: the fuzz of these requests is in their headers and encoding."""
    email = draw(st.sampled_from(EMAIL_CHOICES))
    if draw(st.booleans()):
        return {"type": "track", "event": draw(st.sampled_from(EVENTS[:2])), "messageId": Fresh("plain"),
                "properties": {"email": email, "n": draw(st.integers(0, 10))}}
    return {"type": "identify", "userId": draw(st.sampled_from(["u1", "u2"])), "messageId": Fresh("plain"),
            "traits": {"email": email, "plan": draw(st.sampled_from(["free", "pro"]))}}


@dataclasses.dataclass(frozen=True)
class Transport:
    """A request whose body the relay would take, sent with one of each table's headers and encodings."""

    path: str
    messages: tuple[dict[str, Any], ...]
    auth: tuple[bytes | None, str]
    body_key: tuple[tuple[tuple[str, Any], ...], bool]
    content_type: tuple[bytes | None, str | None]
    encoding: tuple[bytes | None, str]
    gzip_form: tuple[str, str | None]
    noise: int
    ascii_only: bool
    bom: bool


transports = st.builds(
    Transport, path=st.sampled_from(["/v1/batch", "/v1/b", "/v1/import", "/v1/track", "/v1/t", "/v1/identify"]),
    messages=st.lists(plain_messages(), min_size=1, max_size=3).map(tuple),
    # Half of the time each header is one the relay takes, so the fuzz reaches what comes after it.
    auth=st.sampled_from(AUTH_HEADERS[:1]) | st.sampled_from(AUTH_HEADERS),
    body_key=st.sampled_from(WRITE_KEYS),
    content_type=st.sampled_from(CONTENT_TYPES[:3]) | st.sampled_from(CONTENT_TYPES),
    encoding=st.sampled_from(ENCODINGS[3:4]) | st.sampled_from(ENCODINGS), gzip_form=st.sampled_from(GZIP_FORMS),
    noise=st.integers(0, 1 << 20),
    ascii_only=st.booleans(), bom=st.integers(0, 9).map(lambda n: n == 0))


def expected_transport_answer(request: Transport) -> tuple[set[int], tuple[str, ...]]:
    """The answers the relay's rules give, in their order: the Basic user first, then the body's type and
    encoding, then the body itself, then the write key in the body. Returns the statuses allowed and
    the starts an error may have."""
    outcome = request.auth[1]
    if outcome == "unknown":
        return {401}, ("unknown write key",)
    if outcome == "invalid":
        return {401}, ("the Authorization header's Basic credentials are not valid base64",)
    if request.content_type[1] is not None:
        return {400}, (request.content_type[1],)
    if request.encoding[1] == "refused":
        return {400}, ("Content-Encoding ",)
    gzip_error = request.gzip_form[1] if request.encoding[1] == "gzip" else None
    if gzip_error not in (None, MAYBE):
        return {400}, (gzip_error,)
    statuses = {200} if outcome == "key" or request.body_key[1] else {401}
    errors: tuple[str, ...] = ("no write key", "unknown write key")
    if gzip_error == MAYBE:
        statuses.add(400)
        errors += ("the body is not valid gzip", "the body is not UTF-8", "the body is not valid JSON")
    return statuses, errors


def test_content_types_encodings_gzip_and_auth_headers_get_the_documented_answers(tmp_path, no_relay_errors):
    with fuzzed_relay(tmp_path) as harness:
        ledger = harness.ledger

        @fuzz_settings(650)
        @given(request=transports)
        def send(request: Transport) -> None:
            single = not request.path.startswith(("/v1/b", "/v1/import"))
            messages = request.messages[:1] if single else request.messages
            body = Obj(tuple(messages[0].items()) + request.body_key[0]) if single else \
                Obj((("batch", list(messages)),) + request.body_key[0])
            writer = Writer(request.ascii_only)
            data = ("\ufeff" if request.bom else "").encode() + writer.bytes(body)
            encoding, how = request.encoding
            if how == "gzip":
                data = gzipped(request.gzip_form[0], data, request.noise)
            elif encoding == b"deflate":
                data = zlib.compress(data)
            elif encoding == b"gzip, gzip":
                data = gzip.compress(gzip.compress(data))
            headers: dict[str, Any] = {}
            for name, value in (("Authorization", request.auth[0]), ("Content-Type", request.content_type[0]),
                                ("Content-Encoding", encoding)):
                if value is not None:
                    headers[name] = value
            status, content_type, answer = post(harness, request.path, data, headers)
            what = f"{request}"
            check_relay_answer(what, status, content_type, answer)
            statuses, errors = expected_transport_answer(request)
            assert status in statuses, f"{what}: expected {statuses}, got {status} {answer!r}"
            if status != 200:
                assert error_of(answer).startswith(errors), f"{what}: expected an error starting {errors}: {answer!r}"
            ledger.answered("transport", status, len(messages), writer.ids)

        send()
        assert_healthy(harness, "transport")
        accounting = account(harness)
        report("transport", ledger, accounting)
        assert ledger.requests >= 650 and {200, 400, 401} <= set(ledger.statuses), ledger


# --- paths and methods ----------------------------------------------------------------------------------------------

# Requests whose answer is known exactly: (method, target, status).
ROUTES = [
    ("POST", "/v1/track", 200), ("POST", "/v1/%74rack", 200), ("POST", "/v1/track%2f", 200),
    ("POST", "/v1/t?x=%ff&y", 200), ("POST", "http://relay/v1/t", 200), ("POST", "/v1/import/", 200),
    ("POST", "/v1//track", 308), ("POST", "/v1/track//", 308),
    ("OPTIONS", "/v1/b", 204), ("OPTIONS", "/v1/t", 204), ("GET", "/health", 200), ("HEAD", "/health", 200),
    ("OPTIONS", "/health", 200), ("GET", "/metrics", 200),
    ("GET", "/health/", 404), ("POST", "/v1/tr%ffack", 404), ("OPTIONS", "/v1/nope", 404), ("POST", "/v1/track/x", 404),
    ("POST", "/v1/../v1/track", 404), ("POST", "/v1/%2e%2e/v1/track", 404), ("POST", "/V1/TRACK", 404),
    ("POST", "/v1/" + "a" * 5000, 404), ("GET", "/metrics/", 404), ("POST", "*", 404), ("OPTIONS", "*", 404),
    ("POST", "/", 404), ("POST", "/v1", 404), ("POST", "/v2/track", 404), ("POST", "/v1/%00", 404),
    ("PROPFIND", "/", 404), ("GET", "/", 404),
    ("HEAD", "/v1/track", 405), ("GET", "/v1/nope", 405), ("TRACE", "/v1/track", 405), ("FOO", "/v1/track", 405),
    ("PUT", "/v1/t", 405), ("DELETE", "/v1/batch", 405), ("PATCH", "/v1/identify", 405), ("POST", "/health", 405),
    ("POST", "/metrics", 405), ("GET", "/v1/track", 405)]
CALL_NAMES = ["identify", "i", "track", "t", "page", "p", "screen", "s", "group", "g", "alias", "a", "batch", "b",
              "import"]
METHODS = ["POST", "POST", "POST", "GET", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE", "PROPFIND", "FOO"]
SEGMENTS = ["v1", "v1", "v2", "track", "t", "batch", "b", "import", "identify", "i", "page", "health", "metrics", "",
            "..", ".", "%2e%2e", "%2f", "%00", "%ff", "%e2%80%ae", "%F0%9F%98%80", "x" * 300, "TRACK", ";", "%20"]


@st.composite
def targets(draw) -> tuple[str, str, int | None]:
    """(method, request target, the status when it is known exactly)."""
    branch = draw(st.integers(0, 2))
    if branch == 0:
        return draw(st.sampled_from(ROUTES))
    if branch == 1:  # an endpoint's path, as it is or a little changed
        return draw(st.sampled_from(METHODS)), "/v1/" + draw(st.sampled_from(CALL_NAMES)) + draw(st.sampled_from(
            ["", "", "/", "?writeKey=x", "//", "/extra", "%2f", "%2F%2F", ";x", "%20", ".json", "/.."])), None
    parts = draw(st.lists(st.sampled_from(SEGMENTS) | st.text(min_size=1, max_size=8).map(
        lambda text: urllib.parse.quote(text.encode("utf-8", "surrogatepass"), safe="")), min_size=1, max_size=4))
    target = "/" + "/".join(parts)
    if draw(st.booleans()):
        target += "?" + urllib.parse.quote(draw(st.text(max_size=10)).encode("utf-8", "surrogatepass"), safe="=&")
    return draw(st.sampled_from(METHODS)), target, None


def test_any_path_and_method_gets_a_json_answer_and_only_real_endpoints_take_messages(tmp_path, no_relay_errors):
    with fuzzed_relay(tmp_path) as harness:
        ledger = harness.ledger
        connection = http.client.HTTPConnection(harness.host, harness.port, timeout=30)

        @fuzz_settings(400)
        @given(target=targets())
        def send(target: tuple[str, str, int | None]) -> None:
            method, path, known = target
            # One message whichever way the relay reads it: as a single call, or as a batch of one.
            writer = Writer(ascii_only=True)
            data = writer.bytes({"type": "track", "event": "Viewed", "messageId": Fresh("route"),
                                 "properties": {"email": "ann@example.com"},
                                 "batch": [{"type": "track", "event": "Viewed", "messageId": Fresh("route"),
                                            "properties": {"email": "ann@example.com"}}]})
            connection.request(method, path, body=data, headers={**VALID_AUTH, "Content-Type": "application/json"})
            response = connection.getresponse()
            body = response.read()
            status, content_type = response.status, response.getheader("Content-Type")
            what = f"{method} {path[:80]}"
            if known is not None:
                assert status == known, f"{what}: expected {known}, got {status} {body[:200]!r}"
            assert status in (200, 204, 308, 404, 405), f"{what}: answered {status} {body[:300]!r}"
            check_relay_answer(what, status, content_type, body, posted_to_v1=method == "POST", head=method == "HEAD")
            if status == 308:  # werkzeug's answer to a path with repeated slashes: the same path, tidied
                location = urllib.parse.urlsplit(response.getheader("Location") or "").path
                assert "//" in urllib.parse.unquote(path.split("?")[0]) and location and "//" not in location, \
                    f"{what}: redirected to {location!r}"
            ledger.answered("paths and methods", status, 1 if status == 200 and method == "POST" else 0, writer.ids)

        try:
            send()
        finally:
            connection.close()
        assert_healthy(harness, "paths and methods")
        accounting = account(harness)
        report("paths and methods", ledger, accounting)
        assert ledger.requests >= 400 and {200, 204, 308, 404, 405} <= set(ledger.statuses), ledger


# --- bodies cut short -------------------------------------------------------------------------------------------

CUTS = ["declared longer, then half-closed", "declared longer, then reset", "chunked, cut inside a chunk",
        "chunked, no last chunk", "headers cut", "declared as cut: JSON", "declared as cut: gzip",
        "declared shorter than sent"]


@dataclasses.dataclass(frozen=True)
class Cut:
    """A request cut short in one of CUTS' ways."""

    form: str
    messages: tuple[dict[str, Any], ...]
    where: int  # per thousand of what is cut
    extra: int


cuts = st.builds(Cut, form=st.sampled_from(CUTS),
                 messages=st.lists(plain_messages(), min_size=1, max_size=3).map(tuple),
                 where=st.integers(0, 1000), extra=st.integers(1, 5000))


def test_bodies_cut_short_are_never_acknowledged(tmp_path, no_relay_errors):
    with fuzzed_relay(tmp_path) as harness:
        ledger = harness.ledger
        auth = {**VALID_AUTH, "Content-Type": "application/json"}

        @fuzz_settings(150)
        @given(cut=cuts)
        def send(cut: Cut) -> None:
            writer = Writer(ascii_only=False)
            data = writer.bytes({"batch": list(cut.messages)})
            at = len(data) * cut.where // 1000
            what = f"{cut.form} at {at} of {len(data)}"
            sock = socket.create_connection((harness.host, harness.port), timeout=15)
            try:
                if cut.form == "declared longer, then reset":
                    declared = {**auth, "Content-Length": str(len(data) + cut.extra)}
                    sock.sendall(request_head("POST", "/v1/batch", declared) + data[:at])
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    ledger.answered(cut.form, None)
                    return
                if cut.form.startswith("declared as cut"):
                    body = gzip.compress(data) if cut.form.endswith("gzip") else data
                    body = body[:len(body) * cut.where // 1000]
                    headers = {**auth, "Content-Length": str(len(body))}
                    if cut.form.endswith("gzip"):
                        headers["Content-Encoding"] = "gzip"
                    sock.sendall(request_head("POST", "/v1/batch", headers) + body)
                    sock.shutdown(socket.SHUT_WR)
                    status, content_type, answer = parse_answer(read_all(sock))
                    check_relay_answer(what, status, content_type, answer)
                    if cut.where == 1000:
                        assert status == 200, f"{what}: {status} {answer!r}"
                    else:
                        assert status == 400 and error_of(answer).startswith(
                            ("the body is not valid gzip", "the body is not valid JSON", "the body is empty")), \
                            f"{what}: {status} {answer!r}"
                    ledger.answered(cut.form, status, len(cut.messages), writer.ids)
                    return
                if cut.form == "declared shorter than sent":
                    at = min(at, len(data) - 1)
                    sock.sendall(request_head("POST", "/v1/batch", {**auth, "Content-Length": str(at)}) + data)
                    sock.shutdown(socket.SHUT_WR)
                    # The relay answers what was declared; the rest of the bytes are no request of its.
                    status, content_type, answer = parse_answer(read_all(sock))
                    check_relay_answer(what, status, content_type, answer)
                    assert status == 400 and error_of(answer).startswith(
                        ("the body is not valid JSON", "the body is empty")), f"{what}: {status} {answer!r}"
                    ledger.answered(cut.form, status)
                    return
                if cut.form == "declared longer, then half-closed":
                    sent = request_head("POST", "/v1/batch", {**auth, "Content-Length": str(len(data) + cut.extra)}) \
                        + data[:at]
                elif cut.form == "chunked, cut inside a chunk":
                    sent = request_head("POST", "/v1/batch", {**auth, "Transfer-Encoding": "chunked"}) + \
                        b"%x\r\n" % len(data) + data[:min(at, len(data) - 1)]
                elif cut.form == "chunked, no last chunk":
                    sent = request_head("POST", "/v1/batch", {**auth, "Transfer-Encoding": "chunked"}) + \
                        as_chunks(data, 1 + cut.extra % 64, last=False)
                else:  # headers cut
                    head = request_head("POST", "/v1/batch", {**auth, "Content-Length": str(len(data))})
                    sent = head[:(len(head) - 4) * cut.where // 1000]
                sock.sendall(sent)
                sock.shutdown(socket.SHUT_WR)
                received = read_all(sock)
                assert received == b"", f"{what}: an unfinished request was answered: {received[:300]!r}"
                ledger.answered(cut.form, None)
            finally:
                sock.close()

        send()
        assert_healthy(harness, "cut bodies")
        accounting = account(harness)
        report("cut bodies", ledger, accounting)
        assert ledger.requests >= 150, ledger


# --- slow and silent clients ------------------------------------------------------------------------------------

@dataclasses.dataclass
class Trickle:
    sock: socket.socket
    request: bytes
    sent: int
    ids: list[str]


def readable(sock: socket.socket) -> bool:
    """The server sent something or closed the connection."""
    return bool(select.select([sock], [], [], 0)[0])


def test_clients_trickling_bytes_or_sending_nothing_do_not_hold_up_a_normal_client(tmp_path, no_relay_errors):
    with fuzzed_relay(tmp_path) as harness:
        ledger = harness.ledger
        address = (harness.host, harness.port)
        headers = {**VALID_AUTH, "Content-Type": "application/json"}
        # 12 clients trickle their bodies and 4 their headers, a byte at a time: twice waitress's 8 worker
        # threads. The last byte of each waits until the normal client has been answered.
        slow = []
        for n in range(16):
            writer = Writer(ascii_only=True)
            data = writer.bytes({"type": "track", "event": "Slow", "messageId": Fresh("slow"),
                                 "properties": {"email": f"slow{n}@example.com"}})
            request = request_head("POST", "/v1/track", {**headers, "Content-Length": str(len(data))}) + data
            start = len(request) - len(data) if n < 12 else 0
            sock = socket.create_connection(address, timeout=30)
            sock.sendall(request[:start])
            slow.append(Trickle(sock, request, start, writer.ids))
        silent = [socket.create_connection(address, timeout=30) for _ in range(8)]
        stop = threading.Event()

        def trickle() -> None:
            while not stop.is_set():
                for client in slow:
                    if client.sent < len(client.request) - 1:
                        client.sock.sendall(client.request[client.sent:client.sent + 1])
                        client.sent += 1
                stop.wait(0.02)

        trickler = threading.Thread(target=trickle, name="slow-clients", daemon=True)
        trickler.start()
        try:
            wait_for(lambda: all(client.sent >= 30 for client in slow), "every slow client has trickled 30 bytes")
            normal = httpx.Client(base_url=harness.relay.url, timeout=10)  # the one generous time limit
            emails = []
            for n in range(20):
                writer = Writer(ascii_only=True)
                emails.append(f"normal{n}@example.com")
                data = writer.bytes({"type": "track", "event": "Quick", "messageId": Fresh("normal"),
                                     "properties": {"email": emails[-1]}})
                response = normal.post("/v1/track", content=data, headers=headers)
                assert (response.status_code, response.content) == (200, SUCCESS), \
                    f"a normal client beside slow ones got {response.status_code} {response.content!r}"
                ledger.answered("normal client beside slow ones", 200, 1, writer.ids)
            normal.close()
            wait_for(lambda: set(emails) <= {r["email"] for r in harness.drip.records("events")},
                     "the normal client's tracks reached the emulator while the slow clients were still sending")
            assert all(client.sent < len(client.request) for client in slow), "a slow client finished too early"
            assert not any(readable(client.sock) for client in slow + [Trickle(s, b"", 0, []) for s in silent]), \
                "the relay answered or dropped a client that is still sending"
        finally:
            stop.set()
            trickler.join()
        for client in slow:  # the slow clients finish, and each is acknowledged
            client.sock.sendall(client.request[client.sent:])
            response = http.client.HTTPResponse(client.sock)
            response.begin()
            assert (response.status, response.read()) == (200, SUCCESS), f"a slow client got {response.status}"
            ledger.answered("slow client", 200, 1, client.ids)
            client.sock.close()
        assert not any(readable(sock) for sock in silent), "the relay answered or dropped a silent client"
        for sock in silent:
            sock.close()
        ledger.categories["silent client"] += len(silent)
        assert_healthy(harness, "slow clients")
        accounting = account(harness)
        report("slow clients", ledger, accounting)
        assert accounting.delivered["event"] == 16 + 20 + 1
