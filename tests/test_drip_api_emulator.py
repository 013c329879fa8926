"""The Drip REST API emulator at /emulator/api: Drip's answers, quotas, faults and the record of what it
accepted. Flask's test client where the socket does not matter; a real werkzeug server (httpx, raw
sockets) for what happens on the connection. Each test gets a fresh app, hence fresh state."""

from __future__ import annotations

import base64
import json
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from driptag.emulators.drip_api import (
    CONCURRENCY_MESSAGE,
    FAULTS,
    RATE_LIMIT_BODY,
    DripApiState,
    create_app,
    drip_api_for,
    serve_in_thread,
    start_server,
)

ACCOUNT, TOKEN = "83702741", "tok-83702741-secret"
OTHER_ACCOUNT, OTHER_TOKEN = "5550001", "tok-5550001-secret"
CAMPAIGN = "1234567"
API = "/emulator/api"
SUBSCRIBERS = f"{API}/v2/{ACCOUNT}/subscribers"
SUBSCRIBER_BATCHES = f"{API}/v2/{ACCOUNT}/subscribers/batches"
EVENTS = f"{API}/v2/{ACCOUNT}/events"
EVENT_BATCHES = f"{API}/v2/{ACCOUNT}/events/batches"
CAMPAIGN_SUBSCRIBERS = f"{API}/v2/{ACCOUNT}/campaigns/{CAMPAIGN}/subscribers"
UNAUTHORIZED = {"errors": [{"code": "authentication_error",
                            "message": "You must be authenticated to access this resource"}]}
NOT_FOUND = {"errors": [{"code": "not_found_error", "message": "The resource you requested was not found"}]}
CONCURRENCY = {"errors": [{"code": "rate_limit_error", "message": CONCURRENCY_MESSAGE}]}


class Clock:
    """A monotonic clock the test moves by hand (the quota windows read it)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make_app(clock: Clock | None = None, **overrides: Any):
    config = {
        "DRIP_API_TOKENS": {ACCOUNT: TOKEN, OTHER_ACCOUNT: OTHER_TOKEN},
        "DRIP_API_CAMPAIGNS": [CAMPAIGN],
        "DRIP_API_SINGLE_PER_HOUR": 20,
        "DRIP_API_BATCH_PER_HOUR": 2,
        "DRIP_API_WINDOW_SECONDS": 10,
    }
    if clock is not None:
        config["DRIP_API_CLOCK"] = clock
    config.update(overrides)
    return create_app(config)


@pytest.fixture
def app(clock):
    return make_app(clock)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def state(app) -> DripApiState:
    return drip_api_for(app)


def basic(token: str, password: str = "") -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{token}:{password}".encode()).decode()}


def post(client, path: str, body: Any, token: str | None = TOKEN, content_type: str = "application/json",
         headers: dict[str, str] | None = None):
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    all_headers = dict(basic(token) if token is not None else {}, **(headers or {}))
    return client.post(path, data=data, content_type=content_type, headers=all_headers)


def person(email: str = "ada@example.com", **fields: Any) -> dict[str, Any]:
    return {"email": email, **fields}


def event(email: str = "ada@example.com", action: str = "Signed up", **fields: Any) -> dict[str, Any]:
    return {"email": email, "action": action, **fields}


def check(response, status: int, body: Any = ..., **headers: str) -> None:
    """Exact status, JSON body (when given) and headers (when given), with what came instead."""
    got_body = response.get_json(silent=True)
    assert response.status_code == status, (
        f"expected {status}, got {response.status_code}: {response.get_data(as_text=True)[:400]!r}")
    if body is not ...:
        assert got_body == body, f"body: {got_body!r}"
    for name, value in headers.items():
        header = name.replace("_", "-")
        assert response.headers.get(header) == value, (
            f"{header}: expected {value!r}, got {response.headers.get(header)!r}")


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


def records(state: DripApiState, kind: str) -> list[dict[str, Any]]:
    """The accepted records of a kind without their arrival index and time."""
    return [{k: v for k, v in item.items() if k not in ("n", "time")} for item in state.received()[kind]]


def nothing_accepted(state: DripApiState) -> None:
    received = state.received()
    assert received == {"subscribers": [], "events": [], "campaign_subscriptions": [], "skipped": []}, received


# -------------------------------------------------------------------------------------------------
# What Drip answers when all is well


def test_subscriber_upsert_answers_200_with_the_subscriber_as_drip_shows_it(client, state):
    response = post(client, SUBSCRIBERS, {"subscribers": [person(
        user_id="u1", first_name="Ada", time_zone="America/Los_Angeles", tags=["Customer"],
        custom_fields={"plan": "pro"})]})
    check(response, 200, X_RateLimit_Limit="20", X_RateLimit_Remaining="19")
    shown = response.get_json()["subscribers"][0]
    assert re.fullmatch(r"[0-9a-f]{20}", shown.get("id", "")), shown
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", shown.get("created_at", "")), shown
    assert response.get_json() == {
        "links": {"subscribers.account": "http://localhost/emulator/api/v2/accounts/{subscribers.account}"},
        "subscribers": [{
            "id": shown["id"], "status": "active", "email": "ada@example.com", "user_id": "u1",
            "first_name": "Ada", "time_zone": "America/Los_Angeles", "tags": ["Customer"],
            "custom_fields": {"plan": "pro"}, "created_at": shown["created_at"], "links": {"account": ACCOUNT},
            "href": f"http://localhost/emulator/api/v2/{ACCOUNT}/subscribers/{shown['id']}",
        }],
    }
    assert records(state, "subscribers") == [{"account": ACCOUNT, "via": "single", "record": person(
        user_id="u1", first_name="Ada", time_zone="America/Los_Angeles", tags=["Customer"],
        custom_fields={"plan": "pro"})}]


def test_a_second_upsert_merges_custom_fields_adds_and_removes_tags_and_keeps_the_id(client, state):
    first = post(client, SUBSCRIBERS, {"subscribers": [person(tags=["A", "B"], custom_fields={"x": "1", "y": "2"})]})
    second = post(client, SUBSCRIBERS, {"subscribers": [person(
        email="ADA@example.com", tags=["C"], remove_tags=["A"], custom_fields={"y": "3"}, last_name="L")]})
    check(second, 200)
    now = state.subscriber(ACCOUNT, "ada@example.com")
    assert now is not None and now["id"] == first.get_json()["subscribers"][0]["id"], now
    assert (now["email"], now["tags"], now["custom_fields"], now["last_name"]) == (
        "ADA@example.com", ["B", "C"], {"x": "1", "y": "3"}, "L"), now


def test_new_email_moves_the_subscriber_to_the_new_address(client, state):
    post(client, SUBSCRIBERS, {"subscribers": [person(custom_fields={"k": "v"})]})
    check(post(client, SUBSCRIBERS, {"subscribers": [person(new_email="ada@new.example")]}), 200)
    assert state.subscriber(ACCOUNT, "ada@example.com") is None
    moved = state.subscriber(ACCOUNT, "ada@new.example")
    assert moved is not None and (moved["email"], moved["custom_fields"]) == ("ada@new.example", {"k": "v"}), moved


def test_an_event_answers_204_without_a_body_and_is_recorded(client, state):
    sent = event(properties={"value": 1999, "plan": "pro"}, occurred_at="2024-05-01T10:00:00Z", prospect=True)
    response = post(client, EVENTS, {"events": [sent]})
    check(response, 204, X_RateLimit_Limit="20", X_RateLimit_Remaining="19")
    assert response.get_data() == b""
    assert records(state, "events") == [{"account": ACCOUNT, "via": "single", "record": sent}]


def test_a_subscriber_batch_answers_201_with_an_empty_object_and_records_each_person(client, state):
    people = [person(f"p{i}@example.com", tags=["T"]) for i in range(3)]
    response = post(client, SUBSCRIBER_BATCHES, {"batches": [{"subscribers": people}]})
    check(response, 201, {}, X_RateLimit_Limit="2", X_RateLimit_Remaining="1")
    assert records(state, "subscribers") == [{"account": ACCOUNT, "via": "batch", "record": p} for p in people]


def test_an_event_batch_answers_201_with_an_empty_object_and_records_each_event(client, state):
    sent = [event(f"p{i}@example.com", f"Action {i}") for i in range(3)]
    check(post(client, EVENT_BATCHES, {"batches": [{"events": sent}]}), 201, {},
          X_RateLimit_Limit="2", X_RateLimit_Remaining="1")
    assert records(state, "events") == [{"account": ACCOUNT, "via": "batch", "record": e} for e in sent]


def test_a_batch_of_exactly_1000_records_is_accepted(client, state):
    sent = [event(f"p{i}@example.com") for i in range(1000)]
    check(post(client, EVENT_BATCHES, {"batches": [{"events": sent}]}), 201, {})
    assert len(state.received()["events"]) == 1000


def test_a_campaign_subscription_answers_200_with_the_subscriber_and_records_the_campaign(client, state):
    sent = person(double_optin=False, custom_fields={"source": "form"})
    response = post(client, CAMPAIGN_SUBSCRIBERS, {"subscribers": [sent]})
    check(response, 200)
    assert [s["email"] for s in response.get_json()["subscribers"]] == ["ada@example.com"], response.get_json()
    assert records(state, "campaign_subscriptions") == [
        {"account": ACCOUNT, "via": "single", "campaign_id": CAMPAIGN, "record": sent}]
    assert state.subscriber(ACCOUNT, "ada@example.com")["custom_fields"] == {"source": "form"}


def test_a_campaign_that_does_not_exist_is_404_with_drips_body_and_nothing_is_recorded(client, state):
    check(post(client, f"{API}/v2/{ACCOUNT}/campaigns/999/subscribers", {"subscribers": [person()]}), 404,
          NOT_FOUND)
    nothing_accepted(state)


def test_json_api_media_type_is_accepted_like_application_json(client):
    check(post(client, EVENTS, {"events": [event()]}, content_type="application/vnd.api+json"), 204)


def test_drip_ignores_the_basic_password_so_the_emulator_does(client):
    check(client.post(EVENTS, json={"events": [event()]}, headers=basic(TOKEN, "anything")), 204)


# -------------------------------------------------------------------------------------------------
# Authentication and accounts


@pytest.mark.parametrize("headers", [
    {},
    basic("wrong-token"),
    {"Authorization": f"Bearer {TOKEN}"},
    {"Authorization": "Basic !!!not-base64"},
    basic(""),
], ids=["none", "wrong-token", "bearer", "bad-base64", "empty-user"])
def test_missing_or_wrong_credentials_are_401_with_drips_error_body(client, state, headers):
    response = client.post(EVENTS, json={"events": [event()]}, headers=headers)
    check(response, 401, UNAUTHORIZED, WWW_Authenticate='Basic realm="Drip API"')
    nothing_accepted(state)
    assert [r["auth"] for r in state.requests()] == [False]


def test_a_rejected_token_does_not_use_the_accounts_budget(client):
    post(client, EVENTS, {"events": [event()]}, token="wrong")
    check(post(client, EVENTS, {"events": [event()]}), 204, X_RateLimit_Remaining="19")


@pytest.mark.parametrize("account", ["999", OTHER_ACCOUNT], ids=["unknown-account", "another-users-account"])
def test_a_valid_token_on_an_account_it_cannot_use_is_404(client, state, account):
    # Drip authenticates the token, then looks the account up among the ones its user can see.
    check(post(client, f"{API}/v2/{account}/events", {"events": [event()]}), 404, NOT_FOUND)
    nothing_accepted(state)


# -------------------------------------------------------------------------------------------------
# Drip's checks of the body: 422 with {"errors": [{"code", "attribute", "message"}]}


def test_a_subscriber_without_an_email_is_422_presence_error(client, state):
    check(post(client, SUBSCRIBERS, {"subscribers": [{"first_name": "Ada"}]}), 422, {"errors": [
        {"code": "presence_error", "attribute": "subscribers[0].email", "message": "Email is required"}]})
    nothing_accepted(state)


def test_a_subscriber_found_by_drip_id_needs_no_email(client):
    check(post(client, SUBSCRIBERS, {"subscribers": [{"id": "z1togz2hcjrkpp5treip", "first_name": "A"}]}), 200)


@pytest.mark.parametrize("email", ["not-an-email", "a@b", "two@@example.com", "sp ace@example.com", 42],
                         ids=repr)
def test_an_invalid_email_is_422_email_error(client, state, email):
    check(post(client, EVENTS, {"events": [event(email)]}), 422, {"errors": [
        {"code": "email_error", "attribute": "events[0].email", "message": "Email is invalid"}]})
    nothing_accepted(state)


def test_a_campaign_subscription_needs_an_email_even_with_a_drip_id(client):
    check(post(client, CAMPAIGN_SUBSCRIBERS, {"subscribers": [{"id": "z1togz2hcjrkpp5treip"}]}), 422, {"errors": [
        {"code": "presence_error", "attribute": "subscribers[0].email", "message": "Email is required"}]})


@pytest.mark.parametrize("action", [None, ""], ids=["missing", "empty"])
def test_an_event_without_an_action_is_422_presence_error(client, state, action):
    sent = event() if action is None else event(action=action)
    if action is None:
        del sent["action"]
    check(post(client, EVENTS, {"events": [sent]}), 422, {"errors": [
        {"code": "presence_error", "attribute": "events[0].action", "message": "Action is required"}]})
    nothing_accepted(state)


@pytest.mark.parametrize("value", [-1, 2_147_483_648, 12.5, 100.0, "100", True, None], ids=repr)
def test_a_value_that_is_not_an_integer_from_0_to_2147483647_is_422_range_error(client, state, value):
    check(post(client, EVENTS, {"events": [event(properties={"value": value})]}), 422, {"errors": [
        {"code": "range_error", "attribute": "events[0].properties.value",
         "message": "Value must be an integer from 0 to 2147483647"}]})
    nothing_accepted(state)


@pytest.mark.parametrize("value", [0, 2_147_483_647])
def test_values_at_both_ends_of_the_range_are_accepted(client, value):
    check(post(client, EVENTS, {"events": [event(properties={"value": value})]}), 204)


def test_an_occurred_at_that_is_not_iso_8601_is_422_time_error(client):
    check(post(client, EVENTS, {"events": [event(occurred_at="yesterday")]}), 422, {"errors": [
        {"code": "time_error", "attribute": "events[0].occurred_at",
         "message": "Occurred at must be a valid time in ISO-8601 format"}]})


@pytest.mark.parametrize("field, value, message", [
    ("custom_fields", ["a"], "Custom fields must be an object"),
    ("tags", "Customer", "Tags must be an array of strings"),
    ("remove_tags", [1], "Remove tags must be an array of strings"),
    ("prospect", "yes", "Prospect must be true or false"),
    ("base_lead_score", "30", "Base lead score must be an integer"),
    ("lifetime_value", 10.5, "Lifetime value must be an integer"),
    ("eu_consent", "GRANTED", "Eu consent must be granted or denied"),
    ("time_zone", 3, "Time zone must be a string"),
])
def test_subscriber_fields_of_the_wrong_type_are_422_format_error(client, field, value, message):
    check(post(client, SUBSCRIBERS, {"subscribers": [person(**{field: value})]}), 422, {"errors": [
        {"code": "format_error", "attribute": f"subscribers[0].{field}", "message": message}]})


def test_every_problem_of_a_record_is_listed(client):
    check(post(client, EVENTS, {"events": [{"email": "x", "properties": {"value": -5}}]}), 422, {"errors": [
        {"code": "email_error", "attribute": "events[0].email", "message": "Email is invalid"},
        {"code": "presence_error", "attribute": "events[0].action", "message": "Action is required"},
        {"code": "range_error", "attribute": "events[0].properties.value",
         "message": "Value must be an integer from 0 to 2147483647"}]})


def test_a_batch_over_1000_records_is_422_length_error_and_nothing_is_recorded(client, state):
    sent = [event(f"p{i}@example.com") for i in range(1001)]
    check(post(client, EVENT_BATCHES, {"batches": [{"events": sent}]}), 422, {"errors": [
        {"code": "length_error", "attribute": "batches[0].events",
         "message": "A batch must contain between 1 and 1000 events, not 1001"}]})
    nothing_accepted(state)


def test_an_empty_batch_is_422_length_error(client):
    check(post(client, SUBSCRIBER_BATCHES, {"batches": [{"subscribers": []}]}), 422, {"errors": [
        {"code": "length_error", "attribute": "batches[0].subscribers",
         "message": "A batch must contain between 1 and 1000 subscribers, not 0"}]})


def test_more_than_one_batch_in_a_request_is_422(client):
    body = {"batches": [{"events": [event()]}, {"events": [event()]}]}
    check(post(client, EVENT_BATCHES, body), 422, {"errors": [
        {"code": "length_error", "attribute": "batches", "message": "Batches must contain exactly one batch"}]})


def test_one_bad_record_rejects_the_whole_batch_with_its_position(client, state):
    sent = [event("a@example.com"), event("broken"), event("c@example.com")]
    check(post(client, EVENT_BATCHES, {"batches": [{"events": sent}]}), 422, {"errors": [
        {"code": "email_error", "attribute": "batches[0].events[1].email", "message": "Email is invalid"}]})
    nothing_accepted(state)


def test_a_batch_record_that_is_not_an_object_is_422_format_error(client):
    check(post(client, SUBSCRIBER_BATCHES, {"batches": [{"subscribers": [person(), "b@example.com"]}]}), 422,
          {"errors": [{"code": "format_error", "attribute": "batches[0].subscribers[1]",
                       "message": "Subscriber must be an object"}]})


def test_with_batch_invalid_skip_the_valid_records_are_taken_and_the_others_listed(clock):
    app = make_app(clock, DRIP_API_BATCH_INVALID="skip")
    state = drip_api_for(app)
    sent = [event("a@example.com"), event("broken"), event("c@example.com")]
    check(post(app.test_client(), EVENT_BATCHES, {"batches": [{"events": sent}]}), 201, {})
    assert records(state, "events") == [{"account": ACCOUNT, "via": "batch", "record": sent[0]},
                                        {"account": ACCOUNT, "via": "batch", "record": sent[2]}]
    assert records(state, "skipped") == [{"account": ACCOUNT, "kind": "events", "record": sent[1], "errors": [
        {"code": "email_error", "attribute": "batches[0].events[1].email", "message": "Email is invalid"}]}]


def test_a_single_endpoint_takes_exactly_one_record(client, state):
    check(post(client, SUBSCRIBERS, {"subscribers": [person("a@example.com"), person("b@example.com")]}), 422,
          {"errors": [{"code": "length_error", "attribute": "subscribers",
                       "message": "Subscribers must contain exactly one subscriber"}]})
    nothing_accepted(state)


@pytest.mark.parametrize("path, body, attribute, expected", [
    (EVENTS, [event()], "events", '{"events": [one event object]}'),
    (EVENTS, {"event": event()}, "events", '{"events": [one event object]}'),
    (SUBSCRIBERS, {"subscribers": person()}, "subscribers", '{"subscribers": [one subscriber object]}'),
    (EVENT_BATCHES, {"events": [event()]}, "batches", '{"batches": [{"events": [1 to 1000 events]}]}'),
    (SUBSCRIBER_BATCHES, {"batches": [[person()]]}, "batches[0].subscribers",
     '{"batches": [{"subscribers": [1 to 1000 subscribers]}]}'),
    (EVENTS, "just a string", "events", '{"events": [one event object]}'),
], ids=["array", "wrong-key", "object-not-list", "batch-without-batches", "batch-not-object", "string"])
def test_a_body_of_the_wrong_shape_is_422_parsing_error(client, state, path, body, attribute, expected):
    message = f"JSON parsing error: the body must be {expected}"
    check(post(client, path, json.dumps(body)), 422, {"errors": [
        {"code": "parsing_error", "attribute": attribute, "message": message}]})
    nothing_accepted(state)


# -------------------------------------------------------------------------------------------------
# Bodies that are not JSON: 400, 413, 415 (never a 500)


def test_malformed_json_is_400_parsing_error(client, state):
    check(post(client, EVENTS, b'{"events": [}'), 400, {"errors": [{"code": "parsing_error", "message":
          "JSON parsing error: Expecting value: line 1 column 13 (char 12)"}]})
    nothing_accepted(state)


@pytest.mark.parametrize("raw, message", [
    (b"", "the request body is empty"),
    (b"  \n", "the request body is empty"),
    (b'{"events": [{"email": "a@example.com", "action": "A", "properties": {"value": NaN}}]}',
     "NaN is not valid JSON"),
    (b'{"events": [{"email": "a@example.com", "action": "A", "properties": {"n": 1e400}}]}',
     "the number 1e400 is beyond a double's range"),
    (b'{"events": [{"email": "\xff@example.com"}]}',
     "'utf-8' codec can't decode byte 0xff in position 23: invalid start byte"),
], ids=["empty", "blank", "nan", "huge-number", "not-utf-8"])
def test_bodies_that_are_not_json_are_400(client, raw, message):
    check(post(client, EVENTS, raw), 400, {"errors": [{"code": "parsing_error",
                                                      "message": f"JSON parsing error: {message}"}]})


def nested(depth: int) -> Any:
    value: Any = "deep"
    for _ in range(depth - 3):  # the body, "events" list and the event object are three levels
        value = [value]
    return value


def test_nesting_of_100_levels_is_accepted_and_101_is_400_as_in_drips_json_parser(client, state):
    check(post(client, EVENTS, {"events": [event(properties={"x": nested(99)})]}), 204)
    check(post(client, EVENTS, {"events": [event(properties={"x": nested(100)})]}), 400, {"errors": [
        {"code": "parsing_error", "message": "JSON parsing error: nesting of 101 is too deep"}]})


def test_nesting_far_beyond_the_recursion_limit_is_400_not_500(client):
    body = b'{"events": [' + b"[" * 100_000 + b"]" * 100_000 + b"]}"
    check(post(client, EVENTS, body), 400, {"errors": [
        {"code": "parsing_error", "message": "JSON parsing error: nesting deeper than 100 levels"}]})


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", ""])
def test_a_body_not_sent_as_json_is_415(client, state, content_type):
    message = "The request body must be JSON, sent with Content-Type: application/json"
    check(post(client, EVENTS, json.dumps({"events": [event()]}), content_type=content_type), 415,
          {"errors": [{"code": "format_error", "message": message}]})
    nothing_accepted(state)


def test_a_body_over_the_limit_is_413_and_one_at_the_limit_is_taken(clock):
    app = make_app(clock, DRIP_API_MAX_BODY_BYTES=200)
    client = app.test_client()
    body = json.dumps({"events": [event(properties={"pad": ""})]})
    exact = json.dumps({"events": [event(properties={"pad": "x" * (200 - len(body))})]})
    assert len(exact) == 200
    check(post(client, EVENTS, exact), 204)
    check(post(client, EVENTS, exact[:-2] + ' }]}'), 413, {"errors": [
        {"code": "request_entity_too_large", "message": "The request body is larger than 200 bytes"}]})


def test_a_chunked_body_over_the_limit_is_413_on_a_real_server(clock):
    app = make_app(clock, DRIP_API_MAX_BODY_BYTES=200)
    with serve_in_thread(app) as base:
        def chunks() -> Iterator[bytes]:
            yield b'{"events": [{"email": "a@example.com", "action": "A", "properties": {"pad": "'
            yield b"x" * 300
            yield b'"}}]}'
        response = httpx.post(base + EVENTS, content=chunks(), headers=dict(basic(TOKEN), **{
            "Content-Type": "application/json"}))
    assert response.status_code == 413 and response.json() == {"errors": [
        {"code": "request_entity_too_large", "message": "The request body is larger than 200 bytes"}]}, response.text


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.sampled_from(["email", "action", "properties", "value", "subscribers", "events", "batches", "tags",
                         "custom_fields", "occurred_at", "new_email", "x"]), children, max_size=5),
    max_leaves=30)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.sampled_from([SUBSCRIBERS, SUBSCRIBER_BATCHES, EVENTS, EVENT_BATCHES, CAMPAIGN_SUBSCRIBERS]),
       body=JSON_VALUES | st.binary(max_size=60).map(lambda b: ("raw", b)))
def test_any_body_gets_a_drip_answer_never_a_500(path, body):
    app = make_app(None, DRIP_API_SINGLE_PER_HOUR=10**6, DRIP_API_BATCH_PER_HOUR=10**6)
    raw = body[1] if isinstance(body, tuple) and body and body[0] == "raw" else json.dumps(body).encode()
    response = post(app.test_client(), path, raw)
    assert response.status_code in (200, 201, 204, 400, 422), (response.status_code, raw[:200])
    if response.status_code >= 400:
        errors = response.get_json()["errors"]
        assert errors and all(isinstance(e.get("code"), str) and isinstance(e.get("message"), str)
                              for e in errors), errors


# -------------------------------------------------------------------------------------------------
# Quotas: per account, single endpoints share one budget and batch endpoints another


def test_single_endpoints_share_one_budget_and_every_answer_says_what_is_left(client):
    remaining = []
    for path, body in [(SUBSCRIBERS, {"subscribers": [person()]}), (EVENTS, {"events": [event()]}),
                       (CAMPAIGN_SUBSCRIBERS, {"subscribers": [person()]}), (EVENTS, {"events": [{}]})]:
        response = post(client, path, body)
        assert response.headers["X-RateLimit-Limit"] == "20", response.headers
        remaining.append((response.status_code, response.headers["X-RateLimit-Remaining"]))
    assert remaining == [(200, "19"), (204, "18"), (200, "17"), (422, "16")], remaining


def test_batch_endpoints_share_their_own_budget(client):
    post(client, EVENTS, {"events": [event()]})
    check(post(client, SUBSCRIBER_BATCHES, {"batches": [{"subscribers": [person()]}]}), 201,
          X_RateLimit_Limit="2", X_RateLimit_Remaining="1")
    check(post(client, EVENT_BATCHES, {"batches": [{"events": [event()]}]}), 201,
          X_RateLimit_Limit="2", X_RateLimit_Remaining="0")


def test_past_the_quota_drip_answers_429_with_its_body_and_nothing_is_recorded(client, state):
    for _ in range(2):
        post(client, EVENT_BATCHES, {"batches": [{"events": [event()]}]})
    state.clear()
    response = post(client, SUBSCRIBER_BATCHES, {"batches": [{"subscribers": [person()]}]})
    check(response, 429, RATE_LIMIT_BODY, X_RateLimit_Limit="2", X_RateLimit_Remaining="0")
    assert "Retry-After" not in response.headers, response.headers
    nothing_accepted(state)


def test_with_retry_after_on_the_429_says_when_the_oldest_request_leaves_the_window(clock):
    client = make_app(clock, DRIP_API_RETRY_AFTER=True).test_client()
    post(client, EVENT_BATCHES, {"batches": [{"events": [event()]}]})
    clock.now += 3.2
    post(client, EVENT_BATCHES, {"batches": [{"events": [event()]}]})
    check(post(client, EVENT_BATCHES, {"batches": [{"events": [event()]}]}), 429, RATE_LIMIT_BODY,
          Retry_After="7")  # the first leaves the 10 s window 6.8 s from now


def test_the_window_slides_each_request_frees_its_place_when_it_leaves(client, clock):
    post(client, EVENT_BATCHES, {"batches": [{"events": [event()]}]})
    clock.now += 4
    post(client, EVENT_BATCHES, {"batches": [{"events": [event()]}]})
    clock.now += 5.9  # 9.9 s after the first
    check(post(client, EVENT_BATCHES, {"batches": [{"events": [event()]}]}), 429)
    clock.now += 0.1  # the first has left the window; the second has not
    check(post(client, EVENT_BATCHES, {"batches": [{"events": [event()]}]}), 201, X_RateLimit_Remaining="0")


def test_a_429_does_not_use_the_budget(client, clock):
    for _ in range(3):
        post(client, EVENT_BATCHES, {"batches": [{"events": [event()]}]})
    clock.now += 10
    check(post(client, EVENT_BATCHES, {"batches": [{"events": [event()]}]}), 201, X_RateLimit_Remaining="1")


def test_each_account_has_its_own_budget(client):
    for _ in range(2):
        post(client, EVENT_BATCHES, {"batches": [{"events": [event()]}]})
    check(post(client, f"{API}/v2/{OTHER_ACCOUNT}/events/batches", {"batches": [{"events": [event()]}]},
               token=OTHER_TOKEN), 201, X_RateLimit_Remaining="1")


def test_reset_quotas_empties_every_window(client, state):
    for _ in range(2):
        post(client, EVENT_BATCHES, {"batches": [{"events": [event()]}]})
    state.reset_quotas()
    check(post(client, EVENT_BATCHES, {"batches": [{"events": [event()]}]}), 201, X_RateLimit_Remaining="1")


def test_requests_racing_for_the_last_places_never_exceed_the_quota(served, state):
    # 40 requests at once for a budget of 20 (all for different people): exactly 20 are taken.
    threads = [in_thread(lambda i=i: api_post(served, EVENTS, {"events": [event(f"p{i}@example.com")]}))
               for i in range(40)]
    for thread, _ in threads:
        thread.join(10)
    statuses = sorted(out[0].status_code if isinstance(out[0], httpx.Response) else repr(out[0])
                      for _, out in threads)
    assert statuses == [204] * 20 + [429] * 20, statuses
    assert len(state.received()["events"]) == 20


# -------------------------------------------------------------------------------------------------
# Fault injection


def inject(client, **body: Any):
    return client.post(f"{API}/_faults", json=body)


@pytest.mark.parametrize("fault, status, content_type, body", [
    ("500", 500, "application/json", {"errors": [{"code": "server_error",
                                                 "message": "Internal server error (injected fault)"}]}),
    ("502", 502, "text/html; charset=utf-8", None),
    ("503", 503, "text/html; charset=utf-8", None),
    ("concurrency", 429, "application/json", CONCURRENCY),
    ("401", 401, "application/json", UNAUTHORIZED),
    ("422", 422, "application/json", {"errors": [{"code": "validation_error", "attribute": "email",
                                                 "message": "Invalid record (injected fault)"}]}),
])
def test_an_injected_fault_answers_instead_of_drip_and_nothing_is_recorded(client, state, fault, status,
                                                                          content_type, body):
    check(inject(client, fault=fault), 201, {"fault": fault, "remaining": 1, "path": None, "seconds": None})
    response = post(client, EVENTS, {"events": [event()]})
    check(response, status, Content_Type=content_type, X_RateLimit_Limit="20", X_RateLimit_Remaining="20")
    if body is None:
        assert response.get_data(as_text=True).startswith(f"<html><head><title>{status} "), response.get_data()
    else:
        assert response.get_json() == body, response.get_json()
    nothing_accepted(state)
    assert [(r["status"], r["fault"]) for r in state.requests()] == [(status, fault)]
    check(post(client, EVENTS, {"events": [event()]}), 204)  # the fault is used up


def test_an_injected_429_carries_retry_after_and_the_no_retry_after_one_does_not(client):
    inject(client, fault="429", seconds=7)
    inject(client, fault="429-no-retry-after")
    first = post(client, EVENTS, {"events": [event()]})
    second = post(client, EVENTS, {"events": [event()]})
    check(first, 429, RATE_LIMIT_BODY, Retry_After="7", X_RateLimit_Remaining="0")
    check(second, 429, RATE_LIMIT_BODY, X_RateLimit_Remaining="0")
    assert "Retry-After" not in second.headers, second.headers


def test_a_fault_with_a_count_answers_that_many_requests(client, state):
    inject(client, fault="503", count=3)
    statuses = [post(client, EVENTS, {"events": [event()]}).status_code for _ in range(4)]
    assert statuses == [503, 503, 503, 204], statuses


def test_a_fault_with_a_path_only_hits_requests_whose_path_contains_it(client):
    inject(client, fault="500", path="/events/batches")
    check(post(client, EVENTS, {"events": [event()]}), 204)
    check(post(client, SUBSCRIBER_BATCHES, {"batches": [{"subscribers": [person()]}]}), 201)
    check(post(client, EVENT_BATCHES, {"batches": [{"events": [event()]}]}), 500)


def test_faults_are_used_in_the_order_injected_listed_while_pending_and_cleared(client, state):
    inject(client, fault="500", count=2)
    state.inject("timeout", path="/subscribers")
    post(client, EVENTS, {"events": [event()]})
    check(client.get(f"{API}/_faults"), 200, {"faults": [
        {"fault": "500", "remaining": 1, "path": None, "seconds": None},
        {"fault": "timeout", "remaining": 1, "path": "/subscribers", "seconds": 10.0}]})
    check(client.delete(f"{API}/_faults"), 204)
    check(client.get(f"{API}/_faults"), 200, {"faults": []})
    check(post(client, EVENTS, {"events": [event()]}), 204)


@pytest.mark.parametrize("body, message", [
    ({"fault": "418"}, "fault must be one of " + ", ".join(FAULTS) + ", not '418'"),
    ({}, "fault is required: one of " + ", ".join(FAULTS)),
    ({"fault": "500", "count": 0}, "count must be an integer from 1 to 1000000, not 0"),
    ({"fault": "500", "count": "2"}, "count must be an integer from 1 to 1000000, not '2'"),
    ({"fault": "delay", "seconds": -1}, "seconds must be a number from 0 to 3600, not -1"),
    ({"fault": "500", "path": ""}, "path must be a non-empty string (part of the request path), not ''"),
    ({"fault": "500", "times": 2}, "unknown key 'times'; the keys are fault, count, path, seconds"),
    (["500"], 'the body must be a JSON object such as {"fault": "500", "count": 1}'),
    ("{not json", 'the body must be a JSON object such as {"fault": "500", "count": 1}'),
], ids=["unknown-fault", "no-fault", "count-0", "count-text", "negative-seconds", "empty-path", "unknown-key",
        "array", "not-json"])
def test_a_bad_fault_request_is_400_with_the_reason(client, state, body, message):
    data = body if isinstance(body, str) else json.dumps(body)
    check(client.post(f"{API}/_faults", data=data, content_type="application/json"), 400, {"error": message})
    assert state.faults() == []


def test_a_fault_given_as_a_number_is_accepted(client, state):
    check(inject(client, fault=502), 201, {"fault": "502", "remaining": 1, "path": None, "seconds": None})


@pytest.fixture
def served(app) -> Iterator[str]:
    with serve_in_thread(app) as base:
        yield base


def in_thread(function: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    """Run `function` in a thread; its result (or exception) lands in the returned list."""
    out: list[Any] = []

    def run() -> None:
        try:
            out.append(function())
        except Exception as exc:  # handed to the test
            out.append(exc)
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


def api_post(base: str, path: str, body: Any, timeout: float = 10.0) -> httpx.Response:
    return httpx.post(base + path, json=body, headers=basic(TOKEN), timeout=timeout)


def test_delay_handles_the_request_then_holds_the_answer(served, state):
    state.inject("delay", seconds=60)
    thread, out = in_thread(lambda: api_post(served, EVENTS, {"events": [event()]}))
    wait_for(lambda: state.received()["events"], "the delayed event to be recorded")
    assert out == [], f"answered before the delay ended: {out!r}"
    state.clear_faults()  # cuts the wait short
    thread.join(5)
    assert len(out) == 1 and isinstance(out[0], httpx.Response) and out[0].status_code == 204, out
    assert [(r["status"], r["fault"]) for r in state.requests()] == [(204, "delay")]


def test_a_second_request_for_a_subscriber_still_being_answered_gets_drips_concurrency_error(served, state):
    state.inject("delay", seconds=60, path="/subscribers")
    thread, out = in_thread(lambda: api_post(served, SUBSCRIBERS, {"subscribers": [person()]}))
    wait_for(lambda: state.received()["subscribers"], "the first upsert to be recorded")
    second = api_post(served, EVENTS, {"events": [event("ADA@example.com")]})
    other_person = api_post(served, EVENTS, {"events": [event("bob@example.com")]})
    state.clear_faults()
    thread.join(5)
    assert (second.status_code, second.json()) == (429, CONCURRENCY), (second.status_code, second.text)
    assert "Retry-After" not in second.headers, second.headers
    # Drip: this rate limit does not consume the account's budget.
    assert (second.headers["X-RateLimit-Remaining"], other_person.status_code,
            other_person.headers["X-RateLimit-Remaining"]) == ("19", 204, "18"), (second.headers, other_person)
    assert [r["record"]["email"] for r in state.received()["events"]] == ["bob@example.com"]
    assert isinstance(out[0], httpx.Response) and out[0].status_code == 200, out


def test_without_the_concurrency_check_overlapping_requests_are_both_taken(clock):
    app = make_app(clock, DRIP_API_CONCURRENCY_CHECK=False)
    state = drip_api_for(app)
    with serve_in_thread(app) as base:
        state.inject("delay", seconds=60, path="/subscribers")
        thread, out = in_thread(lambda: api_post(base, SUBSCRIBERS, {"subscribers": [person()]}))
        wait_for(lambda: state.received()["subscribers"], "the first upsert to be recorded")
        assert api_post(base, EVENTS, {"events": [event()]}).status_code == 204
        state.clear_faults()
        thread.join(5)
    assert isinstance(out[0], httpx.Response) and out[0].status_code == 200, out


def test_timeout_holds_the_request_then_answers_504_and_takes_nothing(served, state):
    state.inject("timeout", seconds=60)
    with pytest.raises(httpx.ReadTimeout):
        api_post(served, EVENTS, {"events": [event()]}, timeout=0.2)
    state.clear_faults()  # the held request now answers
    entry = wait_for(lambda: state.requests(), "the held request to be answered")[0]
    assert (entry["status"], entry["fault"]) == (504, "timeout"), entry
    nothing_accepted(state)


def test_timeout_answers_a_gateway_504_page_when_the_hold_ends(served, state):
    state.inject("timeout", seconds=0.05)
    response = api_post(served, EVENTS, {"events": [event()]})
    assert (response.status_code, response.headers["Content-Type"], response.text) == (
        504, "text/html; charset=utf-8",
        "<html><head><title>504 Gateway Time-out</title></head><body><h1>504 Gateway Time-out</h1></body></html>\n")
    nothing_accepted(state)


def test_drop_closes_the_connection_without_an_answer(served, state):
    state.inject("drop")
    with pytest.raises(httpx.RemoteProtocolError, match="^Server disconnected without sending a response.$"):
        api_post(served, EVENTS, {"events": [event()]})
    assert [(r["status"], r["fault"]) for r in state.requests()] == [(None, "drop")]
    nothing_accepted(state)
    assert api_post(served, EVENTS, {"events": [event()]}).status_code == 204


def test_reset_resets_the_connection_in_the_middle_of_the_response(served, state):
    state.inject("reset")
    with pytest.raises(httpx.ReadError, match="Connection reset by peer"):
        api_post(served, EVENTS, {"events": [event()]})
    assert [(r["status"], r["fault"]) for r in state.requests()] == [(None, "reset")]
    nothing_accepted(state)


def test_reset_sends_the_status_line_headers_and_part_of_the_body_before_the_rst(served, state):
    state.inject("reset")
    host, port = served.removeprefix("http://").split(":")
    body = json.dumps({"events": [event()]}).encode()
    head = (f"POST {EVENTS} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nAuthorization: {basic(TOKEN)['Authorization']}\r\n\r\n").encode()
    received = b""
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(head + body)
        with pytest.raises(ConnectionResetError):
            while chunk := sock.recv(65536):
                received += chunk
    assert received.startswith(b"HTTP/1.1 200 OK\r\n") and received.endswith(b'\r\n\r\n{"subscribers": [{"email": "'), (
        received)


# -------------------------------------------------------------------------------------------------
# The record of what was received


def test_received_lists_each_kind_and_every_request_with_arrival_indexes(client, state):
    post(client, SUBSCRIBERS, {"subscribers": [person()]})
    post(client, EVENTS, {"events": [event()]}, token="wrong")
    response = client.get(f"{API}/_received")
    check(response, 200)
    data = response.get_json()
    assert sorted(data) == ["campaign_subscriptions", "events", "last", "requests", "skipped", "subscribers"], data
    assert [(s["n"], s["account"], s["via"], s["record"]) for s in data["subscribers"]] == [
        (2, ACCOUNT, "single", person())], data["subscribers"]
    requests = [{k: v for k, v in r.items() if k != "time"} for r in data["requests"]]
    assert requests == [
        {"n": 1, "method": "POST", "path": SUBSCRIBERS, "account": ACCOUNT, "status": 200, "fault": None,
         "auth": True, "body": {"subscribers": [person()]}},
        {"n": 3, "method": "POST", "path": EVENTS, "account": ACCOUNT, "status": 401, "fault": None,
         "auth": False, "body": {"events": [event()]}},
    ], requests
    assert data["last"] == 3 and all(isinstance(r["time"], float) for r in data["requests"]), data


def test_received_after_keeps_only_what_came_later(client):
    post(client, EVENTS, {"events": [event("a@example.com")]})
    post(client, EVENTS, {"events": [event("b@example.com")]})
    data = client.get(f"{API}/_received?after=2").get_json()
    assert ([e["record"]["email"] for e in data["events"]], [r["n"] for r in data["requests"]]) == (
        ["b@example.com"], [3]), data
    check(client.get(f"{API}/_received?after=-1"), 400,
          {"error": "after must be an arrival index (a non-negative integer)"})


def test_delete_received_clears_records_and_requests_but_indexes_keep_counting(client, state):
    post(client, EVENTS, {"events": [event()]})
    check(client.delete(f"{API}/_received"), 204)
    nothing_accepted(state)
    assert state.requests() == []
    post(client, EVENTS, {"events": [event()]})
    assert [e["n"] for e in state.received()["events"]] == [4], state.received()


def test_clearing_received_keeps_faults_and_quotas(client, state):
    post(client, EVENTS, {"events": [event()]})
    inject(client, fault="502")
    check(client.delete(f"{API}/_received"), 204)
    assert [f["fault"] for f in state.faults()] == ["502"], state.faults()
    check(post(client, EVENTS, {"events": [event()]}), 502, X_RateLimit_Remaining="19")
    check(post(client, EVENTS, {"events": [event()]}), 204, X_RateLimit_Remaining="18")


def test_a_body_that_is_not_json_is_logged_as_text_cut_to_1000_characters(client, state):
    post(client, EVENTS, "x" * 5000)
    assert state.requests()[0]["body"] == "x" * 1000


def test_the_token_never_appears_in_what_the_emulator_shows(client):
    post(client, EVENTS, {"events": [event()]})
    post(client, EVENTS, {"events": [event()]}, token=TOKEN + "-typo")
    shown = client.get(f"{API}/_received").get_data(as_text=True)
    assert TOKEN not in shown and base64.b64encode(f"{TOKEN}:".encode()).decode() not in shown


@pytest.mark.parametrize("method, path", [
    ("GET", SUBSCRIBERS),
    ("POST", f"{API}/v2/{ACCOUNT}/tags"),
    ("DELETE", f"{API}/v2/{ACCOUNT}/subscribers/ada@example.com"),
    ("POST", f"{API}/v2/{ACCOUNT}"),
])
def test_paths_and_methods_the_emulator_does_not_serve_are_drips_404(client, state, method, path):
    response = client.open(path, method=method, headers=basic(TOKEN), json={})
    check(response, 404, NOT_FOUND)
    assert [(r["method"], r["path"], r["status"]) for r in state.requests()] == [(method, path, 404)]


# -------------------------------------------------------------------------------------------------
# The app and the server


@pytest.mark.parametrize("config, message", [
    ({"DRIP_API_TOKENS": ["tok"]}, "DRIP_API_TOKENS must map account IDs to API tokens, not a list"),
    ({"DRIP_API_TOKENS": {"1": ""}}, "DRIP_API_TOKENS: the token of account 1 must be a non-empty string"),
    ({"DRIP_API_TOKENS": {True: "t"}}, "DRIP_API_TOKENS: True is not an account ID"),
    ({"DRIP_API_CAMPAIGNS": [1.5]}, "DRIP_API_CAMPAIGNS: 1.5 is not a campaign ID"),
    ({"DRIP_API_SINGLE_PER_HOUR": -1}, "DRIP_API_SINGLE_PER_HOUR must be a non-negative integer, not -1"),
    ({"DRIP_API_BATCH_PER_HOUR": "50"}, "DRIP_API_BATCH_PER_HOUR must be a non-negative integer, not '50'"),
    ({"DRIP_API_WINDOW_SECONDS": 0}, "DRIP_API_WINDOW_SECONDS must be a positive number of seconds, not 0"),
    ({"DRIP_API_RETRY_AFTER": "yes"}, "DRIP_API_RETRY_AFTER must be true or false, not 'yes'"),
    ({"DRIP_API_BATCH_INVALID": "drop"}, "DRIP_API_BATCH_INVALID must be one of reject, skip, not 'drop'"),
])
def test_create_app_refuses_a_wrong_setting_naming_it(config, message):
    with pytest.raises(ValueError) as caught:
        create_app(config)
    assert str(caught.value) == message


def test_a_campaign_id_given_on_its_own_or_as_a_number_is_one_campaign():
    for campaigns in (CAMPAIGN, int(CAMPAIGN), [int(CAMPAIGN)]):
        app = make_app(None, DRIP_API_CAMPAIGNS=campaigns)
        check(post(app.test_client(), CAMPAIGN_SUBSCRIBERS, {"subscribers": [person()]}), 200)


def test_the_server_listens_on_127_0_0_1_and_stops(app):
    base, shutdown = start_server(app)
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", base), base
    assert httpx.get(base + f"{API}/_faults").json() == {"faults": []}
    shutdown()
    with pytest.raises(httpx.ConnectError):
        httpx.get(base + f"{API}/_faults", timeout=2)
    shutdown()  # a second call does nothing


def test_stopping_the_server_releases_requests_held_by_a_fault(app, state):
    base, shutdown = start_server(app)
    state.inject("timeout", seconds=600)
    thread, out = in_thread(lambda: api_post(base, EVENTS, {"events": [event()]}))
    wait_for(lambda: state.faults() == [], "the held request to take the fault")
    shutdown()
    thread.join(5)
    assert not thread.is_alive() and isinstance(out[0], httpx.Response) and out[0].status_code == 504, out

