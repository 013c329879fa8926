"""The senders' decisions, with a real spool and a scripted Drip: per-person order, batches for backlogs,
budgets that are never exceeded, and what each of Drip's answers leads to."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from driptag.relay import delivery
from driptag.relay.config import RateLimits, parse_config
from driptag.relay.delivery import Request, Sender, next_records, request_for
from driptag.relay.drip_client import DripAnswer
from driptag.relay.metrics import Metrics
from driptag.relay.spool import Pending, Spool

TOKEN = "abcdefghij0123456789XYZW"
ACCOUNT = "83702741"


def pending(seq: int, person: str, kind: str = "event", *, not_before: float = 0.0, single_only: bool = False,
            campaign_id: str | None = None, accepted_at: float = 0.0) -> Pending:
    return Pending(seq, 1, person, kind, campaign_id, {"n": seq}, None, None, accepted_at, 0, not_before, single_only)


# --- which records may go together ------------------------------------------------------------------

def test_a_persons_later_record_waits_for_the_earlier_one_of_another_kind():
    rows = [pending(1, "a", "subscriber"), pending(2, "a", "event"), pending(3, "b", "subscriber")]
    assert [r.seq for r in next_records(rows, now=10)] == [1, 3]


def test_a_persons_consecutive_events_share_a_batch_in_order():
    rows = [pending(1, "a"), pending(2, "b"), pending(3, "a"), pending(4, "a", "subscriber"), pending(5, "a")]
    assert [r.seq for r in next_records(rows, now=10)] == [1, 2, 3]


def test_one_upsert_per_person_per_request():
    rows = [pending(1, "a", "subscriber"), pending(2, "a", "subscriber"), pending(3, "b", "subscriber")]
    assert [r.seq for r in next_records(rows, now=10)] == [1, 3]


def test_a_record_that_must_wait_holds_back_its_persons_later_records():
    rows = [pending(1, "a", not_before=50), pending(2, "a"), pending(3, "b")]
    assert [r.seq for r in next_records(rows, now=10)] == [3]


def test_a_campaign_subscription_or_a_single_only_record_goes_alone():
    assert [r.seq for r in next_records([pending(1, "a", "campaign", campaign_id="9"), pending(2, "b")], 10)] == [1]
    assert [r.seq for r in next_records([pending(1, "a", single_only=True), pending(2, "b")], 10)] == [1]


def test_at_most_a_thousand_records_go_together():
    rows = [pending(n, f"p{n}") for n in range(1, 1500)]
    assert len(next_records(rows, now=10)) == 1000


# --- the requests -----------------------------------------------------------------------------------

def test_requests_have_drips_paths_and_bodies():
    event, person = pending(1, "a"), pending(2, "b", "subscriber")
    campaign = pending(3, "c", "campaign", campaign_id="1234567")
    assert request_for(ACCOUNT, [event], batch=False) == Request(
        "single", "/v2/83702741/events", {"events": [{"n": 1}]}, [event])
    assert request_for(ACCOUNT, [person], batch=False) == Request(
        "single", "/v2/83702741/subscribers", {"subscribers": [{"n": 2}]}, [person])
    assert request_for(ACCOUNT, [event, event], batch=True) == Request(
        "batch", "/v2/83702741/events/batches", {"batches": [{"events": [{"n": 1}, {"n": 1}]}]}, [event, event])
    assert request_for(ACCOUNT, [campaign], batch=True) == Request(
        "single", "/v2/83702741/campaigns/1234567/subscribers", {"subscribers": [{"n": 3}]}, [campaign])


# --- a sender against a scripted Drip ---------------------------------------------------------------

class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class ScriptedDrip:
    """Answers from a script (default 200) and records every request."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.answers: list[DripAnswer] = []
        self.tokens: list[str] = []

    def post(self, token: str, path: str, body: dict[str, Any]) -> DripAnswer:
        self.requests.append((path, body))
        self.tokens.append(token)
        return self.answers.pop(0) if self.answers else DripAnswer(200)


@pytest.fixture
def world(tmp_path):
    clock = Clock()
    spool = Spool(tmp_path / "spool.sqlite3", clock=clock)
    drip = ScriptedDrip()
    config = parse_config({"sources": [{"writeKey": "wk", "account": ACCOUNT, "apiToken": TOKEN,
                                        "rateLimits": {"single": 5, "batch": 2, "windowSeconds": 60}}]},
                          "relay.json", {})
    sender = Sender(config.sources[0], spool, drip, Metrics(), clock)
    yield dataclasses.make_dataclass("World", ["clock", "spool", "drip", "sender", "source"])(
        clock, spool, drip, sender, config.sources[0])
    spool.close()


def track(n: int, email: str = "ann@example.com", **extra: Any) -> dict[str, Any]:
    return {"type": "track", "event": f"Event {n}", "userId": "u1", "properties": {"email": email, **extra},
            "messageId": f"m-{email}-{n}", "timestamp": "2026-12-01T10:00:00Z"}


def run_until_idle(world, steps: int = 100) -> list[float | None]:
    """Step the sender until it has nothing to send now; returns what each step said."""
    said = []
    for _ in range(steps):
        result = world.sender.step()
        said.append(result)
        if result is not None:
            return said
    raise AssertionError(f"the sender never went idle: {said[-5:]}")


def test_the_spool_remembers_a_persons_email_by_user_id_and_anonymous_id(world):
    world.spool.accept(world.source, [{"type": "identify", "userId": "u1", "anonymousId": "a1",
                                       "traits": {"email": "ann@example.com"}, "messageId": "m-1"}])
    source_id = world.sender.source_id
    assert world.spool.remembered_email(source_id, "userId", "u1") == "ann@example.com"
    assert world.spool.remembered_email(source_id, "anonymousId", "a1") == "ann@example.com"
    assert world.spool.remembered_email(source_id, "userId", "a1") is None, "a userId is not an anonymousId"
    other = dataclasses.replace(world.source, write_key="another-write-key")
    world.spool.accept(other, [{"type": "identify", "userId": "u1", "traits": {"email": "bob@example.com"},
                                "messageId": "m-2"}])
    assert world.spool.remembered_email(world.spool.source_id(other), "userId", "u1") == "bob@example.com"
    assert world.spool.remembered_email(source_id, "userId", "u1") == "ann@example.com", "each source its own"


def test_a_lone_event_goes_alone_at_once(world):
    world.spool.accept(world.source, [track(1)])
    run_until_idle(world)
    assert [path for path, _ in world.drip.requests] == ["/v2/83702741/events"]
    assert world.drip.tokens == [TOKEN]
    assert world.spool.pending == 0


def test_a_backlog_goes_in_batches_once_it_has_waited_a_moment(world):
    world.spool.accept(world.source, [track(n, f"p{n}@example.com") for n in range(30)])
    until = world.sender.step()
    assert world.drip.requests == [], "a partial batch should wait a moment for more records"
    assert until == pytest.approx(world.clock.now + delivery.LINGER)
    world.clock.now += delivery.LINGER
    run_until_idle(world)
    ((path, body),) = world.drip.requests
    assert path == "/v2/83702741/events/batches" and len(body["batches"][0]["events"]) == 30


def test_budgets_are_never_exceeded_and_the_sender_says_when_they_free(world):
    start = world.clock.now
    world.spool.accept(world.source, [track(n, f"p{n}@example.com") for n in range(8)])
    said = run_until_idle(world)
    assert [p for p, _ in world.drip.requests] == ["/v2/83702741/events"] * 5, "5 single requests per window"
    assert said[-1] == pytest.approx(start + delivery.LINGER), "then the rest waits a moment for a batch"
    for _ in range(2):  # the 2 batch requests of the window
        world.clock.now += delivery.LINGER
        run_until_idle(world)
        world.spool.accept(world.source, [track(100 + len(world.drip.requests))])
    assert [p for p, _ in world.drip.requests][5:] == ["/v2/83702741/events/batches"] * 2
    world.clock.now += delivery.LINGER
    said = run_until_idle(world)
    assert len(world.drip.requests) == 7, "no budget left in the window: nothing more is sent"
    assert said[-1] == pytest.approx(start + 60 + delivery.WINDOW_MARGIN), "when the oldest request leaves the window"
    world.clock.now = start + 60 + delivery.WINDOW_MARGIN
    run_until_idle(world)
    assert world.spool.pending == 0


def spend_both_budgets(world) -> float:
    """5 single and 2 batch requests, then one more event: returns when the sender says a budget frees."""
    world.spool.accept(world.source, [track(n, f"p{n}@example.com") for n in range(8)])
    run_until_idle(world)
    for n in range(2):
        world.clock.now += delivery.LINGER
        run_until_idle(world)
        world.spool.accept(world.source, [track(100 + n)])
    world.clock.now += delivery.LINGER
    waiting_until = run_until_idle(world)[-1]
    assert len(world.drip.requests) == 7 and world.spool.pending == 1, world.drip.requests
    return waiting_until


def test_accepted_records_do_not_wake_a_sender_waiting_for_its_budget_but_a_reload_does(world):
    spend_both_budgets(world)
    assert world.sender.stored() is False, "new records cannot open a budget: no need to read the backlog"
    world.sender.update(dataclasses.replace(world.source, rate_limits=RateLimits(single=10, batch=2,
                                                                                 window_seconds=60)))
    assert world.sender.stored() is True, "a reloaded configuration may have raised the budget: look again"
    run_until_idle(world)
    assert len(world.drip.requests) == 8 and world.spool.pending == 0


def test_accepted_records_wake_the_sender_again_once_its_budget_frees(world):
    waiting_until = spend_both_budgets(world)
    world.clock.now = waiting_until - 0.5
    assert world.sender.stored() is False
    world.clock.now = waiting_until
    assert world.sender.stored() is True


def test_429_pauses_the_endpoint_class_for_retry_after(world):
    world.drip.answers = [DripAnswer(429, "429: too_many_requests API rate limit exceeded", retry_after=30)]
    world.spool.accept(world.source, [track(1)])
    start = world.clock.now
    run_until_idle(world)
    assert world.spool.paused_until(ACCOUNT, "single") == pytest.approx(start + 30)
    assert world.spool.pending == 1
    world.clock.now += delivery.LINGER
    run_until_idle(world)
    assert [p for p, _ in world.drip.requests] == ["/v2/83702741/events", "/v2/83702741/events/batches"], \
        "while single requests pause, the batch endpoint (its own budget) carries the record"
    assert world.spool.pending == 0


def test_429_without_retry_after_waits_until_the_window_frees(world):
    world.drip.answers = [DripAnswer(429, "429: API rate limit exceeded"), DripAnswer(429, "429: again")]
    world.spool.accept(world.source, [track(1)])
    start = world.clock.now
    run_until_idle(world)
    world.clock.now += delivery.LINGER
    said = run_until_idle(world)
    assert world.spool.paused_until(ACCOUNT, "single") == pytest.approx(start + 60 + delivery.WINDOW_MARGIN)
    assert said[-1] == pytest.approx(start + 60 + delivery.WINDOW_MARGIN), "until the oldest request leaves it"
    world.clock.now = start + 60 + delivery.WINDOW_MARGIN
    run_until_idle(world)
    assert len(world.drip.requests) == 3 and world.spool.pending == 0


def test_5xx_backs_off_and_nothing_is_dropped(world):
    world.drip.answers = [DripAnswer(503, "503: unavailable"), DripAnswer(None, "timeout: ReadTimeout")]
    world.spool.accept(world.source, [track(1)])
    first = run_until_idle(world)[-1]
    assert world.clock.now + 0.5 <= first <= world.clock.now + 1.0, "first back-off: 1 s with jitter"
    world.clock.now = first
    second = run_until_idle(world)[-1]
    assert world.clock.now + 1.0 <= second <= world.clock.now + 2.0, "second back-off: 2 s with jitter"
    world.clock.now = second
    run_until_idle(world)
    assert len(world.drip.requests) == 3 and world.spool.pending == 0


def test_401_pauses_the_source_until_the_token_changes(world):
    world.drip.answers = [DripAnswer(401, "401: authentication_error bad token")]
    world.spool.accept(world.source, [track(1)])
    run_until_idle(world)
    run_until_idle(world)
    assert len(world.drip.requests) == 1, "a paused source sends nothing"
    assert world.spool.source_state(world.sender.source_id)[0] == "credentials rejected"
    world.sender.update(dataclasses.replace(world.source, api_token="another0token0of0twenty"))
    run_until_idle(world)
    assert world.drip.tokens[-1] == "another0token0of0twenty" and world.spool.pending == 0


def test_a_4xx_on_a_single_request_is_a_dead_letter_with_drips_error(world):
    world.drip.answers = [DripAnswer(422, "422: invalid_value_error (value) Value is not a valid integer")]
    world.spool.accept(world.source, [track(1)])
    run_until_idle(world)
    (row,) = world.spool.reader().execute("SELECT kind, status, error FROM dead_letters").fetchall()
    assert row == ("event", 422, "422: invalid_value_error (value) Value is not a valid integer")
    assert world.spool.pending == 0


def test_a_refused_batch_is_sent_again_record_by_record(world):
    world.spool.accept(world.source, [track(n, f"p{n}@example.com") for n in range(25)])
    world.clock.now += delivery.LINGER
    world.drip.answers = [DripAnswer(422, "422: invalid in batch")]
    run_until_idle(world)
    paths = [path for path, _ in world.drip.requests]
    assert paths[0] == "/v2/83702741/events/batches"
    assert paths[1:] == ["/v2/83702741/events"] * 5, "then single requests, as far as the budget goes"
