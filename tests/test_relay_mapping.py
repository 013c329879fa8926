"""The relay's mapping beyond the shared table (tests/mapping_cases.json): refused messages, what is
remembered and recalled, values the browser cannot produce (NaN, huge integers, lone surrogates), limits,
and that no input makes map_message fail with anything but InvalidMessage."""

from __future__ import annotations

import copy
import json
import math

import pytest
from hypothesis import given, settings, strategies as st

from driptag.relay.mapping import (DripRecord, InvalidMessage, Mapped, drip_requests, format_key, map_message)

ACCOUNT = "83702741"


def person(message, **options) -> dict:
    """The subscriber record of an identify that must give one."""
    mapped = map_message(message, **options)
    assert mapped.skipped is None and mapped.records, f"no record: {mapped}"
    assert mapped.records[0].kind == "subscriber"
    return mapped.records[0].record


def event(message, **options) -> dict:
    mapped = map_message(message, **options)
    assert mapped.skipped is None and len(mapped.records) == 1, f"not one record: {mapped}"
    assert mapped.records[0].kind == "event"
    return mapped.records[0].record


# Refused messages: one line saying why


@pytest.mark.parametrize("message, error", [
    ([], "a message must be a JSON object, not an array"),
    ("identify", "a message must be a JSON object, not a string"),
    (None, "a message must be a JSON object, not null"),
    (7, "a message must be a JSON object, not a number"),
    ({}, "the message has no type"),
    ({"type": None}, "the message has no type"),
    ({"type": "Identify"}, "unknown message type 'Identify': expected identify, track, page, screen, group or alias"),
    ({"type": 3}, "unknown message type 3: expected identify, track, page, screen, group or alias"),
    ({"type": "track"}, "track: event must be a non-empty string"),
    ({"type": "track", "event": 5}, "track: event must be a non-empty string"),
    ({"type": "track", "event": ["x"]}, "track: event must be a non-empty string"),
])
def test_invalid_messages_are_refused_with_one_line(message, error):
    with pytest.raises(InvalidMessage) as raised:
        map_message(message)
    assert str(raised.value) == error


def test_an_unknown_type_is_shown_on_one_line_and_cut():
    with pytest.raises(InvalidMessage) as raised:
        map_message({"type": "line\nbreak" + "x" * 100})
    assert str(raised.value) == ("unknown message type 'line\\nbreakxxxxxxxxxxxxxxxxxxxxxxxxxxx…: expected identify, "
                                 "track, page, screen, group or alias")


def test_an_unknown_key_style_is_a_programming_error():
    with pytest.raises(ValueError, match="^key_style must be 'segment' or 'snake', not 'camel'$"):
        map_message({"type": "identify"}, key_style="camel")


def test_invalid_message_is_a_value_error():
    assert issubclass(InvalidMessage, ValueError)


# The e-mail: from the message, remembered, recalled


class Recall:
    """A recall function that records what it was asked."""

    def __init__(self, known: dict[tuple[str, str], str] | None = None) -> None:
        self.known = known or {}
        self.asked: list[tuple[str, str]] = []

    def __call__(self, kind: str, ident: str) -> str | None:
        self.asked.append((kind, ident))
        return self.known.get((kind, ident))


def test_recall_is_not_asked_when_the_message_has_the_email():
    recall = Recall()
    map_message({"type": "track", "userId": "u", "anonymousId": "a", "event": "e", "properties": {"email": "a@b.co"}},
                recall=recall)
    assert recall.asked == []


def test_recall_asks_the_user_id_first_then_the_anonymous_id():
    recall = Recall()
    mapped = map_message({"type": "track", "userId": "u", "anonymousId": "a", "event": "e"}, recall=recall)
    assert recall.asked == [("userId", "u"), ("anonymousId", "a")]
    assert mapped == Mapped(skipped="no email")


def test_recall_gets_a_numeric_user_id_as_its_text():
    recall = Recall({("userId", "42"): "ann@example.com"})
    assert event({"type": "track", "userId": 42, "event": "e"}, recall=recall)["email"] == "ann@example.com"


def test_a_recalled_value_that_is_not_an_email_string_is_no_email():
    assert map_message({"type": "track", "userId": "u", "event": "e"}, recall=lambda kind, ident: "") == \
        Mapped(skipped="no email")


def test_nothing_is_remembered_from_a_call_that_turns_drip_off():
    mapped = map_message({"type": "identify", "userId": "u", "traits": {"email": "a@b.co"},
                          "integrations": {"Drip": False}})
    assert mapped == Mapped(skipped="integrations")


def test_nothing_is_remembered_from_a_call_that_is_not_forwarded():
    assert map_message({"type": "page", "userId": "u", "context": {"traits": {"email": "a@b.co"}}}) == \
        Mapped(skipped="not forwarded")


def test_an_email_from_context_traits_is_remembered_for_both_ids():
    mapped = map_message({"type": "identify", "userId": "u", "anonymousId": "a",
                          "context": {"traits": {"email": "ann@example.com"}}})
    assert mapped.remember == (("userId", "u", "ann@example.com"), ("anonymousId", "a", "ann@example.com"))


def test_records_are_about_the_email_as_given():
    mapped = map_message({"type": "identify", "traits": {"email": "Ann@Example.COM"}}, campaign_id="1")
    assert [record.email for record in mapped.records] == ["Ann@Example.COM", "Ann@Example.COM"]


# Parts of a message that are not objects count as empty


def test_traits_properties_context_and_integrations_that_are_not_objects_are_ignored():
    assert person({"type": "identify", "userId": "ann@example.com", "traits": ["x"], "context": "x",
                   "integrations": "x"}) == {"email": "ann@example.com", "user_id": "ann@example.com",
                                             "custom_fields": {"id": "ann@example.com"}}
    assert event({"type": "track", "event": "e", "userId": "ann@example.com", "properties": 5,
                  "context": {"traits": "x"}}) == {"email": "ann@example.com", "action": "e", "properties": {}}


def test_a_user_id_that_is_neither_string_nor_number_is_none():
    assert person({"type": "identify", "userId": True, "traits": {"email": "a@b.co"}}) == {"email": "a@b.co"}
    assert person({"type": "identify", "userId": 42.0, "traits": {"email": "a@b.co"}})["user_id"] == "42"


# Values the browser cannot produce


def test_non_finite_numbers_are_left_out_and_become_null_in_arrays():
    record = event({"type": "track", "event": "e", "properties": {"email": "a@b.co", "n": math.nan, "i": math.inf,
                                                                   "list": [1, -math.inf], "deep": {"x": math.nan}}})
    assert record["properties"] == {"list": [1, None], "deep": {}}
    fields = person({"type": "identify", "traits": {"email": "a@b.co", "n": math.nan, "list": [math.nan]}})
    assert fields["custom_fields"] == {"list": "[null]"}


def test_integers_are_written_whole_below_1e21_and_as_javascript_writes_them_beyond():
    fields = person({"type": "identify", "traits": {"email": "a@b.co", "big": 12345678901234567890, "huge": 10**21,
                                                    "in_json": [10**21, 2**70], "beyond_a_double": 10**400}})
    assert fields["custom_fields"] == {"big": "12345678901234567890", "huge": "1e+21",
                                       "in_json": "[1e+21,1.1805916207174113e+21]"}


def test_json_text_escapes_what_json_stringify_escapes():
    fields = person({"type": "identify", "traits": {"email": "a@b.co",
                                                    "o": {"q": "\"\\\n\t\x01\u2028é😀", "lone": "\ud800"}}})
    assert fields["custom_fields"]["o"] == '{"q":"\\"\\\\\\n\\t\\u0001\u2028é😀","lone":"\\ud800"}'


def test_json_text_puts_array_index_keys_first_as_javascript_does():
    fields = person({"type": "identify", "traits": {"email": "a@b.co", "o": {"b": 1, "10": 2, "2": 3, "01": 4,
                                                                              "4294967295": 5, "4294967294": 6}}})
    assert fields["custom_fields"]["o"] == '{"2":3,"10":2,"4294967294":6,"b":1,"01":4,"4294967295":5}'


def test_a_trait_keyed_empty_is_no_custom_field():
    assert person({"type": "identify", "traits": {"email": "a@b.co", "": "x", " ": "y"}}) == \
        {"email": "a@b.co", "custom_fields": {"_": "y"}}


# What the loader never copies, the relay does not either


def test_prototype_keys_are_never_copied():
    message = json.loads('{"type": "track", "event": "e", "properties": {"email": "a@b.co", "__proto__": {"x": 1},'
                         ' "constructor": 2, "ok": {"prototype": 3, "fine": 4}}}')
    assert event(message)["properties"] == {"ok": {"fine": 4}}
    traits = json.loads('{"email": "a@b.co", "constructor": 1, "prototype": 2, "o": {"__proto__": 3}}')
    assert person({"type": "identify", "traits": traits}) == {"email": "a@b.co", "custom_fields": {"o": "{}"}}


def test_at_most_10000_values_are_copied_and_an_array_is_judged_by_its_length_first():
    properties = event({"type": "track", "event": "e", "userId": "a@b.co",
                        "properties": {"small": list(range(9_000)), "too_many": list(range(2_000)), "after": 1,
                                       "fills": list(range(999)), "one_too_many": 1}})
    assert sorted(properties["properties"]) == ["after", "fills", "small"]


# Dates


@pytest.mark.parametrize("when, expected", [
    ("2024-01-02T03:04:05", "2024-01-02T03:04:05.000Z"),  # no offset: UTC (a server knows no local time)
    ("2024-01-02T03:04:05+01", "2024-01-02T02:04:05.000Z"),
    ("2024-01-02T03:04:05+0130", "2024-01-02T01:34:05.000Z"),
    ("2024-01-02 03:04:05.1Z", "2024-01-02T03:04:05.100Z"),
    ("2024-02-30T00:00:00Z", None),  # JavaScript's Date reads it as March 1
    ("2024-01-02T24:00:00Z", None),
    ("2024-01-02T03:04:05+24:00", None),
    ("2023-12-31T23:30:00.25-01:00", "2024-01-01T00:30:00.250Z"),  # the offset carries into the next year
    ("2024-03-01T00:30:00+01:00", "2024-02-29T23:30:00.000Z"),  # … and back into a leap day
    ("0001-01-01T00:00:00+01:00", None),  # before year 1
    ("9999-12-31T23:59:59-00:01", None),  # after year 9999
    ("2024-01-02T03:04:05Z ", None),
    ("", None),
])
def test_occurred_at_is_read_as_iso_8601(when, expected):
    record = event({"type": "track", "event": "e", "userId": "a@b.co", "timestamp": when})
    assert record.get("occurred_at") == expected


def test_a_null_timestamp_falls_back_to_the_original_timestamp():
    record = event({"type": "track", "event": "e", "userId": "a@b.co", "timestamp": None,
                    "originalTimestamp": "2024-01-02T03:04:05Z"})
    assert record["occurred_at"] == "2024-01-02T03:04:05.000Z"


# Records


def test_records_share_no_lists_or_dicts():
    mapped = map_message({"type": "identify", "traits": {"email": "a@b.co", "tags": ["x"], "plan": "p"}},
                         campaign_id="1")
    subscriber, campaign = (record.record for record in mapped.records)
    assert subscriber["tags"] == campaign["tags"] and subscriber["tags"] is not campaign["tags"]
    assert subscriber["custom_fields"] is not campaign["custom_fields"]


def test_the_message_is_never_changed():
    message = {"type": "track", "event": "Order Completed", "userId": "u",
               "properties": {"email": "a@b.co", "revenue": "9.99", "occurred_at": "2024-01-02", "prospect": True,
                              "a b": {"c d": [1]}}}
    before = copy.deepcopy(message)
    map_message(message)
    identify = {"type": "identify", "userId": "u", "traits": {"email": "a@b.co", "tags": "x, y", "name": "A B",
                                                               "address": {"street": "s"}}}
    before_identify = copy.deepcopy(identify)
    map_message(identify, campaign_id="1")
    assert (message, identify) == (before, before_identify)


def test_drip_requests_turns_records_into_single_requests_in_order():
    records = (DripRecord("subscriber", "a@b.co", {"email": "a@b.co"}),
               DripRecord("campaign", "a@b.co", {"email": "a@b.co"}, "77"),
               DripRecord("event", "a@b.co", {"email": "a@b.co", "action": "e"}))
    assert drip_requests(ACCOUNT, records) == [
        {"path": "/v2/83702741/subscribers", "body": {"subscribers": [{"email": "a@b.co"}]}},
        {"path": "/v2/83702741/campaigns/77/subscribers", "body": {"subscribers": [{"email": "a@b.co"}]}},
        {"path": "/v2/83702741/events", "body": {"events": [{"email": "a@b.co", "action": "e"}]}},
    ]
    with pytest.raises(ValueError, match="^unknown record kind 'tag'$"):
        drip_requests(ACCOUNT, [DripRecord("tag", "a@b.co", {})])


def test_format_key_is_the_loaders():
    assert [format_key(key, "snake") for key in ("firstName", "Order ID", "URLPath", "--x--", "%%", "HTTPServer")] == \
        ["first_name", "order_id", "url_path", "x", "%%", "http_server"]
    assert [format_key(key, "segment") for key in ("a b", "a\u00a0b", "a\ufeffb", "a\x1cb", "firstName")] == \
        ["a_b", "a_b", "a_b", "a\x1cb", "firstName"]


# Any JSON in, a clear answer out

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=20)
KEYS = ("email", "revenue", "total", "occurred_at", "prospect", "name", "address", "tags", "euConsent",
        "lifetimeValue", "baseLeadScore", "firstName", "id", "user_id")
PARTS = st.builds(lambda email, others: {**email, **others},
                  st.fixed_dictionaries({}, optional={"email": st.just("ann@example.com") | JSON_VALUES}),
                  st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6), JSON_VALUES, max_size=6))
MESSAGES = st.fixed_dictionaries({
    # Mostly valid calls, sometimes anything at all.
    "type": st.sampled_from(["identify", "track"]) | st.sampled_from(["identify", "track", "page", "other"]) | JSON_VALUES,
    "event": st.sampled_from(["Order Completed", "e"]) | JSON_VALUES,
}, optional={
    "userId": st.sampled_from(["u", "ann@example.com", 42]) | JSON_VALUES,
    "anonymousId": st.sampled_from(["a"]) | JSON_VALUES,
    "traits": PARTS | JSON_VALUES, "properties": PARTS | JSON_VALUES,
    "context": st.fixed_dictionaries({}, optional={"traits": PARTS, "timezone": JSON_VALUES, "ip": JSON_VALUES}),
    "integrations": st.fixed_dictionaries({}, optional={"Drip": JSON_VALUES, "All": JSON_VALUES}),
    "timestamp": st.sampled_from(["2024-01-02T03:04:05+01:00"]) | JSON_VALUES,
})


@settings(max_examples=400, deadline=None)
@given(MESSAGES, st.sampled_from(["segment", "snake"]), st.sampled_from([None, "1234567"]))
def test_any_message_maps_to_sendable_records_or_a_clear_refusal(message, key_style, campaign_id):
    try:
        mapped = map_message(message, key_style=key_style, campaign_id=campaign_id,
                             recall=lambda kind, ident: "known@example.com" if ident == "a" else None)
    except InvalidMessage as error:
        assert "\n" not in str(error)
        return
    assert (mapped.skipped is None) == bool(mapped.records)
    assert mapped.skipped in (None, "no email", "integrations", "not forwarded")
    for record in mapped.records:
        json.dumps(record.record, allow_nan=False)  # what Drip gets is plain JSON: no NaN, no Infinity
        assert isinstance(record.email, str) and record.email and record.record["email"] == record.email
        given_properties = message.get("properties") if isinstance(message.get("properties"), dict) else {}
        if record.kind == "event" and "value" in record.record["properties"] and "value" not in given_properties:
            value = record.record["properties"]["value"]  # from revenue: integer cents in Drip's range
            assert type(value) is int and 0 <= value <= 2_147_483_647, value
        for key in record.record.get("custom_fields", {}):
            assert key and all(c.isascii() and (c.isalnum() or c == "_") for c in key), key
        assert all(isinstance(text, str) for text in record.record.get("custom_fields", {}).values())
