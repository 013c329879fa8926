"""The relay's ingest: Segment's HTTP Tracking API in front of a real spool.

Most tests use Flask's test client; the ones about the wire (chunked transfer encoding, a client that
trickles its body, a real Segment library) use waitress serving the app on 127.0.0.1.
"""

from __future__ import annotations

import base64
import gzip
import http.client
import json
import logging
import socket
import threading
import time
import tracemalloc
import types
import zlib
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import pytest
import waitress
from hypothesis import HealthCheck, given, settings, strategies as st

from driptag.relay import ingest
from driptag.relay.config import parse_config
from driptag.relay.ingest import create_app
from driptag.relay.metrics import Metrics
from driptag.relay.spool import Spool, SpoolError

TOKEN = "abcdefghij0123456789XYZW"
WK1 = "wk-one-abcdefgh1111"
WK2 = "wk-two-abcdefgh2222"
NAME1 = "83702741 (…1111)"
SUCCESS = {"success": True}


# The spool's clock in these tests: an event without a time of its own is dated when it was accepted.
ACCEPTED_AT = 1_764_583_200.0
ACCEPTED_AT_ISO = "2025-12-01T10:00:00.000Z"


def make_config(max_pending: int = 1_000_000, sources: list[dict[str, Any]] | None = None):
    sources = sources or [{"writeKey": WK1, "account": "83702741", "apiToken": TOKEN},
                          {"writeKey": WK2, "account": "12345678", "apiToken": TOKEN}]
    return parse_config({"sources": sources, "maxPending": max_pending}, "relay.json", {})


@pytest.fixture
def relay(tmp_path) -> Iterator[types.SimpleNamespace]:
    spool = Spool(tmp_path / "relay.sqlite3", clock=lambda: ACCEPTED_AT)
    metrics = Metrics()
    metrics.watch(pending=lambda: spool.pending, dead_letters=lambda: 0, paused_accounts=lambda: 0)
    yield types.SimpleNamespace(config=make_config(), spool=spool, metrics=metrics)
    spool.close()


@pytest.fixture
def client(relay):
    return create_app(relay).test_client()


def basic(write_key: str, password: str = "") -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{write_key}:{password}".encode()).decode()}


def track(email: str, event: str = "Viewed", **extra: Any) -> dict[str, Any]:
    return {"type": "track", "event": event, "properties": {"email": email}, **extra}


def event(email: str, action: str = "Viewed") -> tuple[str, dict[str, Any]]:
    return ("event", {"email": email, "action": action, "properties": {}})


def stored(relay, write_key: str = WK1) -> list[tuple[str, dict[str, Any]]]:
    """What the spool holds for a source: (kind, Drip record) in acceptance order."""
    source = relay.config.source_for(write_key)
    return [(pending.kind, _undated(pending.record)) for pending in relay.spool.waiting(relay.spool.source_id(source))]


def _undated(record: dict[str, Any]) -> dict[str, Any]:
    """The record without the acceptance time the spool gives an event that has no time of its own."""
    if record.get("occurred_at") == ACCEPTED_AT_ISO:
        return {key: value for key, value in record.items() if key != "occurred_at"}
    return record


def test_an_event_without_a_time_is_dated_when_the_relay_accepted_it(relay, client):
    assert answer(post(client, "/v1/track", track("ann@example.com"), basic(WK1))) == (200, SUCCESS)
    source = relay.config.source_for(WK1)
    (pending,) = relay.spool.waiting(relay.spool.source_id(source))
    assert pending.record["occurred_at"] == ACCEPTED_AT_ISO


def post(client, path: str, body: Any, headers: dict[str, str] | None = None, *,
         content_type: str = "application/json"):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post(path, data=data, headers=basic(WK1) if headers is None else headers,
                       content_type=content_type)


def answer(response) -> tuple[int, Any]:
    return response.status_code, json.loads(response.data)


def refused(error: str, status: int = 400) -> tuple[int, dict[str, Any]]:
    return status, {"success": False, "error": error}


def sample(relay, name: str, **labels: str) -> float:
    value = relay.metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


# --- the calls ------------------------------------------------------------------------------------

def test_a_track_is_stored_and_acknowledged_after_the_commit(client, relay):
    response = post(client, "/v1/track", track("ann@example.com", "Bought", properties={
        "email": "ann@example.com", "revenue": 12.5}))
    assert answer(response) == (200, SUCCESS)
    assert response.content_type == "application/json"
    assert stored(relay) == [("event", {"email": "ann@example.com", "action": "Bought",
                                        "properties": {"value": 1250}})]


def test_an_identify_is_stored_as_a_subscriber(client, relay):
    response = post(client, "/v1/identify", {"userId": "u1", "traits": {"email": "ann@example.com",
                                                                        "firstName": "Ann", "plan": "pro"}})
    assert answer(response) == (200, SUCCESS)
    assert stored(relay) == [("subscriber", {"email": "ann@example.com", "user_id": "u1", "first_name": "Ann",
                                             "custom_fields": {"plan": "pro", "id": "u1"}})]


@pytest.mark.parametrize("path", ["/v1/identify", "/v1/i"])
def test_the_identify_paths_give_the_type_when_the_body_has_none(client, relay, path):
    assert answer(post(client, path, {"traits": {"email": "ann@example.com"}})) == (200, SUCCESS)
    assert stored(relay) == [("subscriber", {"email": "ann@example.com"})]


@pytest.mark.parametrize("path", ["/v1/track", "/v1/t"])
def test_the_track_paths_give_the_type_when_the_body_has_none(client, relay, path):
    assert answer(post(client, path, {"event": "Viewed", "properties": {"email": "ann@example.com"}})) == \
        (200, SUCCESS)
    assert stored(relay) == [event("ann@example.com")]


@pytest.mark.parametrize("path,kind", [("/v1/page", "page"), ("/v1/p", "page"), ("/v1/screen", "screen"),
                                       ("/v1/s", "screen"), ("/v1/group", "group"), ("/v1/g", "group"),
                                       ("/v1/alias", "alias"), ("/v1/a", "alias")])
def test_page_screen_group_and_alias_are_acknowledged_and_counted_not_forwarded(client, relay, path, kind):
    assert answer(post(client, path, {"userId": "ann@example.com", "name": "Home"})) == (200, SUCCESS)
    assert stored(relay) == []
    assert sample(relay, "driptag_relay_accepted_messages_total", source=NAME1, type=kind) == 1
    assert sample(relay, "driptag_relay_skipped_messages_total", source=NAME1, reason="not forwarded") == 1


def test_a_type_in_the_body_is_kept_on_a_single_call_path(client, relay):
    body = {"type": "identify", "traits": {"email": "ann@example.com"}}
    assert answer(post(client, "/v1/track", body)) == (200, SUCCESS)
    assert stored(relay) == [("subscriber", {"email": "ann@example.com"})]


@pytest.mark.parametrize("path", ["/v1/batch", "/v1/b", "/v1/import", "/v1/import/"])
def test_every_batch_path_stores_the_messages_in_order(client, relay, path):
    body = {"batch": [track("a@example.com"), {"type": "identify", "traits": {"email": "b@example.com"}},
                      track("c@example.com", "Left")]}
    assert answer(post(client, path, body)) == (200, SUCCESS)
    assert stored(relay) == [event("a@example.com"), ("subscriber", {"email": "b@example.com"}),
                             event("c@example.com", "Left")]


def test_an_empty_batch_is_acknowledged(client, relay):
    assert answer(post(client, "/v1/batch", {"batch": []})) == (200, SUCCESS)
    assert stored(relay) == []


def test_the_batch_context_and_integrations_are_merged_into_each_message_one_level_deep(client, relay):
    body = {"context": {"traits": {"email": "shared@example.com"}, "ip": "10.0.0.1"},
            "integrations": {"All": False},
            "batch": [
                # inherits the context's traits (its e-mail) and ip; its own Drip: true beats All: false
                {"type": "identify", "integrations": {"Drip": True}},
                # its own context.traits replaces the batch's whole: no e-mail left
                {"type": "identify", "context": {"traits": {"name": "Bo"}}, "integrations": {"Drip": True}},
                # inherits All: false
                {"type": "identify", "traits": {"email": "own@example.com"}},
                # its own integrations key wins, even when it is not an object
                {"type": "identify", "traits": {"email": "null@example.com"}, "integrations": None},
            ]}
    assert answer(post(client, "/v1/batch", body)) == (200, SUCCESS)
    assert stored(relay) == [("subscriber", {"email": "shared@example.com", "ip_address": "10.0.0.1"}),
                             ("subscriber", {"email": "null@example.com", "ip_address": "10.0.0.1"})]
    assert sample(relay, "driptag_relay_skipped_messages_total", source=NAME1, reason="no email") == 1
    assert sample(relay, "driptag_relay_skipped_messages_total", source=NAME1, reason="integrations") == 1


# --- the write key ----------------------------------------------------------------------------------

def test_the_write_key_may_come_in_the_body_as_analytics_js_sends_it(client, relay):
    body = {"writeKey": WK2, "event": "Viewed", "properties": {"email": "ann@example.com"}}
    assert answer(post(client, "/v1/t", body, headers={}, content_type="text/plain")) == (200, SUCCESS)
    assert stored(relay, WK2) == [event("ann@example.com")]
    assert stored(relay, WK1) == []


def test_the_basic_user_wins_over_the_body_and_any_password_is_accepted(client, relay):
    body = {"writeKey": WK2, "batch": [track("ann@example.com")]}
    assert answer(post(client, "/v1/batch", body, headers=basic(WK1, "anything"))) == (200, SUCCESS)
    assert stored(relay, WK1) == [event("ann@example.com")]
    assert stored(relay, WK2) == []


def test_a_bearer_token_or_an_empty_basic_user_leaves_the_key_to_the_body(client, relay):
    body = {"writeKey": WK1, "batch": [track("ann@example.com")]}
    assert answer(post(client, "/v1/batch", body, headers={"Authorization": "Bearer some.oauth.token"})) == \
        (200, SUCCESS)
    assert answer(post(client, "/v1/batch", body, headers=basic(""))) == (200, SUCCESS)
    assert stored(relay) == [event("ann@example.com")] * 2


@pytest.mark.parametrize("headers,body,error", [
    ({}, {"batch": []}, "no write key: send it as the HTTP Basic user name or as writeKey in the body"),
    ({}, {"writeKey": 7, "batch": []}, "no write key: send it as the HTTP Basic user name or as writeKey in the body"),
    ({}, {"writeKey": "nope", "batch": []}, "unknown write key"),
    (basic("nope"), {"writeKey": WK1, "batch": []}, "unknown write key"),
    ({"Authorization": "Basic !!!"}, {"writeKey": WK1, "batch": []},
     "the Authorization header's Basic credentials are not valid base64 of writeKey:password"),
])
def test_a_missing_or_unknown_write_key_is_401(client, relay, headers, body, error):
    response = post(client, "/v1/batch", {**body, "batch": [track("ann@example.com")]}, headers=headers)
    assert answer(response) == refused(error, 401)
    assert stored(relay) == []
    assert sample(relay, "driptag_relay_rejected_total", reason="unauthorized") == 1


def test_a_reloaded_configuration_applies_to_the_next_request(client, relay):
    relay.config = make_config(sources=[{"writeKey": "wk-three-abcd3333", "account": "83702741",
                                         "apiToken": TOKEN}])
    assert answer(post(client, "/v1/track", track("ann@example.com"))) == refused("unknown write key", 401)
    assert answer(post(client, "/v1/track", track("ann@example.com"), headers=basic("wk-three-abcd3333"))) == \
        (200, SUCCESS)


# --- content type and encoding ----------------------------------------------------------------------

@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8", "text/plain",
                                          "text/plain;charset=UTF-8", "Application/JSON", ""])
def test_json_and_text_plain_are_read_as_json(client, relay, content_type):
    assert answer(post(client, "/v1/track", track("ann@example.com"), content_type=content_type)) == \
        (200, SUCCESS)
    assert stored(relay) == [event("ann@example.com")]


@pytest.mark.parametrize("content_type,error", [
    ("application/x-www-form-urlencoded",
     'Content-Type "application/x-www-form-urlencoded" is not accepted: send application/json or text/plain'),
    ("multipart/form-data; boundary=x",
     'Content-Type "multipart/form-data" is not accepted: send application/json or text/plain'),
    ("application/json; charset=iso-8859-1", 'charset "iso-8859-1" is not accepted: send UTF-8'),
])
def test_other_content_types_are_400(client, relay, content_type, error):
    assert answer(post(client, "/v1/track", track("ann@example.com"), content_type=content_type)) == \
        refused(error)
    assert stored(relay) == []


def test_a_gzipped_body_is_decompressed(client, relay):
    body = gzip.compress(json.dumps({"batch": [track("ann@example.com")]}).encode())
    response = post(client, "/v1/batch", body, headers={**basic(WK1), "Content-Encoding": "gzip"})
    assert answer(response) == (200, SUCCESS)
    assert stored(relay) == [event("ann@example.com")]


def test_a_gzipped_body_in_two_members_is_read_whole(client, relay):
    text = json.dumps({"batch": [track("ann@example.com"), track("bo@example.com")]}).encode()
    body = gzip.compress(text[:20]) + gzip.compress(text[20:])
    assert answer(post(client, "/v1/batch", body, headers={**basic(WK1), "Content-Encoding": "gzip"})) == \
        (200, SUCCESS)
    assert stored(relay) == [event("ann@example.com"), event("bo@example.com")]


@pytest.mark.parametrize("body,error", [
    (b"not gzip at all", "the body is not valid gzip (Error -3 while decompressing data: incorrect header check)"),
    (gzip.compress(b'{"batch": []}')[:-12], "the body is not valid gzip (it is cut short)"),
    (gzip.compress(b'{"batch": []}') + b"trailing", "the body is not valid gzip (Error -3 while decompressing "
                                                    "data: incorrect header check)"),
    (b"", "the body is not valid gzip (it is cut short)"),
])
def test_malformed_gzip_is_400(client, relay, body, error):
    assert answer(post(client, "/v1/batch", body, headers={**basic(WK1), "Content-Encoding": "gzip"})) == \
        refused(error)
    assert sample(relay, "driptag_relay_rejected_total", reason="bad gzip") == 1


def test_an_encoding_other_than_gzip_is_400(client):
    response = post(client, "/v1/batch", b"{}", headers={**basic(WK1), "Content-Encoding": "br"})
    assert answer(response) == refused('Content-Encoding "br" is not accepted: send gzip or no encoding')


def test_a_gzip_bomb_is_refused_without_inflating_it(client, relay):
    squeezer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = b" " * (1 << 20)
    bomb = b"".join(squeezer.compress(zeros) for _ in range(200)) + squeezer.flush()  # 200 MB of spaces
    assert len(bomb) < ingest.MAX_REQUEST_BYTES
    tracemalloc.start()
    try:
        response = post(client, "/v1/batch", bomb, headers={**basic(WK1), "Content-Encoding": "gzip"})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert answer(response) == refused("the request body is over 500 KB once decompressed")
    assert peak < 4 * ingest.MAX_REQUEST_BYTES, f"the request allocated {peak} bytes at its peak"


# --- limits -----------------------------------------------------------------------------------------

def big_track(email: str, size: int) -> dict[str, Any]:
    message = track(email)
    message["properties"]["filler"] = "x" * (size - len(json.dumps(message, separators=(",", ":"))) - 12)
    assert len(json.dumps(message, separators=(",", ":"))) == size
    return message


def test_a_message_over_32_kb_is_dropped_and_the_rest_of_its_batch_stored(client, relay):
    body = {"batch": [track("a@example.com"), big_track("big@example.com", 32 * 1024 + 1),
                      big_track("fits@example.com", 32 * 1024), track("c@example.com")]}
    assert answer(post(client, "/v1/batch", body)) == (200, SUCCESS)
    assert [record["email"] for _, record in stored(relay)] == ["a@example.com", "fits@example.com", "c@example.com"]
    assert sample(relay, "driptag_relay_rejected_total", reason="message too large") == 1
    assert sample(relay, "driptag_relay_accepted_messages_total", source=NAME1, type="track") == 3


def test_the_shared_context_counts_toward_each_messages_size(client, relay):
    body = {"context": {"page": {"title": "t" * 20_000}},
            "batch": [big_track("big@example.com", 13_000), track("small@example.com")]}
    assert answer(post(client, "/v1/batch", body)) == (200, SUCCESS)
    assert [record["email"] for _, record in stored(relay)] == ["small@example.com"]


def test_a_single_call_over_32_kb_is_400(client, relay):
    response = post(client, "/v1/track", big_track("big@example.com", 40_000))
    assert answer(response) == refused("the message is over 32 KB")
    assert stored(relay) == []
    assert sample(relay, "driptag_relay_rejected_total", reason="message too large") == 1


def test_a_request_over_500_kb_is_400_and_nothing_is_stored(client, relay):
    body = {"batch": [big_track(f"p{n}@example.com", 30_000) for n in range(18)]}
    assert len(json.dumps(body)) > 500 * 1024
    assert answer(post(client, "/v1/batch", body)) == refused("the request body is over 500 KB")
    assert stored(relay) == []
    assert sample(relay, "driptag_relay_rejected_total", reason="too large") == 1


def test_a_request_of_exactly_500_kb_is_taken(client, relay):
    body = {"batch": [big_track(f"p{n}@example.com", 30_000) for n in range(16)]}
    text = json.dumps(body)
    data = (text + " " * (500 * 1024 - len(text))).encode()
    assert len(data) == 500 * 1024
    assert answer(post(client, "/v1/batch", data)) == (200, SUCCESS)
    assert len(stored(relay)) == 16


def test_over_2500_messages_is_400_and_2500_are_taken(client, relay):
    many = {"batch": [{"type": "page"}] * 2501}
    assert answer(post(client, "/v1/batch", many)) == \
        refused("the batch has 2501 messages; at most 2,500 per request")
    assert sample(relay, "driptag_relay_accepted_messages_total", source=NAME1, type="page") == 0
    assert answer(post(client, "/v1/batch", {"batch": [{"type": "page"}] * 2500})) == (200, SUCCESS)
    assert sample(relay, "driptag_relay_accepted_messages_total", source=NAME1, type="page") == 2500


# --- the JSON -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("data,error", [
    (b'{"batch": [', "the body is not valid JSON: Expecting value (line 1, column 12)"),
    (b'{"batch": []} {}', "the body is not valid JSON: Extra data (line 1, column 15)"),
    (b"", "the body is empty: expected a JSON object"),
    (b'{"batch": [{"type": "track", "properties": {"v": NaN}}]}',
     "NaN is not a JSON number: send a number or leave the value out"),
    (b'{"batch": [{"properties": {"v": -Infinity}}]}',
     "-Infinity is not a JSON number: send a number or leave the value out"),
    (b'{"batch": [{"properties": {"v": 1e400}}]}', 'the number "1e400" is beyond the range of a double'),
    (b'{"batch": [{"properties": {"v": -2.5E+308}}]}', 'the number "-2.5E+308" is beyond the range of a double'),
    (b'{"batch": [{"properties": {"v": 1e1000}}]}', 'the number "1e1000" is beyond the range of a double'),
    (b'{"batch": [{"properties": {"v": [0.5e0400]}}]}', 'the number "0.5e0400" is beyond the range of a double'),
    (b'{"batch": [{"properties": {"v": ' + b"9" * 250 + b'e60}}]}',
     'the number "' + "9" * 40 + '…" is beyond the range of a double'),
    (b'{"batch": [{"properties": {"v": 1' + b"0" * 309 + b'}}]}',
     'the number "1' + "0" * 39 + '…" is beyond the range of a double'),
    (b'{"batch": [{"properties": {"v": "\\ud800"}}]}',
     "the body has a lone surrogate escape (\\ud800-\\udfff without its pair), which UTF-8 cannot store"),
    (b'{"batch": [{"\\udfff": 1}]}',
     "the body has a lone surrogate escape (\\ud800-\\udfff without its pair), which UTF-8 cannot store"),
    (b'{"batch": [{"properties": {"v": "caf\xe9"}}]}', "the body is not UTF-8 (byte 36 is not valid)"),
    (b'{"batch": [{"properties": {"v": "\xed\xa0\x80"}}]}', "the body is not UTF-8 (byte 33 is not valid)"),
    (b"[" * 100_000 + b"]" * 100_000, "the body is nested too deeply"),
    (b"[]", "the body must be a JSON object, not an array"),
    (b'"text"', "the body must be a JSON object, not a string"),
    (b"null", "the body must be a JSON object, not null"),
    (b'{"batch": {"type": "track"}}', '"batch" must be a list of messages, not an object'),
    (b'{"writeKey": "x"}', '"batch" must be a list of messages, not null'),
])
def test_bodies_that_cannot_be_stored_are_400_and_nothing_is_stored(client, relay, data, error):
    assert answer(post(client, "/v1/batch", data)) == refused(error)
    assert stored(relay) == []


def test_numbers_within_a_double_surrogate_pairs_and_a_bom_are_fine(client, relay):
    body = ('\ufeff{"batch": [{"type": "track", "event": "Viewed \\ud83d\\ude00", "properties": '
            '{"email": "ann@example.com", "big": 1.5e308, "long": ' + "9" * 308 + ', "small": 1e-400}}]}')
    assert answer(post(client, "/v1/batch", body.encode())) == (200, SUCCESS)
    ((kind, record),) = stored(relay)
    assert (kind, record["action"], record["properties"]["big"], record["properties"]["small"]) == \
        ("event", "Viewed \U0001F600", 1.5e308, 0.0)
    assert record["properties"]["long"] == int("9" * 308)


def test_duplicate_keys_take_the_last_value(client, relay):
    data = b'{"type": "track", "event": "First", "event": "Last", "properties": {"email": "ann@example.com"}}'
    assert answer(post(client, "/v1/track", data)) == (200, SUCCESS)
    assert stored(relay) == [event("ann@example.com", "Last")]


_TEXT = st.text(st.characters(codec="utf-8") | st.sampled_from(["\ud800", "\udfff", "\x00", "\u2028"]), max_size=12)
_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | _TEXT
    | st.sampled_from([10**400, "ann@example.com", "Order Completed", "$12.50", "2026-01-02T03:04:05+01:00"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_TEXT | st.sampled_from(
        ["email", "revenue", "total", "Drip", "All", "traits", "tags", "address", "__proto__"]), inner, max_size=4),
    max_leaves=20)
_MESSAGES = st.dictionaries(st.sampled_from(["type", "event", "userId", "anonymousId", "traits", "properties",
                                             "context", "integrations", "messageId", "timestamp", "writeKey"]),
                            _VALUES | st.sampled_from(["identify", "track", "page"]), max_size=8)


def test_no_body_is_answered_with_a_server_error(tmp_path):
    spool = Spool(tmp_path / "fuzz.sqlite3")
    relay = types.SimpleNamespace(config=make_config(), spool=spool, metrics=Metrics())
    client = create_app(relay).test_client()

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(path=st.sampled_from(["/v1/track", "/v1/identify", "/v1/batch", "/v1/b"]),
           message=_MESSAGES | _VALUES, batch=st.lists(_MESSAGES | _VALUES, max_size=5),
           ascii_only=st.booleans())
    def check(path, message, batch, ascii_only):
        body = {"batch": batch, "context": message} if path in ("/v1/batch", "/v1/b") else message
        data = json.dumps(body, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
        response = post(client, path, data)
        status, payload = answer(response)
        if status == 200:
            assert payload == SUCCESS
        else:
            assert status == 400 and set(payload) == {"success", "error"} and payload["success"] is False, \
                (status, payload)
            assert "\n" not in payload["error"] and payload["error"], payload

    try:
        check()
    finally:
        spool.close()


# --- what the mapping and the spool decide ----------------------------------------------------------------

def test_an_invalid_single_call_is_400_with_the_mappings_reason(client, relay):
    response = post(client, "/v1/track", {"properties": {"email": "ann@example.com"}})
    assert answer(response) == refused("track: event must be a non-empty string")
    assert stored(relay) == []
    assert sample(relay, "driptag_relay_rejected_total", reason="invalid message") == 1


def test_invalid_messages_of_a_batch_are_skipped_and_counted(client, relay):
    body = {"batch": [{"type": "track"}, {"type": "jump"}, 42, track("ann@example.com")]}
    assert answer(post(client, "/v1/batch", body)) == (200, SUCCESS)
    assert stored(relay) == [event("ann@example.com")]
    assert sample(relay, "driptag_relay_skipped_messages_total", source=NAME1, reason="invalid") == 3
    assert sample(relay, "driptag_relay_accepted_messages_total", source=NAME1, type="track") == 2
    assert sample(relay, "driptag_relay_accepted_messages_total", source=NAME1, type="invalid") == 2


def test_a_repeated_message_id_is_acknowledged_and_stored_once(client, relay):
    message = track("ann@example.com", messageId="m-1")
    assert answer(post(client, "/v1/track", message)) == (200, SUCCESS)
    assert answer(post(client, "/v1/batch", {"batch": [message, track("bo@example.com", messageId="m-2")]})) == \
        (200, SUCCESS)
    assert stored(relay) == [event("ann@example.com"), event("bo@example.com")]
    assert sample(relay, "driptag_relay_duplicate_messages_total", source=NAME1) == 1


def test_too_much_waiting_is_429_with_retry_after_and_nothing_is_stored(client, relay):
    relay.config = make_config(max_pending=3)
    assert answer(post(client, "/v1/batch", {"batch": [track("a@example.com"), track("b@example.com")]})) == \
        (200, SUCCESS)
    response = post(client, "/v1/batch", {"batch": [track("c@example.com"), track("d@example.com")]})
    assert answer(response) == refused("the relay has 2 records waiting to be delivered; retry later", 429)
    assert response.headers["Retry-After"] == "5"
    assert answer(post(client, "/v1/track", track("c@example.com"))) == (200, SUCCESS)
    response = post(client, "/v1/track", track("d@example.com"))
    assert answer(response) == refused("the relay has 3 records waiting to be delivered; retry later", 429)
    assert response.headers["Retry-After"] == "5"
    assert [record["email"] for _, record in stored(relay)] == ["a@example.com", "b@example.com", "c@example.com"]
    assert sample(relay, "driptag_relay_rejected_total", reason="busy") == 2


def test_a_full_spool_gives_503_and_nothing_is_acknowledged(client, relay):
    # A real "database or disk is full" from SQLite: the spool's file may not grow by a single page.
    post(client, "/v1/track", track("first@example.com"))
    pages = relay.spool.run(lambda db: db.execute("PRAGMA page_count").fetchone()[0])
    relay.spool.run(lambda db: db.execute(f"PRAGMA max_page_count = {pages}"))
    padded = {"batch": [track(f"p{n}@example.com", properties={"email": f"p{n}@example.com", "pad": "x" * 500})
                        for n in range(100)]}
    response = post(client, "/v1/batch", padded)
    assert answer(response) == refused(
        "the relay could not store the messages (the spool could not commit: database or disk is full); "
        "nothing was stored: retry later", 503)
    assert response.headers["Retry-After"] == "30"
    assert stored(relay) == [event("first@example.com")]
    assert relay.spool.pending == 1
    assert sample(relay, "driptag_relay_rejected_total", reason="spool error") == 1
    relay.spool.run(lambda db: db.execute("PRAGMA max_page_count = 1073741823"))
    assert answer(post(client, "/v1/batch", padded)) == (200, SUCCESS)
    assert len(stored(relay)) == 101


def test_a_spool_error_raised_by_accept_is_503(client, relay, monkeypatch):
    def full(source, messages):
        raise SpoolError("the spool could not commit: database or disk is full")

    monkeypatch.setattr(relay.spool, "accept", full)
    assert answer(post(client, "/v1/track", track("ann@example.com"))) == refused(
        "the relay could not store the messages (the spool could not commit: database or disk is full); "
        "nothing was stored: retry later", 503)


def test_an_unexpected_fault_is_a_json_500_logged_once_a_minute(client, relay, monkeypatch, caplog):
    def broken(source, messages):
        raise RuntimeError("a bug")

    monkeypatch.setattr(relay.spool, "accept", broken)
    with caplog.at_level(logging.ERROR, logger="driptag.relay"):
        for _ in range(3):
            assert answer(post(client, "/v1/track", track("ann@example.com"))) == refused(
                "internal error in the relay: nothing was stored; retry later", 500)
    assert [(record.getMessage(), str(record.exc_info[1])) for record in caplog.records] == [
        ("ingest: unexpected error; answering 500", "a bug")]
    assert sample(relay, "driptag_relay_rejected_total", reason="internal error") == 3


# --- routing and CORS ---------------------------------------------------------------------------------

def test_unknown_paths_and_methods_are_json_errors(client):
    assert answer(post(client, "/v1/identity", {})) == refused(ingest._NO_SUCH_ENDPOINT, 404)
    assert answer(client.get("/v2/whatever")) == refused(ingest._NO_SUCH_ENDPOINT, 404)
    response = client.get("/v1/track")
    assert answer(response) == refused("GET is not allowed here; use OPTIONS, POST", 405)
    assert response.headers["Allow"] == "OPTIONS, POST"


def test_answers_under_v1_allow_any_origin_errors_included(client):
    for response in (post(client, "/v1/track", track("ann@example.com")),
                     post(client, "/v1/track", track("ann@example.com"), headers=basic("nope")),
                     client.get("/v1/track")):
        assert response.headers["Access-Control-Allow-Origin"] == "*", response.status
        assert response.headers["Access-Control-Expose-Headers"] == "Retry-After, X-RateLimit-Reset"
    assert "Access-Control-Allow-Origin" not in client.get("/health").headers


@pytest.mark.parametrize("path", ["/v1/t", "/v1/batch", "/v1/b"])
def test_a_preflight_is_answered(client, path):
    response = client.options(path, headers={"Origin": "https://shop.example", "Access-Control-Request-Method": "POST",
                                             "Access-Control-Request-Headers": "content-type"})
    assert response.status_code == 204 and response.data == b""
    assert {key: response.headers.get(key) for key in (
        "Access-Control-Allow-Origin", "Access-Control-Allow-Methods", "Access-Control-Allow-Headers",
        "Access-Control-Max-Age")} == {
        "Access-Control-Allow-Origin": "*", "Access-Control-Allow-Methods": "POST, OPTIONS",
        "Access-Control-Allow-Headers": "Content-Type, Authorization, Content-Encoding, X-Retry-Count",
        "Access-Control-Max-Age": "86400"}


# --- health and metrics -------------------------------------------------------------------------------

def test_health_commits_a_write_and_reports_what_waits(client, relay):
    assert answer(client.get("/health")) == (200, {"ok": True, "pending": 0})
    post(client, "/v1/track", track("ann@example.com"))
    assert answer(client.get("/health")) == (200, {"ok": True, "pending": 1})


def test_health_is_503_when_the_spool_cannot_commit(client, relay, monkeypatch):
    def failing(job):
        raise SpoolError("the spool could not commit: disk I/O error")

    monkeypatch.setattr(relay.spool, "run", failing)
    assert answer(client.get("/health")) == (503, {"ok": False, "pending": 0,
                                                   "error": "the spool could not commit: disk I/O error"})


def test_health_is_503_while_the_spool_writer_does_not_answer(client, relay, monkeypatch):
    release = threading.Event()
    real_run = relay.spool.run

    def stuck(job):
        release.wait(30)
        return real_run(job)

    monkeypatch.setattr(ingest, "HEALTH_TIMEOUT", 0.05)
    monkeypatch.setattr(relay.spool, "run", stuck)
    assert answer(client.get("/health")) == (503, {"ok": False, "pending": 0,
                                                   "error": "the spool did not commit within 0.05 s"})
    # One probe at a time: a stuck writer does not collect a waiting thread per check.
    assert answer(client.get("/health")) == (503, {
        "ok": False, "pending": 0, "error": "the previous check is still waiting for the spool to commit"})
    monkeypatch.setattr(relay.spool, "run", real_run)
    release.set()
    deadline = time.monotonic() + 10
    while (status := client.get("/health").status_code) != 200 and time.monotonic() < deadline:
        threading.Event().wait(0.01)
    assert status == 200, "the health check did not recover once the writer answered"


def test_metrics_are_prometheus_text(client, relay):
    post(client, "/v1/batch", {"batch": [track("a@example.com", messageId="m"), track("a@example.com", messageId="m"),
                                         {"type": "identify", "userId": "u"}, {"type": "page"}]})
    post(client, "/v1/track", track("a@example.com"), headers=basic("nope"))
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain; version=")
    lines = set(response.data.decode().splitlines())
    expected = {
        f'driptag_relay_accepted_messages_total{{source="{NAME1}",type="track"}} 2.0',
        f'driptag_relay_accepted_messages_total{{source="{NAME1}",type="identify"}} 1.0',
        f'driptag_relay_accepted_messages_total{{source="{NAME1}",type="page"}} 1.0',
        f'driptag_relay_skipped_messages_total{{reason="no email",source="{NAME1}"}} 1.0',
        f'driptag_relay_skipped_messages_total{{reason="not forwarded",source="{NAME1}"}} 1.0',
        f'driptag_relay_duplicate_messages_total{{source="{NAME1}"}} 1.0',
        'driptag_relay_rejected_total{reason="unauthorized"} 1.0',
        "driptag_relay_pending_records 1.0",
        "driptag_relay_dead_letters 0.0",
        "driptag_relay_paused_accounts 0.0",
    }
    assert expected - lines == set(), response.data.decode()


def test_a_gauge_that_cannot_be_read_is_nan_and_the_scrape_still_works(relay):
    def broken() -> float:
        raise RuntimeError("closed")

    relay.metrics.watch(pending=broken, dead_letters=lambda: 2, paused_accounts=lambda: 1)
    body, _ = relay.metrics.render()
    lines = set(body.decode().splitlines())
    assert {"driptag_relay_pending_records NaN", "driptag_relay_dead_letters 2.0",
            "driptag_relay_paused_accounts 1.0"} <= lines


# --- over a real socket, served by waitress -----------------------------------------------------------------

@pytest.fixture
def served(relay) -> Iterator[tuple[str, int]]:
    """The app behind waitress on 127.0.0.1 with ONE worker thread: anything that held a worker while
    waiting for a client would block every other request."""
    server = waitress.create_server(create_app(relay), host="127.0.0.1", port=0, threads=1, channel_timeout=30)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    yield "127.0.0.1", int(server.effective_port)
    server.close()
    server.task_dispatcher.shutdown(cancel_pending=True, timeout=5)


def read_response(sock: socket.socket) -> tuple[int, Any]:
    response = http.client.HTTPResponse(sock)
    response.begin()
    return response.status, json.loads(response.read())


def test_a_gzipped_chunked_import_without_content_length_is_read(served, relay):
    body = gzip.compress(json.dumps({"batch": [track("ann@example.com"), track("bo@example.com")]}).encode())
    head = (f"POST /v1/import HTTP/1.1\r\nHost: relay\r\nAuthorization: {basic(WK1)['Authorization']}\r\n"
            "Content-Type: application/json\r\nContent-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n")
    pieces = [body[i:i + 100] for i in range(0, len(body), 100)]
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces) + b"0\r\n\r\n"
    with socket.create_connection(served) as sock:
        sock.sendall(head.encode() + chunked)
        assert read_response(sock) == (200, SUCCESS)
    assert stored(relay) == [event("ann@example.com"), event("bo@example.com")]


def test_a_client_trickling_its_body_does_not_hold_up_other_requests(served, relay):
    body = json.dumps({"batch": [track("slow@example.com")]}).encode()
    head = (f"POST /v1/batch HTTP/1.1\r\nHost: relay\r\nAuthorization: {basic(WK1)['Authorization']}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
    with socket.create_connection(served) as slow:
        slow.sendall(head.encode() + body[:10])
        # While that body is unfinished, another client is answered (the only worker thread is free).
        other = http.client.HTTPConnection(*served, timeout=10)
        other.request("POST", "/v1/track", json.dumps(track("quick@example.com")),
                      {**basic(WK1), "Content-Type": "application/json"})
        response = other.getresponse()
        assert (response.status, json.loads(response.read())) == (200, SUCCESS)
        other.close()
        for index in range(10, len(body)):
            slow.sendall(body[index:index + 1])
        assert read_response(slow) == (200, SUCCESS)
    assert stored(relay) == [event("quick@example.com"), event("slow@example.com")]


def test_analytics_python_sends_gzipped_batches_that_are_stored(served, relay):
    from segment.analytics import Client

    # sync_mode: each call is posted at once, and a refused post raises here.
    analytics = Client(WK1, host="http://%s:%d" % served, gzip=True, sync_mode=True, max_retries=0)
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    analytics.identify("u-1", {"email": "ann@example.com", "firstName": "Ann"}, timestamp=when, message_id="m-1")
    analytics.track("u-1", "Bought", {"revenue": 9.99}, timestamp=when, message_id="m-2")
    assert stored(relay) == [("subscriber", {"email": "ann@example.com", "user_id": "u-1", "first_name": "Ann",
                                             "custom_fields": {"id": "u-1"}}),
                             ("event", {"email": "ann@example.com", "action": "Bought", "properties": {"value": 999},
                                        "occurred_at": "2026-01-02T03:04:05.000Z"})]
