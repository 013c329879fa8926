"""The relay under load while Drip fails now and then: many messages through /v1/batch from several
concurrent senders, a relay running as `driptag relay serve` (its memory is its own), the Drip API
emulator answering with 5xx, gateway timeouts, dropped and reset connections, 429s and the concurrency
error between its successes.

At the end: every accepted message reached Drip, none twice, each person's in the order accepted, the
spool is empty, and the relay's peak resident memory stayed under its bound.

`make test` sends DRIPTAG_LOAD_MESSAGES messages (20,000 unless set); `make bench-relay-load` sends
100,000."""

from __future__ import annotations

import collections
import itertools
import json
import os
import re
import signal
import sqlite3
import threading
import time
from typing import Any

import httpx

from relay_support import WRITE_KEY, RelayProcess, drip_api, source, wait_for, write_config

MESSAGES = int(os.environ.get("DRIPTAG_LOAD_MESSAGES", "20000"))
SENDERS = 4                 # concurrent clients, each with its own people (so each person's order is one client's)
PEOPLE = 2000
PER_REQUEST = 500           # messages per /v1/batch request
IDENTIFY_EVERY = 10         # one call in ten is an identify, the others are tracks
# How far the relay's resident memory may grow over the idle process (about 42 MB: Python, Flask,
# waitress, httpx, SQLite). What the relay holds at a time does not depend on how many messages pass
# through it: the requests being parsed (at most 8 threads, each body ≤ 500 KB), the sender's look-ahead
# of 5,000 decoded records, one Drip request of 1,000 records, SQLite's page caches. Measured: about
# 17 MB over idle, for 20,000 and for 100,000 messages alike. The bound is about three times that: a relay
# that kept something of each message passing through would cross it (at 100,000 messages, half a
# kilobyte each is enough).
RSS_GROWTH_BOUND_MB = 48
# Injected one at a time, each once Drip has answered two requests well since the previous one was met.
FAULTS = ("500", "502", "503", "timeout", "drop", "reset", "429", "429-no-retry-after", "concurrency")
ANSWER_LABEL = {"500": "500", "502": "502", "503": "503", "timeout": "504", "drop": "connection",
                "reset": "connection", "429": "429", "429-no-retry-after": "429", "concurrency": "429"}
# Drip's hourly quotas, in a window of one second on both sides: Drip's limits still hold (the relay is
# held to them and the emulator enforces them), without an hour's wait for the batch budget.
LIMITS = {"single": 3600, "batch": 50, "windowSeconds": 1}


def person_email(person: int) -> str:
    return f"load{person}@example.com"


def messages_of(sender: int, total: int) -> list[dict[str, Any]]:
    """This sender's share of `total` calls, for its own people in turn, each with the person's sequence number."""
    people = [person for person in range(PEOPLE) if person % SENDERS == sender]
    next_seq: collections.Counter[int] = collections.Counter()
    out = []
    for n, person in zip(range(sender, total, SENDERS), itertools.cycle(people)):
        seq = next_seq[person]
        next_seq[person] += 1
        address = person_email(person)
        base = {"userId": f"u{person}", "messageId": f"load-{n}"}
        if n % IDENTIFY_EVERY == 0:
            out.append({"type": "identify", **base, "traits": {"email": address, "seq": seq}})
        else:
            out.append({"type": "track", **base, "event": "Load", "properties": {"email": address, "seq": seq}})
    return out


class Senders:
    """SENDERS threads posting their messages to /v1/batch, PER_REQUEST at a time, each request sent again
    (same messageIds: the relay keeps one) until the relay answers 200."""

    def __init__(self, url: str, total: int) -> None:
        self.url = url
        self.shares = [messages_of(sender, total) for sender in range(SENDERS)]
        self.errors: list[str] = []
        self.retries = 0
        self._lock = threading.Lock()
        self.threads = [threading.Thread(target=self._send, args=(share,), daemon=True) for share in self.shares]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def join(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        assert not any(thread.is_alive() for thread in self.threads), "a sender was still sending"
        assert not self.errors, f"the relay refused: {self.errors[:3]}"

    def _send(self, share: list[dict[str, Any]]) -> None:
        with httpx.Client(base_url=self.url, auth=(WRITE_KEY, ""), timeout=60) as client:
            for first in range(0, len(share), PER_REQUEST):
                body = {"batch": share[first:first + PER_REQUEST]}
                for attempt in range(20):
                    try:
                        response = client.post("/v1/batch", json=body)
                    except httpx.TransportError as error:
                        answer = repr(error)
                    else:
                        if response.status_code == 200:
                            break
                        answer = f"{response.status_code} {response.text}"
                    with self._lock:
                        self.retries += 1
                    time.sleep(0.2 * (attempt + 1))  # a client's back-off, as the Segment libraries do
                else:
                    self.errors.append(answer)
                    return


def metric(text: str, name: str) -> float:
    """The sum of a metric's samples in Prometheus text (whatever their labels; 0 when absent)."""
    return sum(float(value) for value in re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M))


def drip_answers(text: str) -> collections.Counter[str]:
    """The relay's count of Drip's answers that were not 2xx, by label."""
    counts: collections.Counter[str] = collections.Counter()
    for label, value in re.findall(r'^driptag_relay_drip_responses_total\{status="([^"]+)"\} (\S+)$', text, re.M):
        if not label.startswith("2"):
            counts[label] += int(float(value))
    return +counts


def successes(text: str) -> int:
    return sum(int(float(value)) for label, value in
               re.findall(r'^driptag_relay_drip_responses_total\{status="([^"]+)"\} (\S+)$', text, re.M)
               if label.startswith("2"))


class FaultDriver:
    """Injects FAULTS in turn, the next once the previous was met and Drip answered twice with 2xx since."""

    def __init__(self, drip: Any, scrape: Any) -> None:
        self.drip = drip
        self.scrape = scrape
        self.injected: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> list[str]:
        """Stop injecting; the faults the relay met (the last one injected may have found no request left)."""
        self._stop.set()
        self._thread.join(30)
        unmet = len(self.drip.state.faults())
        self.drip.state.clear_faults()
        return self.injected[:len(self.injected) - unmet]

    def _run(self) -> None:
        for fault in itertools.cycle(FAULTS):
            seconds = {"timeout": 1.0, "429": 1.0}.get(fault)
            self.drip.state.inject(fault, count=1, seconds=seconds)
            self.injected.append(fault)
            while self.drip.state.faults():
                if self._stop.wait(0.02):
                    return
            before = successes(self.scrape())
            while successes(self.scrape()) < before + 2:
                if self._stop.wait(0.05):
                    return


def _drained(text: str) -> bool:
    """Nothing waits in the spool (once every sender had its 200s: every record was delivered or lost)."""
    return metric(text, "driptag_relay_pending_records") == 0


def vm_kb(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"/proc/{pid}/status has no {field}")


def test_messages_under_load_from_concurrent_senders_while_drip_fails_arrive_once_in_order(tmp_path):
    total = MESSAGES
    spool = tmp_path / "relay.sqlite3"
    config = write_config(tmp_path / "relay.json", source(rateLimits=LIMITS))
    with drip_api(DRIP_API_SINGLE_PER_HOUR=LIMITS["single"], DRIP_API_BATCH_PER_HOUR=LIMITS["batch"],
                  DRIP_API_WINDOW_SECONDS=LIMITS["windowSeconds"]) as drip:
        relay = RelayProcess(config, spool, drip.url).wait_serving()
        try:
            scrape = lambda: httpx.get(relay.url + "/metrics", timeout=10).text  # noqa: E731
            scrape()
            idle_mb = vm_kb(relay.proc.pid, "VmRSS") / 1024
            faults = FaultDriver(drip, scrape)
            senders = Senders(relay.url, total)
            started = time.monotonic()
            faults.start()
            senders.start()
            senders.join(timeout=600)
            accepted_in = time.monotonic() - started
            wait_for(lambda: _drained(scrape()), "the spool emptied", timeout=900, every=0.2)
            drained_in = time.monotonic() - started
            met = faults.stop()
            text = scrape()
            assert metric(text, "driptag_relay_pending_records") == 0
            peak_mb = vm_kb(relay.proc.pid, "VmHWM") / 1024
            assert relay.signal(signal.SIGTERM) == 0
        finally:
            if relay.proc.poll() is None:
                relay.kill()
        received = drip.state.received()
    accepted: dict[str, list[int]] = collections.defaultdict(list)
    for message in itertools.chain.from_iterable(senders.shares):
        fields = message.get("traits") or message["properties"]
        accepted[fields["email"]].append(fields["seq"])
    delivered: dict[str, list[int]] = collections.defaultdict(list)
    for entry in sorted(received["subscribers"] + received["events"], key=lambda entry: entry["n"]):
        record = entry["record"]
        seq = record["properties"]["seq"] if "action" in record else int(record["custom_fields"]["seq"])
        delivered[record["email"]].append(seq)
    count = sum(map(len, delivered.values()))
    unique = {address: set(seqs) for address, seqs in delivered.items()}
    duplicates = count - sum(map(len, unique.values()))
    lost = sum(len(set(seqs) - unique.get(address, set())) for address, seqs in accepted.items())
    figures = {"messages": total, "senders": SENDERS, "delivered": count, "lost": lost, "duplicates": duplicates,
               "faults met": len(met), "client retries": senders.retries, "accepted in s": round(accepted_in, 1),
               "drained in s": round(drained_in, 1), "drip requests": int(metric(text, "driptag_relay_drip_responses_total")),
               "idle RSS MB": round(idle_mb, 1), "peak RSS MB": round(peak_mb, 1)}
    print("relay load:", json.dumps(figures))
    assert (lost, duplicates) == (0, 0), f"records lost or delivered twice: {figures}"
    disordered = {address: seqs for address, seqs in delivered.items() if seqs != accepted[address]}
    assert not disordered, f"{len(disordered)} people's records arrived out of order, e.g. " \
                           f"{next(iter(disordered.items()))}; {figures}"
    assert drip_answers(text) == collections.Counter(ANSWER_LABEL[fault] for fault in met), \
        f"Drip's answers other than 2xx are exactly the faults met ({met}): {figures}"
    with sqlite3.connect(spool) as db:
        left = db.execute("SELECT (SELECT count(*) FROM messages), (SELECT count(*) FROM dead_letters)").fetchone()
    assert left == (0, 0), f"the spool still holds {left[0]} records and {left[1]} dead letters"
    assert peak_mb - idle_mb < RSS_GROWTH_BOUND_MB, \
        f"the relay's resident memory grew from {idle_mb:.0f} MB to {peak_mb:.0f} MB under load; {figures}"
