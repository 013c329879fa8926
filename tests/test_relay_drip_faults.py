"""The relay under Drip's faults: bursts of 5xx, timeouts, connections dropped or reset mid-response, 429
with and without Retry-After, Drip's "too many concurrent requests" for a subscriber, a rejected token
corrected in relay.json, one bad record in a batch of 1,000, and a backlog drained within quotas scaled
down on both sides.

Traffic is mixed: identify and track calls of many people, several per person, each carrying the
person's own sequence number, with calls the relay skips (page calls, tracks of nobody known) among
them. Every scenario ends with the same account: nothing lost (each accepted call was delivered,
skipped with its reason, or is a dead letter with Drip's error), nothing delivered twice, and each
person's records reached the Drip API emulator in the order the relay accepted them. The relay's
count of Drip's answers shows each injected fault was met, and no other failure happened."""

from __future__ import annotations

import collections
import dataclasses
import json
import random
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from driptag.emulators.drip_api import CONCURRENCY_MESSAGE
from driptag.relay.drip_client import DripClient
from driptag.relay.service import Relay
from relay_support import ACCOUNT, CAMPAIGN, TOKEN, WRITE_KEY, DripApi, drip_api, relay_in_process, source, \
    wait_for, write_config

# How the relay's metrics label each injected fault (`driptag_relay_drip_responses_total{status}`).
ANSWER_LABEL = {"500": "500", "502": "502", "503": "503", "timeout": "timeout", "drop": "connection",
                "reset": "connection", "429": "429", "429-no-retry-after": "429", "concurrency": "429",
                "401": "401", "422": "422"}
ACTION = "Step"


# --- traffic --------------------------------------------------------------------------------------


def email(person: int) -> str:
    return f"p{person}@example.com"


class Traffic:
    """Segment calls of `people` persons sent through the relay's /v1/batch. Each call that reaches Drip
    carries its person's next sequence number; `accepted` keeps them per person in the order the relay
    acknowledged them, `skipped` counts the calls that send nothing, by the reason the relay gives."""

    def __init__(self, url: str, people: int, seed: int = 1) -> None:
        self.people = people
        self.rng = random.Random(seed)
        self.accepted: dict[str, list[int]] = collections.defaultdict(list)
        self.skipped: collections.Counter[str] = collections.Counter()
        self.posts = 0
        self._next: collections.Counter[str] = collections.Counter()
        self._ids = 0
        self._http = httpx.Client(base_url=url, auth=(WRITE_KEY, ""), timeout=30)

    def close(self) -> None:
        self._http.close()

    def call(self, person: int, kind: str = "track", **properties: Any) -> dict[str, Any]:
        """An identify or track of `person` with its next sequence number (in traits or properties)."""
        address = email(person)
        seq = self._next[address]
        self._next[address] += 1
        self._ids += 1
        message: dict[str, Any] = {"type": kind, "userId": f"u{person}", "messageId": f"m{self._ids}"}
        if kind == "identify":
            message["traits"] = {"email": address, "seq": seq}
        else:
            message.update(event=ACTION, properties={"email": address, "seq": seq, **properties})
        return message

    def skippable(self) -> dict[str, Any]:
        """A call the relay acknowledges and skips: a page call, or a track of someone never identified."""
        self._ids += 1
        if self.rng.random() < 0.5:
            return {"type": "page", "userId": "u0", "name": "Home", "messageId": f"m{self._ids}"}
        return {"type": "track", "userId": f"nobody{self._ids}", "event": ACTION, "messageId": f"m{self._ids}"}

    def mixed(self, count: int) -> list[dict[str, Any]]:
        """`count` calls of random people: mostly tracks, some identifies, a few skipped ones."""
        out = []
        for _ in range(count):
            draw = self.rng.random()
            if draw < 0.08:
                out.append(self.skippable())
            else:
                out.append(self.call(self.rng.randrange(self.people), "identify" if draw < 0.3 else "track"))
        return out

    def post(self, messages: list[dict[str, Any]]) -> None:
        response = self._http.post("/v1/batch", json={"batch": messages})
        assert (response.status_code, response.json()) == (200, {"success": True}), \
            f"the relay did not accept a batch of {len(messages)}: {response.status_code} {response.text}"
        self.posts += 1
        for message in messages:
            seq = _seq_of_message(message)
            if seq is None:
                self.skipped["not forwarded" if message["type"] == "page" else "no email"] += 1
            else:
                self.accepted[_email_of_message(message)].append(seq)

    @property
    def count(self) -> int:
        return sum(len(seqs) for seqs in self.accepted.values())


def _seq_of_message(message: dict[str, Any]) -> int | None:
    fields = message.get("traits") or message.get("properties") or {}
    return fields.get("seq")


def _email_of_message(message: dict[str, Any]) -> str:
    return (message.get("traits") or message.get("properties"))["email"]


@contextmanager
def feeding(traffic: Traffic, every: float = 0.05) -> Iterator[None]:
    """Keep sending small batches of mixed calls (and now and then a larger one, which the relay sends as a
    batch request) from one thread, so every fault meets a request and a backlog builds while Drip fails."""
    stop = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        while not stop.is_set():
            try:
                size = traffic.rng.randint(25, 60) if traffic.posts % 10 == 9 else traffic.rng.randint(1, 4)
                traffic.post(traffic.mixed(size))
            except BaseException as error:  # noqa: BLE001 - reported by the test below
                errors.append(error)
                return
            stop.wait(every)

    thread = threading.Thread(target=run, name="feeder", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(30)
    assert not errors, f"sending to the relay failed: {errors[0]!r}"


# --- faults ---------------------------------------------------------------------------------------


def successes(drip: DripApi) -> int:
    return sum(1 for r in drip.api_requests() if r["status"] is not None and 200 <= r["status"] < 300)


def meet(drip: DripApi, *faults: tuple[str, dict[str, Any]], timeout: float = 40.0) -> None:
    """Inject `faults` together (the next requests meet them one after the other) and return once every
    one was met and Drip has since answered a request with 2xx."""
    for name, options in faults:
        drip.state.inject(name, **options)
    names = [name for name, _ in faults]
    wait_for(lambda: not drip.state.faults(), f"the relay's requests met the faults {names}", timeout)
    before = successes(drip)
    wait_for(lambda: successes(drip) > before, f"Drip answered 2xx again after the faults {names}", timeout)


def drip_answers(relay: Relay) -> collections.Counter[str]:
    """The relay's count of Drip's answers that were not 2xx, by label."""
    counts: collections.Counter[str] = collections.Counter()
    for metric in relay.metrics.registry.collect():
        if metric.name == "driptag_relay_drip_responses":
            for sample in metric.samples:
                label = sample.labels["status"]
                if sample.name.endswith("_total") and not label.startswith("2"):
                    counts[label] += int(sample.value)
    return +counts


def expected_answers(*faults: str) -> collections.Counter[str]:
    return collections.Counter(ANSWER_LABEL[fault] for fault in faults)


# --- the account ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Account:
    """How a scenario ended."""

    accepted: int
    delivered: int  # distinct records
    skipped: dict[str, int]
    dead: dict[tuple[str, int], tuple[int, str]]   # (e-mail, seq) -> (status, Drip's error)
    requests: int
    duplicates: int


def drained(relay: Relay, timeout: float = 60.0) -> None:
    wait_for(lambda: relay.spool.pending == 0, "every accepted record left the spool", timeout)


def account(drip: DripApi, relay: Relay, traffic: Traffic,
            dead: dict[tuple[str, int], tuple[int, str]] | None = None,
            twice: frozenset[tuple[str, int]] = frozenset()) -> Account:
    """Check that nothing was lost or sent twice and each person's order was kept; `dead` is exactly which
    records must be dead letters, with Drip's status and error, `twice` exactly which ones Drip got twice
    (a person's order is then judged on each record's first arrival)."""
    assert relay.spool.pending == 0, f"{relay.spool.pending} records still wait in the spool"
    received = drip.state.received()
    arrivals = sorted(received["subscribers"] + received["events"], key=lambda entry: entry["n"])
    delivered: dict[str, list[int]] = collections.defaultdict(list)
    for entry in arrivals:
        record = entry["record"]
        if record.get("action", ACTION) != ACTION:
            continue  # another client's request, not the relay's
        seq = record["properties"]["seq"] if "action" in record else int(record["custom_fields"]["seq"])
        delivered[record["email"]].append(seq)
    letters = relay.spool.reader().execute("SELECT record, status, error FROM dead_letters").fetchall()
    dead_letters = {}
    for text, status, error in letters:
        record = json.loads(text)
        seq = record["properties"]["seq"] if "action" in record else int(record["custom_fields"]["seq"])
        dead_letters[(record["email"], seq)] = (status, error)
    assert dead_letters == (dead or {}), "the dead letters are not the records Drip refused, with its error"
    duplicates = {(address, seq): n for address, seqs in delivered.items()
                  for seq, n in collections.Counter(seqs).items() if n > 1}
    assert duplicates == dict.fromkeys(twice, 2), f"records delivered more than once: {duplicates}"
    delivered = {address: list(dict.fromkeys(seqs)) for address, seqs in delivered.items()}
    assert set(delivered) <= set(traffic.accepted), \
        f"Drip received records of people never sent: {sorted(set(delivered) - set(traffic.accepted))}"
    for address, seqs in traffic.accepted.items():
        expected = [seq for seq in seqs if (address, seq) not in dead_letters]
        assert delivered.get(address, []) == expected, \
            f"{address}: Drip received {delivered.get(address, [])}, the relay accepted {expected} in this order"
    rows = relay.spool.reader().execute(
        "SELECT substr(name, 9), sum(n) FROM stats WHERE name LIKE 'skipped:%' GROUP BY name").fetchall()
    assert dict(rows) == dict(traffic.skipped), "the relay's skip counts are not the calls it had to skip"
    return Account(traffic.count, sum(map(len, delivered.values())), dict(rows), dead_letters,
                   len(drip.api_requests()), len(duplicates))


# --- scenarios ------------------------------------------------------------------------------------


def test_bursts_of_500_502_and_503_lose_nothing_and_keep_each_persons_order(tmp_path):
    bursts = [["500", "502", "503"], ["503", "500"], ["502"]]
    with drip_api() as drip, relay_in_process(tmp_path, drip) as relay:
        traffic = Traffic(relay.url, people=40)
        with feeding(traffic):
            for burst in bursts:
                meet(drip, *((fault, {}) for fault in burst))
            meet(drip, ("503", {"path": "/batches"}), ("500", {"path": "/batches"}))  # a backlog's batch fails
        drained(relay)
        outcome = account(drip, relay, traffic)
        assert drip_answers(relay) == expected_answers(*sum(bursts, []), "503", "500")
        assert outcome.delivered == outcome.accepted > 100
        traffic.close()


def test_timeouts_and_connections_dropped_or_reset_mid_response_are_retried(tmp_path):
    with drip_api() as drip, relay_in_process(tmp_path, drip) as relay:
        short = DripClient(drip.url, read_timeout=2.0)  # Drip holds its answer for 10 s: the relay gives up first
        relay.delivery.senders[WRITE_KEY].client = short
        traffic = Traffic(relay.url, people=40, seed=2)
        try:
            with feeding(traffic):
                meet(drip, ("timeout", {"seconds": 10}))
                meet(drip, ("drop", {}))
                meet(drip, ("reset", {}))
                meet(drip, ("reset", {"path": "/batches"}), ("drop", {}), ("timeout", {"seconds": 10}))
            drained(relay)
            outcome = account(drip, relay, traffic)
            assert drip_answers(relay) == expected_answers("timeout", "drop", "reset", "reset", "drop", "timeout")
            assert outcome.delivered == outcome.accepted > 100
        finally:
            short.close()
            traffic.close()


def test_an_answer_lost_after_drip_took_the_batch_is_the_one_way_to_a_duplicate(tmp_path):
    """At least once: Drip stored a batch but its answer came after the relay stopped waiting, so the relay
    sends the batch again. Those records, and only those, arrive twice; every person's order holds."""
    with drip_api() as drip, relay_in_process(tmp_path, drip) as relay:
        short = DripClient(drip.url, read_timeout=1.0)
        relay.delivery.senders[WRITE_KEY].client = short
        traffic = Traffic(relay.url, people=40, seed=8)
        try:
            with feeding(traffic):
                meet(drip, ("delay", {"seconds": 3, "path": "/batches"}))  # handled at once, answered after 3 s
            drained(relay)
            (late,) = wait_for(lambda: [r for r in drip.api_requests() if r["fault"] == "delay"],
                               "Drip answered the held batch")
            field = "events" if "events" in late["body"]["batches"][0] else "subscribers"
            twice = frozenset((record["email"], record["properties"]["seq"] if field == "events"
                               else int(record["custom_fields"]["seq"])) for record in late["body"]["batches"][0][field])
            outcome = account(drip, relay, traffic, twice=twice)
            assert drip_answers(relay) == expected_answers("timeout")
            assert outcome.duplicates == len(late["body"]["batches"][0][field]) >= 20
            assert outcome.delivered == outcome.accepted > 100
        finally:
            short.close()
            traffic.close()


def test_429_with_and_without_retry_after_pauses_that_endpoint_class_and_nothing_is_lost(tmp_path):
    # Budgets of a 3-second window on both sides, so that a 429 without Retry-After (wait until the
    # window frees) costs seconds rather than Drip's hour.
    limits = {"single": 600, "batch": 50, "windowSeconds": 3}
    with drip_api(DRIP_API_SINGLE_PER_HOUR=600, DRIP_API_BATCH_PER_HOUR=50, DRIP_API_WINDOW_SECONDS=3) as drip, \
            relay_in_process(tmp_path, drip, source(rateLimits=limits)) as relay:
        traffic = Traffic(relay.url, people=40, seed=3)
        with feeding(traffic):
            meet(drip, ("429", {"seconds": 2, "path": "/events"}))
            meet(drip, ("429-no-retry-after", {"path": "/subscribers"}))
            meet(drip, ("429", {"seconds": 1, "path": "/batches"}))
            meet(drip, ("429-no-retry-after", {"path": "/batches"}))
        drained(relay)
        outcome = account(drip, relay, traffic)
        assert drip_answers(relay) == expected_answers("429", "429-no-retry-after", "429", "429-no-retry-after")
        statuses = [(r["fault"], r["status"]) for r in drip.api_requests() if r["status"] == 429]
        assert statuses == [("429", 429), ("429-no-retry-after", 429)] * 2, \
            f"only the injected faults answered 429 (the quotas never did): {statuses}"
        assert outcome.delivered == outcome.accepted > 100
        traffic.close()


def test_drips_too_many_concurrent_requests_for_a_subscriber_retries_that_record(tmp_path):
    with drip_api() as drip, relay_in_process(tmp_path, drip) as relay:
        traffic = Traffic(relay.url, people=40, seed=4)
        with feeding(traffic):
            meet(drip, ("concurrency", {}))
            meet(drip, ("concurrency", {"path": "/subscribers"}), ("concurrency", {}))
            meet(drip, ("concurrency", {"path": "/batches"}))
        drained(relay)
        # A real one: another client of the account holds a request about p0 while the relay sends p0's event.
        holder = threading.Thread(target=_hold_subscriber, args=(drip, email(0)), daemon=True)
        drip.state.inject("delay", count=1, path="/campaigns/", seconds=1.5)  # less than the relay waits
        holder.start()
        wait_for(lambda: _subscriber_busy(drip, email(0)), "the other client's request holds p0@example.com")
        traffic.post([traffic.call(0), traffic.call(1)])
        drained(relay, timeout=30)
        holder.join(10)
        outcome = account(drip, relay, traffic)
        assert drip_answers(relay) == expected_answers("concurrency", "concurrency", "concurrency", "concurrency",
                                                       "concurrency")
        refused = [r["body"]["events"][0] for r in drip.api_requests() if r["status"] == 429 and r["fault"] is None
                   and r["path"].endswith("/events") and r["body"]["events"][0]["action"] == ACTION]
        assert [(event["email"], event["properties"]["seq"]) for event in refused] == \
            [(email(0), traffic.accepted[email(0)][-1])], "the relay's event of p0 met the concurrency error once"
        assert outcome.delivered == outcome.accepted > 100
        traffic.close()


def _hold_subscriber(drip: DripApi, address: str) -> None:
    """Another client of the account subscribes `address` to a campaign; Drip takes seconds to answer."""
    httpx.post(f"{drip.url}/v2/{ACCOUNT}/campaigns/{CAMPAIGN}/subscribers", auth=(TOKEN, ""), timeout=30,
               json={"subscribers": [{"email": address}]})


def _subscriber_busy(drip: DripApi, address: str) -> bool:
    """Whether Drip answers the concurrency error for `address` now (probing with an event of another
    action, which the account below ignores; a probe that gets through is simply stored)."""
    response = httpx.post(f"{drip.url}/v2/{ACCOUNT}/events", auth=(TOKEN, ""), timeout=10,
                          json={"events": [{"email": address, "action": "Probe"}]})
    return response.status_code == 429 and CONCURRENCY_MESSAGE in response.text


def test_401_waits_for_the_token_corrected_in_relay_json_and_nothing_is_lost(tmp_path):
    config = write_config(tmp_path / "relay.json", source(apiToken="wrong0token0of0twenty0x"))
    with drip_api() as drip, relay_reading(config, tmp_path / "relay.sqlite3", drip) as relay:
        traffic = Traffic(relay.url, people=40, seed=5)
        sender = relay.delivery.senders[WRITE_KEY]
        with feeding(traffic):
            wait_for(lambda: relay.spool.source_state(sender.source_id)[0] == "credentials rejected",
                     "the source paused with status 'credentials rejected'")
            wait_for(lambda: relay.spool.pending >= 100, "a backlog built up while the token was wrong")
            assert [(r["status"], r["auth"]) for r in drip.api_requests()] == [(401, False)], \
                "one request with the wrong token, then nothing until the configuration changes"
            write_config(config, source())  # the relay notices the file changed (it looks every 2 s)
            wait_for(lambda: successes(drip) >= 3, "delivery resumed with the corrected token")
        drained(relay)
        outcome = account(drip, relay, traffic)
        assert drip_answers(relay) == expected_answers("401")
        assert outcome.delivered == outcome.accepted > 100
        traffic.close()


@contextmanager
def relay_reading(config: Path, spool: Path, drip: DripApi) -> Iterator[Relay]:
    """A relay in this process that reads `config` as `relay serve --config` does (and watches it)."""
    running = Relay(config, spool, drip.url)
    host, port = running.start("127.0.0.1", 0)
    running.url = f"http://{host}:{port}"  # type: ignore[attr-defined]
    try:
        yield running
    finally:
        running.stop()


def test_422_for_one_record_in_a_batch_of_1000_dead_letters_that_one_and_delivers_the_999(tmp_path):
    with drip_api() as drip, relay_in_process(tmp_path, drip) as relay:
        traffic = Traffic(relay.url, people=200, seed=6)
        # Five events each of 200 people, person after person in each round; p77's third one has a value
        # Drip refuses (it takes event values from 0 to 2,147,483,647 only).
        calls = [traffic.call(person, **({"value": -5} if (person, turn) == (77, 2) else {}))
                 for turn in range(5) for person in range(200)]
        traffic.post(calls)  # one request: all 1,000 wait together, so the first Drip request is their batch
        drained(relay, timeout=60)
        error = "422: range_error (events[0].properties.value) Value must be an integer from 0 to 2147483647"
        outcome = account(drip, relay, traffic, dead={(email(77), 2): (422, error)})
        requests = drip.api_requests()
        assert [(r["path"].rsplit("/v2/83702741", 1)[1], len(r["body"]["batches"][0]["events"]), r["status"])
                for r in requests[:1]] == [("/events/batches", 1000, 422)]
        assert [r["path"].rsplit("/v2/83702741", 1)[1] for r in requests[1:]] == ["/events"] * 1000, \
            "then each of the 1,000 alone"
        assert (outcome.accepted, outcome.delivered) == (1000, 999)
        assert drip_answers(relay) == expected_answers("422", "422"), "the batch's 422, then the bad record's own"
        traffic.close()


def most_in_any_window(times: list[float], window: float) -> int:
    """The largest number of `times` inside any half-open window (t - window, t]."""
    times = sorted(times)
    most, first = 0, 0
    for last, at in enumerate(times):
        while times[first] <= at - window:
            first += 1
        most = max(most, last - first + 1)
    return most


def test_a_backlog_of_5000_events_drains_within_quotas_scaled_down_on_both_sides(tmp_path):
    single, batch, window = 20, 2, 5.0  # per account and window, the same for Drip and for the relay
    limits = {"single": single, "batch": batch, "windowSeconds": window}
    with drip_api(DRIP_API_SINGLE_PER_HOUR=single, DRIP_API_BATCH_PER_HOUR=batch,
                  DRIP_API_WINDOW_SECONDS=window) as drip, \
            relay_in_process(tmp_path, drip, source(rateLimits=limits)) as relay:
        traffic = Traffic(relay.url, people=500, seed=7)
        calls = [traffic.call(person) for _ in range(10) for person in range(500)]
        traffic.post(calls[:2500])
        traffic.post(calls[2500:])
        drained(relay, timeout=60)
        outcome = account(drip, relay, traffic)
        requests = drip.api_requests()
        assert [r["status"] for r in requests if r["status"] == 429] == [], "Drip's quota answered 429"
        by_class: dict[str, list[float]] = {"single": [], "batch": []}
        for r in requests:
            by_class["batch" if r["path"].endswith("/batches") else "single"].append(r["time"])
        most = {name: most_in_any_window(times, window) for name, times in by_class.items()}
        assert most["single"] <= single and most["batch"] <= batch, \
            f"requests in one {window:g}-second window: {most}; the budget is {single} single, {batch} batch"
        assert (outcome.accepted, outcome.delivered, outcome.dead) == (5000, 5000, {})
