"""Delivery: one sender per source takes what waits in the spool to Drip, within Drip's limits.

The rules a sender keeps:
- **Per person, in order.** A person's records are requested in the order they were accepted: a
  record waits while an earlier one of the same person waits (a campaign subscription waits for its
  subscriber upsert). A person's consecutive events may share one batch, in their order.
- **Batches for backlogs.** When many records of one kind wait, up to 1,000 go in one request to the
  batch endpoint; a lone record goes alone at once. A partial batch waits up to a second for more.
- **Budgets.** Requests are counted per account and endpoint class (single or batch) over a sliding
  window (Drip: 3,600 single and 50 batch requests an hour) before they are sent, and never more than
  the budget are sent; `X-RateLimit-Remaining` lowers the budget when Drip says less is left.
- **Answers.** 2xx: delivered, removed from the spool in the commit that records it. 429: the endpoint
  class of that account pauses (Retry-After, else until the window frees). Drip's "too many concurrent
  requests" for a subscriber: that record again after a short wait. 5xx, timeouts, refused or reset
  connections: the source backs off, 1 s doubling to 10 min with jitter, without limit. 401/403: the
  source pauses ("credentials rejected") until its token changes; nothing is dropped. Any other 4xx: to
  the dead letters with Drip's error; a batch Drip refused is sent again record by record, so one bad
  record cannot take 999 good ones with it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Any

from .config import RateLimits, RelayConfig, Source
from .drip_client import DripAnswer, DripClient
from .metrics import Metrics
from .spool import Pending, Spool

log = logging.getLogger("driptag.relay")

BATCH_SIZE = 1000          # Drip's most records in one batch
BATCH_AT = 20              # this many records of a kind waiting make a batch worth one of the few batch requests
LINGER = 1.0               # how long a partial batch waits for more records
CONCURRENCY_WAIT = 2.0     # after Drip's "too many concurrent requests" for a subscriber
BACKOFF_FIRST = 1.0
BACKOFF_MAX = 600.0
IDLE_WAKE = 5.0            # a sender looks again at least this often (pauses ending, clock changes)
CREDENTIALS_REJECTED = "credentials rejected"
# A request is counted from just before it is sent; Drip counts it from when it arrives, a little later.
# Our window is this much longer, so a request never leaves our window before it leaves Drip's.
WINDOW_MARGIN = 1.0


def token_fingerprint(token: str) -> str:
    """Which token Drip rejected, without keeping the token: a pause ends when the token changes."""
    return hashlib.sha256(token.encode()).hexdigest()[:16]


@dataclasses.dataclass(frozen=True)
class Request:
    """One request to send: the endpoint class it counts against, its path, its body and its records."""

    endpoint_class: str   # "single" or "batch"
    path: str
    body: dict[str, Any]
    records: list[Pending]


@dataclasses.dataclass(frozen=True)
class Wait:
    """Nothing to send before `until`. `budget`: what waits is a budget (or Drip's pause), which records
    accepted in the meantime cannot open."""

    until: float
    budget: bool = False


def request_for(account: str, records: list[Pending], batch: bool) -> Request:
    """The Drip request for `records` (all of one kind; one record unless `batch`)."""
    first = records[0]
    if first.kind == "campaign":
        return Request("single", f"/v2/{account}/campaigns/{first.campaign_id}/subscribers",
                       {"subscribers": [first.record]}, [first])
    field = "subscribers" if first.kind == "subscriber" else "events"
    if batch:
        return Request("batch", f"/v2/{account}/{field}/batches",
                       {"batches": [{field: [r.record for r in records]}]}, records)
    return Request("single", f"/v2/{account}/{field}", {field: [first.record]}, [first])


def next_records(waiting: list[Pending], now: float) -> list[Pending]:
    """The records that may go now, all of the kind of the oldest one that may: no person's record
    before an earlier one of the same person, at most one upsert per person, a single-only record alone."""
    blocked: set[str] = set()
    lane: tuple[str, str | None] | None = None
    taken: list[Pending] = []
    for row in waiting:
        if row.person in blocked:
            continue
        if row.not_before > now:
            blocked.add(row.person)
            continue
        if lane is None:
            if row.kind == "campaign" or row.single_only:
                return [row]
            lane = (row.kind, row.campaign_id)
        if (row.kind, row.campaign_id) != lane or row.single_only:
            blocked.add(row.person)
            continue
        taken.append(row)
        if row.kind != "event":
            blocked.add(row.person)
        if len(taken) == BATCH_SIZE:
            break
    return taken


def _window(limits: RateLimits) -> float:
    return limits.window_seconds + WINDOW_MARGIN


class Sender:
    """Delivers one source's records; runs in its own thread."""

    def __init__(self, source: Source, spool: Spool, client: DripClient, metrics: Metrics,
                 clock: Callable[[], float] = time.time):
        self.source = source
        self.spool = spool
        self.client = client
        self.metrics = metrics
        self.clock = clock
        self.source_id = spool.source_id(source)
        self.failures = 0
        self.backoff_until = 0.0
        self._budget_until = 0.0  # waiting for the budget until then: accepted records need not wake it
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"sender-{source.account}", daemon=True)

    # -- control ---------------------------------------------------------------------------------

    def start(self) -> None:
        self._resume_if_token_changed()
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stored(self) -> bool:
        """Records were accepted: look at once, unless the sender is waiting for its budget. New records
        cannot open a budget, and a relay under a burst waits for its budget most of the hour: reading
        the backlog again for every request it accepts would take the ingest's time for nothing.
        Returns whether the sender was woken."""
        if self.clock() < self._budget_until:
            return False
        self._wake.set()
        return True

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    def join(self, timeout: float) -> bool:
        if self._thread.ident is None:  # never started (the relay could not listen)
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def update(self, source: Source) -> None:
        """A reloaded configuration: a new token ends a credentials pause."""
        self.source = source
        self._budget_until = 0.0  # its budgets may have changed
        self._resume_if_token_changed()
        self.wake()

    def _resume_if_token_changed(self) -> None:
        paused, fingerprint = self.spool.source_state(self.source_id)
        if paused == CREDENTIALS_REJECTED and fingerprint != token_fingerprint(self.source.api_token):
            self.spool.set_source_pause(self.source_id, None)
            log.info("source %s: the API token changed; delivery resumes", self.source.name)

    # -- the loop --------------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                until = self.step()
            except Exception:  # noqa: BLE001 - a sender never dies: log, wait, try again
                log.exception("source %s: delivery step failed; trying again shortly", self.source.name)
                until = self.clock() + BACKOFF_FIRST
            if until is None:
                continue
            self._wake.wait(max(0.0, min(until - self.clock(), IDLE_WAKE)))
            self._wake.clear()

    def step(self) -> float | None:
        """Send one request if one may go now. Returns None to look again at once, else when to."""
        now = self.clock()
        self._budget_until = 0.0
        paused, _ = self.spool.source_state(self.source_id)
        if paused:
            return now + IDLE_WAKE
        if self.backoff_until > now:
            return self.backoff_until
        # A backlog's first BATCH_SIZE records usually make the whole batch; only when a person's earlier
        # record or another kind held some back is it worth reading (and decoding) further.
        waiting = self.spool.waiting(self.source_id, BATCH_SIZE)
        if not waiting:
            return now + IDLE_WAKE
        records = next_records(waiting, now)
        if len(records) < BATCH_SIZE and len(waiting) == BATCH_SIZE:
            waiting = self.spool.waiting(self.source_id)
            records = next_records(waiting, now)
        if not records:
            return min(r.not_before for r in waiting if r.not_before > now)
        choice = self._choose(records, now)
        if isinstance(choice, Wait):
            if choice.budget:
                self._budget_until = choice.until
            return choice.until
        self._send(choice)
        return None

    def _choose(self, records: list[Pending], now: float) -> Request | Wait:
        account = self.source.account
        single_open, single_at = self._budget("single", now)
        if records[0].kind == "campaign" or records[0].single_only:
            return request_for(account, records, batch=False) if single_open else Wait(single_at, budget=True)
        batch_open, batch_at = self._budget("batch", now)
        count = len(records)
        if count >= BATCH_SIZE and batch_open:
            return request_for(account, records, batch=True)
        if count < BATCH_AT and single_open:
            return request_for(account, records, batch=False)
        if batch_open:
            ready_at = records[0].accepted_at + LINGER
            if ready_at <= now:
                return request_for(account, records, batch=True)
            return Wait(ready_at)
        if single_open:
            return request_for(account, records, batch=False)
        return Wait(min(single_at, batch_at), budget=True)

    def _budget(self, endpoint_class: str, now: float) -> tuple[bool, float]:
        """Whether a request of this class may go now, and if not, from when it may."""
        limits = self.source.rate_limits
        limit = limits.single if endpoint_class == "single" else limits.batch
        paused = self.spool.paused_until(self.source.account, endpoint_class)
        if paused > now:
            return False, paused
        used, oldest = self.spool.requests_since(self.source.account, endpoint_class, now - _window(limits))
        if used < limit:
            return True, now
        return False, (oldest or now) + _window(limits)

    # -- sending and answers ---------------------------------------------------------------------

    def _send(self, request: Request) -> None:
        source = self.source
        self.spool.reserve(source.account, request.endpoint_class)
        answer = self.client.post(source.api_token, request.path, request.body)
        self.metrics.drip_responses.labels(status=answer.label).inc()
        if answer.retry_after is None:  # with Retry-After, Drip has said when to ask again: that wins
            self._lower_budget(request.endpoint_class, answer.remaining)
        if answer.ok:
            self.spool.delivered(request.records)
            self.metrics.delivered.labels(source=source.name, kind=request.records[0].kind).inc(len(request.records))
            if self.failures:
                log.info("source %s: Drip answers again; delivery resumes", source.name)
            self.failures = 0
            return
        self._failed(request, answer)

    def _failed(self, request: Request, answer: DripAnswer) -> None:
        source, now = self.source, self.clock()
        status = answer.status
        if answer.concurrency_error:
            self.spool.retry_later(request.records, now + CONCURRENCY_WAIT * (1 + random.random()))
            return
        self.spool.record_error(self.source_id, answer.error or str(status))
        if status == 429:
            limits = source.rate_limits
            if answer.retry_after is not None:
                until = now + answer.retry_after
            else:
                _, oldest = self.spool.requests_since(source.account, request.endpoint_class,
                                                      now - _window(limits))
                until = (oldest or now) + _window(limits)
            self.spool.pause(source.account, request.endpoint_class, until, answer.error)
            log.warning("source %s: Drip's rate limit (429) for %s requests; waiting %.0f s",
                        source.name, request.endpoint_class, until - now)
        elif status in (401, 403):
            self.spool.set_source_pause(self.source_id, CREDENTIALS_REJECTED, token_fingerprint(source.api_token))
            log.error("source %s: Drip rejected the API token (%s); delivery waits for a new token "
                      "in the configuration", source.name, status)
        elif status is not None and 400 <= status < 500:
            if request.endpoint_class == "batch":
                self.spool.retry_later(request.records, 0.0, single_only=True)
                log.warning("source %s: Drip refused a batch of %d (%s); sending them one by one",
                            source.name, len(request.records), answer.error)
            else:
                self.spool.dead_letter(request.records, status, answer.error)
                log.warning("source %s: Drip refused the %s record (%s); it is in the dead letters",
                            source.name, request.records[0].kind, answer.error)
        else:
            self.failures += 1
            delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (self.failures - 1))
            delay *= 0.5 + random.random() / 2  # jitter: relays that failed together do not retry together
            self.backoff_until = now + delay
            self.spool.retry_later(request.records, 0.0)
            log.warning("source %s: Drip did not answer well (%s); retrying in %.1f s",
                        source.name, answer.error or status, delay)

    def _lower_budget(self, endpoint_class: str, remaining: int | None) -> None:
        """Drip says fewer requests are left than our count: count the difference as used."""
        if remaining is None:
            return
        limits = self.source.rate_limits
        limit = limits.single if endpoint_class == "single" else limits.batch
        used, _ = self.spool.requests_since(self.source.account, endpoint_class, self.clock() - _window(limits))
        missing = (limit - used) - max(0, remaining)
        if missing > 0:
            self.spool.reserve(self.source.account, endpoint_class, missing)


class Delivery:
    """The senders of every source of the configuration, and the spool's housekeeping."""

    def __init__(self, config: RelayConfig, spool: Spool, client: DripClient, metrics: Metrics,
                 clock: Callable[[], float] = time.time):
        self.spool = spool
        self.client = client
        self.metrics = metrics
        self.clock = clock
        self.senders: dict[str, Sender] = {}
        self._by_id: dict[int, Sender] = {}
        self._stopping = threading.Event()
        self._housekeeper = threading.Thread(target=self._housekeeping, name="spool-housekeeping", daemon=True)
        for source in config.sources:
            self._add(source)
        spool.on_stored = self._stored

    def _add(self, source: Source) -> Sender:
        sender = Sender(source, self.spool, self.client, self.metrics, self.clock)
        self.senders[source.write_key] = sender
        self._by_id[sender.source_id] = sender
        return sender

    def start(self) -> None:
        for sender in self.senders.values():
            sender.start()
        self._housekeeper.start()

    def reconfigure(self, config: RelayConfig) -> None:
        """Apply a reloaded configuration: new sources start, changed ones update. A source that was
        removed keeps its sender until the relay restarts, so what it accepted is still delivered."""
        for source in config.sources:
            sender = self.senders.get(source.write_key)
            if sender is None:
                self._add(source).start()
            elif sender.source != source:
                sender.update(source)

    def stop(self, timeout: float = 8.0) -> bool:
        """Stop every sender after the request it has in flight; False if one is still waiting for Drip."""
        self._stopping.set()
        for sender in self.senders.values():
            sender.stop()
        deadline = time.monotonic() + timeout
        return all(sender.join(max(0.0, deadline - time.monotonic())) for sender in self.senders.values())

    def _stored(self, source_id: int) -> None:
        sender = self._by_id.get(source_id)
        if sender is not None:
            sender.stored()

    def _housekeeping(self) -> None:
        while not self._stopping.wait(60.0):
            try:
                self.spool.prune()
            except Exception:  # noqa: BLE001 - housekeeping must not stop the relay
                log.exception("spool housekeeping failed; trying again in a minute")
