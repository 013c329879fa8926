"""The relay under process faults: nothing a client got a 200 for is lost, and only a Drip request that was
in flight when the relay died is sent again (at least once, never a second copy of anything else).

The relay runs as `driptag relay serve` in a subprocess, because a kill or a signal is the point; the Drip API
emulator runs in this process and records every record it accepted, so each test counts exactly what reached
Drip, what reached it twice and why. Every message carries its number `n` (messageId `m<n>`) to Drip: in an
event's properties, in a subscriber's custom fields. After a kill -9 the test reads the dead relay's spool
(read-only) to see what it had committed, before a new relay starts on it.

1. kill -9 while a backlog is delivered in batches: every message that got a 200 is delivered; the only
   duplicates are the records of the one request in flight, found in the spool after the kill.
2. kill -9 while a batch is being ingested (the client never read an answer), at three moments: with half the
   body sent, with all of it sent, and after the spool committed it. The client's retry of the same batch
   (same messageIds) after the restart ends with every message delivered exactly once.
3. kill -9 between Drip's answer and the commit that records it: sent again after the restart, exactly one
   duplicate.
4. SIGTERM while Drip holds the answer: exit 0 within 10 s. An answer that comes within the deadline is
   committed (nothing sent twice); one still held at the deadline leaves its records in the spool, and the
   restarted relay sends them again (exactly that request's records twice).
5. After kill -9 the spool's lock is free: a new relay starts on the spool and delivers.
6. A full disk (a 2 MB tmpfs filled up) and a read-only disk (ext4 on a loop device, turned read-only by the
   kernel's own error handling, as `errors=remount-ro` does on a failing disk): ingest answers 503 with the
   JSON error and stores nothing, /health answers 503; with space back (or the disk remounted and the relay
   restarted) new messages and the retried ones get 200 and are delivered once.
7. A person's records reach Drip in acceptance order across a kill -9 and a restart, including records
   accepted by the new relay while the old ones still wait.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from relay_support import WRITE_KEY, DripApi, RelayProcess, drip_api, source, wait_for, write_config

STOPPED_WITH_REQUEST_IN_FLIGHT = ("a Drip request was still in flight at the deadline; its records stay in the "
                                  "spool and are sent again at the next start")


# -- messages and what became of them ----------------------------------------------------------------------


def message(n: int, person: int, kind: str) -> dict[str, Any]:
    """Message number `n` of a person: messageId `m<n>`; `n` reaches Drip inside the record."""
    email = f"person{person}@example.com"
    if kind == "identify":
        return {"type": "identify", "userId": f"user{person}", "messageId": f"m{n}",
                "traits": {"email": email, "n": n}}
    return {"type": "track", "userId": f"user{person}", "event": "Step", "messageId": f"m{n}",
            "timestamp": "2026-12-01T12:00:00Z", "properties": {"email": email, "n": n}}


def rounds(people: int, first: int, last: int, kind_of_round: Callable[[int], str]) -> list[dict[str, Any]]:
    """Rounds `first`..`last - 1`: in each, one message per person; message n = round * people + person."""
    return [message(k * people + p, p, kind_of_round(k)) for k in range(first, last) for p in range(people)]


def tracks(first: int, count: int) -> list[dict[str, Any]]:
    """Events numbered `first`.. for as many people, one each."""
    return [message(first + p, p, "track") for p in range(count)]


def number(record: dict[str, Any]) -> int:
    """The message number a Drip record carries (an event's property, a subscriber's custom field)."""
    return record["properties"]["n"] if "properties" in record else int(record["custom_fields"]["n"])


def arrivals(drip: DripApi) -> list[tuple[str, int]]:
    """(person's e-mail, message number) of every record Drip accepted, in the order it accepted them."""
    received = drip.state.received()
    entries = received["subscribers"] + received["events"]
    return [(entry["record"]["email"], number(entry["record"]))
            for entry in sorted(entries, key=lambda entry: entry["n"])]


def delivered(drip: DripApi) -> Counter[int]:
    """How many times Drip accepted each message number."""
    return Counter(n for _, n in arrivals(drip))


def numbers_in_request(request: dict[str, Any]) -> set[int]:
    """The message numbers of one request Drip received (a single or a batch request)."""
    body = request["body"]
    if "batches" in body:
        (batch,) = body["batches"]
        records = batch.get("subscribers") or batch.get("events")
    else:
        records = body.get("subscribers") or body.get("events")
    return {number(record) for record in records}


def spool_numbers(spool: Path, table: str = "messages") -> set[int]:
    """The message numbers in a spool table (`messages`: waiting for Drip; `seen`: messageIds accepted),
    read with a read-only connection of this process, as the relay left the file."""
    with contextlib.closing(sqlite3.connect(f"file:{spool}?mode=ro", uri=True, timeout=10)) as db:
        return {int(row[0][1:]) for row in db.execute(f"SELECT message_id FROM {table}")}  # noqa: S608


def post_batch(relay: RelayProcess, messages: list[dict[str, Any]]) -> httpx.Response:
    return httpx.post(relay.url + "/v1/batch", json={"batch": messages}, auth=(WRITE_KEY, ""), timeout=30)


def accept(relay: RelayProcess, messages: list[dict[str, Any]], per_request: int = 500) -> None:
    """Send `messages` through /v1/batch; each request must get 200 {"success": true}."""
    for first in range(0, len(messages), per_request):
        answer = post_batch(relay, messages[first:first + per_request])
        assert (answer.status_code, answer.json()) == (200, {"success": True}), \
            f"messages {first}..{first + per_request - 1} were not accepted: {answer.status_code} {answer.text}"


def health(relay: RelayProcess) -> tuple[int, dict[str, Any]]:
    answer = httpx.get(relay.url + "/health", timeout=15)
    return answer.status_code, answer.json()


def wait_drained(relay: RelayProcess, drip: DripApi, records: int, timeout: float = 30.0) -> None:
    """Wait until Drip accepted `records` records and the relay's spool is empty (asked last: each /health
    commits a write, and the full-disk test's spool has 2 MB for all of them)."""
    wait_for(lambda: len(arrivals(drip)) >= records, f"Drip accepted {records} records", timeout)
    wait_for(lambda: health(relay) == (200, {"ok": True, "pending": 0}), "the relay's spool is empty", timeout)


def in_flight_at_kill(drip: DripApi, spool: Path, accepted: set[int]) -> set[int]:
    """After a kill -9: the records Drip accepted but the dead relay had not committed as delivered.

    Checks on the way that nothing was lost at the kill (every accepted message is at Drip or in the spool)
    and that those records are exactly the ones of the last request the relay made, or none (the kill came
    after that request's commit): the relay sends one request at a time and removes its records in the one
    transaction that records Drip's answer. Call it once the emulator holds no answer any more.
    """
    pending = spool_numbers(spool)
    at_drip = delivered(drip)
    assert max(at_drip.values(), default=1) == 1, f"sent twice before the kill: {at_drip.most_common(3)}"
    lost = accepted - pending - set(at_drip)
    assert not lost, f"{len(lost)} accepted messages are neither at Drip nor in the spool, e.g. {sorted(lost)[:5]}"
    in_flight = pending & set(at_drip)
    # A request held by the emulator's `delay` is logged once its answer is given: wait for every one.
    wait_for(lambda: sum(len(numbers_in_request(r)) for r in drip.api_requests() if r["status"] in (200, 201, 204))
             == len(at_drip), "the emulator logged every request whose records it accepted")
    last = numbers_in_request([r for r in drip.api_requests() if r["status"] in (200, 201, 204)][-1])
    assert in_flight in (set(), last), \
        f"accepted by Drip but still in the spool: {len(in_flight)} records, not those of the last request " \
        f"({len(last)}): {sorted(in_flight)[:10]}"
    return in_flight


# -- relays as subprocesses ---------------------------------------------------------------------------------


class Relays:
    """Starts `driptag relay serve` processes for a test and kills whatever still runs at its end."""

    def __init__(self, tmp_path: Path):
        self.config = write_config(tmp_path / "relay.json", source())
        self.started: list[RelayProcess] = []

    def start(self, drip: DripApi, spool: Path) -> RelayProcess:
        relay = RelayProcess(self.config, spool, drip.url)
        self.started.append(relay)
        return relay.wait_serving()

    def kill_all(self) -> None:
        for relay in self.started:
            if relay.proc.poll() is None:
                relay.kill()


@pytest.fixture
def relays(tmp_path: Path) -> Iterator[Relays]:
    running = Relays(tmp_path)
    try:
        yield running
    finally:
        running.kill_all()


def stop(relay: RelayProcess) -> float:
    """SIGTERM: the relay must exit 0 without a traceback in its log. Returns the seconds it took."""
    started = time.monotonic()
    status = relay.signal(signal.SIGTERM)
    took = time.monotonic() - started
    relay._reader.join(10)  # its stderr, read to the end
    assert status == 0, f"exit status {status} after SIGTERM; the relay said: {relay.stderr}"
    assert "Traceback" not in relay.stderr, f"a clean stop logged a traceback: {relay.stderr}"
    return took


# -- 1. kill -9 during a backlog ----------------------------------------------------------------------------


def test_kill_9_while_a_backlog_is_delivered_loses_nothing_and_repeats_only_the_request_in_flight(tmp_path, relays):
    # 200 people, each identified and tracked in turn (10 rounds): the backlog of 2,000 goes to Drip in 10
    # batch requests of 200 (a person's upsert and event cannot share a batch). Drip holds each of the first
    # four answers 0.25 s and the fifth until the relay is dead: the kill comes while request 5 is in flight.
    backlog = rounds(200, 0, 10, lambda k: "identify" if k % 2 == 0 else "track")
    everything = set(range(2000))
    spool = tmp_path / "spool.sqlite3"
    with drip_api() as drip:
        drip.state.inject("delay", count=4, seconds=0.25)
        drip.state.inject("delay", count=1, seconds=60)
        relay = relays.start(drip, spool)
        accept(relay, backlog)
        wait_for(lambda: len(arrivals(drip)) == 1000, "Drip took the records of five requests")
        relay.kill()
        drip.state.clear_faults()  # the held answer goes out, to nobody
        in_flight = in_flight_at_kill(drip, spool, everything)
        assert len(in_flight) == 200, "the records of request 5, taken by Drip, not committed by the relay"

        again = relays.start(drip, spool)
        wait_drained(again, drip, 2200)
        counts = delivered(drip)
        assert set(counts) == everything, f"never delivered: {sorted(everything - set(counts))[:10]}"
        assert {n for n, c in counts.items() if c > 1} == in_flight, "sent twice: only the request in flight"
        assert max(counts.values()) == 2 and sum(counts.values()) == 2200
        assert [len(numbers_in_request(r)) for r in drip.api_requests()] == [200] * 11
        stop(again)


# -- 2. kill -9 during ingest, then the client's retry --------------------------------------------------------


def raw_request(url: str, body: bytes, send: int) -> socket.socket:
    """POST /v1/batch over a plain socket, sending only the first `send` bytes of the body; the answer is
    left unread (the caller decides whether the client ever sees it)."""
    parts = urlsplit(url)
    connection = socket.create_connection((parts.hostname, parts.port), timeout=10)
    credentials = base64.b64encode(f"{WRITE_KEY}:".encode()).decode()
    head = (f"POST /v1/batch HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: application/json\r\n"
            f"Authorization: Basic {credentials}\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    connection.sendall(head + body[:send])
    return connection


@pytest.mark.parametrize("moment", ["half the body sent", "the whole body sent", "the batch committed"])
def test_kill_9_during_ingest_and_the_clients_retry_deliver_each_message_exactly_once(tmp_path, relays, moment):
    batch = tracks(0, 2000)
    numbers = set(range(2000))
    body = json.dumps({"batch": batch}).encode()
    spool = tmp_path / "spool.sqlite3"
    with drip_api() as drip:
        drip.state.inject("503", count=10_000)  # Drip is down: whatever is stored waits in the spool
        relay = relays.start(drip, spool)
        connection = raw_request(relay.url, body, len(body) // 2 if moment == "half the body sent" else len(body))
        if moment == "the batch committed":
            wait_for(lambda: len(spool_numbers(spool)) == 2000, "the spool committed the batch")
        relay.kill()
        connection.close()  # the client never saw an answer: it will send the same batch again

        stored = spool_numbers(spool)
        expected = {"half the body sent": [set()], "the whole body sent": [set(), numbers],
                    "the batch committed": [numbers]}[moment]
        assert stored in expected, f"{len(stored)} of the batch's 2,000 messages were stored (all or none)"
        assert spool_numbers(spool, "seen") == stored, "a messageId is remembered exactly when its message is stored"
        assert drip.records("events") == []

        drip.state.clear_faults()
        again = relays.start(drip, spool)
        retry = post_batch(again, batch)
        assert (retry.status_code, retry.json()) == (200, {"success": True})
        wait_drained(again, drip, 2000)
        counts = delivered(drip)
        assert set(counts) == numbers and max(counts.values()) == 1, \
            f"not exactly once: {len(numbers - set(counts))} missing, {sum(counts.values()) - len(counts)} repeated"
        duplicates = re.search(r"^driptag_relay_duplicate_messages_total\{[^}]*\} (\S+)$",
                               httpx.get(again.url + "/metrics").text, re.M)
        assert float(duplicates.group(1) if duplicates else 0) == len(stored), \
            "the retry's messages the dead relay had stored are acknowledged as duplicates, not stored again"
        stop(again)


# -- 3. kill -9 between Drip's answer and the commit ------------------------------------------------------------


def drip_answers(relay: RelayProcess, status: str) -> float:
    """How many answers with `status` the relay has counted from Drip (its /metrics)."""
    text = httpx.get(relay.url + "/metrics", timeout=10).text
    found = re.search(rf'^driptag_relay_drip_responses_total\{{status="{status}"\}} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


def test_kill_9_between_drips_answer_and_the_commit_sends_that_record_exactly_twice(tmp_path, relays):
    spool = tmp_path / "spool.sqlite3"
    with drip_api() as drip:
        # Drip takes the event at once and holds its answer 2 s; meanwhile this test takes the spool's write lock,
        # so when the answer comes the relay counts it (its metrics) and then waits to commit it: kill -9 there.
        drip.state.inject("delay", count=1, seconds=2)
        relay = relays.start(drip, spool)
        accept(relay, [message(0, 0, "track")])
        wait_for(lambda: drip.records("events"), "Drip took the event")
        with contextlib.closing(sqlite3.connect(spool, timeout=10, isolation_level=None)) as blocker:
            blocker.execute("BEGIN IMMEDIATE")
            assert drip.api_requests() == [], "Drip answered before the test held the spool's write lock"
            wait_for(lambda: drip_answers(relay, "204") == 1, "the relay received Drip's 204")
            relay.kill()
            blocker.execute("ROLLBACK")
        assert spool_numbers(spool) == {0}, "the delivery was not committed: the event still waits"

        again = relays.start(drip, spool)
        wait_drained(again, drip, 2)
        event = {"email": "person0@example.com", "action": "Step", "properties": {"n": 0},
                 "occurred_at": "2026-12-01T12:00:00.000Z"}
        assert drip.records("events") == [event, event], "the one event, sent again after the restart"
        assert [(r["path"].rsplit("/", 1)[-1], r["status"]) for r in drip.api_requests()] == [("events", 204)] * 2
        stop(again)


# -- 4. SIGTERM while Drip holds the answer -------------------------------------------------------------------


@pytest.mark.parametrize("hold, sent_twice", [(2.0, False), (60.0, True)],
                         ids=["answered within the deadline: committed", "held past the deadline: sent again"])
def test_sigterm_while_drip_holds_the_answer_exits_0_within_10_s_and_loses_nothing(tmp_path, relays, hold, sent_twice):
    # 100 people, identified then tracked: request 1 is the 100 upserts (held by Drip), request 2 the 100 events.
    messages = rounds(100, 0, 2, lambda k: "identify" if k == 0 else "track")
    upserts, events = set(range(100)), set(range(100, 200))
    spool = tmp_path / "spool.sqlite3"
    with drip_api() as drip:
        drip.state.inject("delay", count=1, seconds=hold)
        relay = relays.start(drip, spool)
        accept(relay, messages)
        wait_for(lambda: len(drip.records("subscribers")) == 100, "Drip took the 100 upserts (and holds its answer)")
        took = stop(relay)
        assert took < 10, f"the relay took {took:.1f} s to stop"
        left = 200 if sent_twice else 100
        relay.wait_for_line(rf"stopped; {left} message\(s\) wait in the spool for the next start$")
        assert (STOPPED_WITH_REQUEST_IN_FLIGHT in relay.stderr) is sent_twice, relay.stderr
        # Committed: only the events wait. Not committed: the upserts wait too, though Drip has them.
        assert spool_numbers(spool) == (upserts | events if sent_twice else events)
        assert drip.records("events") == []

        drip.state.clear_faults()  # the held answer goes out now (to nobody, when the relay has gone)
        again = relays.start(drip, spool)
        wait_drained(again, drip, 300 if sent_twice else 200)
        counts = delivered(drip)
        assert {n: c for n, c in counts.items() if c != 1} == ({n: 2 for n in upserts} if sent_twice else {})
        assert set(counts) == upserts | events
        stop(again)


# -- 5. the spool's lock after kill -9 ------------------------------------------------------------------------


def test_after_kill_9_a_new_relay_can_start_on_the_spool(tmp_path, relays):
    spool = tmp_path / "spool.sqlite3"
    lock = Path(f"{spool}.lock")
    with drip_api() as drip:
        first = relays.start(drip, spool)
        first.kill()
        assert lock.read_text() == f"{first.proc.pid}\n", "the dead relay's lock file is still there"
        second = relays.start(drip, spool)  # the kernel released the flock with the dead process
        assert lock.read_text() == f"{second.proc.pid}\n"
        accept(second, [message(0, 0, "track")])
        wait_drained(second, drip, 1)
        assert delivered(drip) == Counter({0: 1})
        stop(second)


# -- 6. a full disk, a read-only disk ------------------------------------------------------------------------


def run_as_root(*command: str) -> None:
    """Run a mount-related command; this test needs root (CI runs as root) and fails loudly without it."""
    result = subprocess.run(command, capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        pytest.fail(f"`{' '.join(command)}` failed (exit {result.returncode}): {result.stderr.strip()}; the disk "
                    "fault tests mount a tmpfs and an ext4 loop device, which needs root", pytrace=False)


def unmount(path: Path) -> None:
    if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(directory: Path) -> None:
    """Write a file until the disk has no byte left."""
    descriptor = os.open(directory / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(descriptor, b"\0" * 65536)
    except OSError as error:
        assert error.errno == errno.ENOSPC, error
    finally:
        os.close(descriptor)
    try:  # the last partial block, byte by byte
        with open(directory / "filler", "ab", buffering=0) as filler:
            while filler.write(b"\0"):
                pass
    except OSError as error:
        assert error.errno == errno.ENOSPC, error


@pytest.fixture
def full_disk(tmp_path: Path, relays: Relays) -> Iterator[Path]:
    """A 2 MB tmpfs (the relays are killed before it is unmounted)."""
    mountpoint = tmp_path / "tmpfs"
    mountpoint.mkdir()
    run_as_root("mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mountpoint))
    try:
        yield mountpoint
    finally:
        relays.kill_all()
        unmount(mountpoint)


class LoopDisk:
    """An 8 MB ext4 file system (no journal) on a loop device, mounted with errors=remount-ro."""

    def __init__(self, tmp_path: Path):
        self.image = tmp_path / "disk.img"
        self.mountpoint = tmp_path / "ext4"
        self.mountpoint.mkdir()
        with open(self.image, "wb") as image:
            image.truncate(8 << 20)
        run_as_root("mkfs.ext4", "-q", "-O", "^has_journal", str(self.image))
        self.mount()

    def mount(self) -> None:
        run_as_root("mount", "-o", "loop,errors=remount-ro", str(self.image), str(self.mountpoint))

    def fail(self) -> None:
        """What ext4 does on an I/O error with errors=remount-ro: the file system turns read-only at once, with
        the relay's files still open for writing (a plain `mount -o remount,ro` would refuse: files are busy)."""
        device = subprocess.run(["findmnt", "-n", "-o", "SOURCE", str(self.mountpoint)], capture_output=True,
                                text=True).stdout.strip()
        trigger = Path("/sys/fs/ext4") / Path(device).name / "trigger_fs_error"
        if not trigger.exists():
            pytest.fail(f"{trigger} does not exist: cannot make the ext4 disk fail", pytrace=False)
        trigger.write_text("1")
        with pytest.raises(OSError) as refused:
            (self.mountpoint / "probe").touch()
        assert refused.value.errno == errno.EROFS, refused.value


@pytest.fixture
def loop_disk(tmp_path: Path, relays: Relays) -> Iterator[LoopDisk]:
    disk = LoopDisk(tmp_path)
    try:
        yield disk
    finally:
        relays.kill_all()
        unmount(disk.mountpoint)


def spool_refused(relay: RelayProcess, messages: list[dict[str, Any]], why: str) -> None:
    """The relay answers 503 with its JSON error, and /health says the same, while the disk is in trouble."""
    assert health(relay) == (503, {"ok": False, "pending": 0, "error": f"the spool could not commit: {why}"})
    answer = post_batch(relay, messages)
    assert (answer.status_code, answer.headers.get("Retry-After"), answer.json()) == (503, "30", {
        "success": False, "error": f"the relay could not store the messages (the spool could not commit: {why}); "
                                   "nothing was stored: retry later"})


def test_a_full_disk_answers_503_and_stores_nothing_and_the_relay_recovers_when_space_is_back(
        tmp_path, relays, full_disk):
    spool = full_disk / "spool.sqlite3"
    before, refused, after = tracks(0, 10), tracks(10, 2000), tracks(2010, 10)
    with drip_api() as drip:
        relay = relays.start(drip, spool)
        accept(relay, before)
        wait_drained(relay, drip, 10)
        fill(full_disk)
        spool_refused(relay, refused, "database or disk is full")
        assert spool_numbers(spool, "seen") == set(range(10)), "no messageId of the refused batch was remembered"

        (full_disk / "filler").unlink()
        assert health(relay) == (200, {"ok": True, "pending": 0})
        accept(relay, after)
        accept(relay, refused)  # the client's retry of the batch that got 503: stored now, not a duplicate
        wait_drained(relay, drip, 2020)
        assert delivered(drip) == Counter(range(2020)), "every message that got a 200 exactly once"
        stop(relay)


def test_a_read_only_disk_answers_503_and_stores_nothing_and_a_restart_on_the_repaired_disk_takes_the_retry(
        tmp_path, relays, loop_disk):
    spool = loop_disk.mountpoint / "spool.sqlite3"
    before, refused, after = tracks(0, 10), tracks(10, 2000), tracks(2010, 10)
    with drip_api() as drip:
        relay = relays.start(drip, spool)
        accept(relay, before)
        wait_drained(relay, drip, 10)
        loop_disk.fail()
        spool_refused(relay, refused, "disk I/O error")
        took = stop(relay)
        assert took < 10, f"the relay took {took:.1f} s to stop on a read-only disk"

        unmount(loop_disk.mountpoint)  # the repair: the file system mounted again, writable
        loop_disk.mount()
        assert spool_numbers(spool, "seen") == set(range(10)), "no messageId of the refused batch was remembered"
        again = relays.start(drip, spool)
        assert health(again) == (200, {"ok": True, "pending": 0})
        accept(again, after)
        accept(again, refused)
        wait_drained(again, drip, 2020)
        assert delivered(drip) == Counter(range(2020)), "every message that got a 200 exactly once"
        stop(again)


# -- 7. per-person order across a kill and a restart ---------------------------------------------------------


def test_each_persons_records_reach_drip_in_acceptance_order_across_kill_9_and_restart(tmp_path, relays):
    # 20 people, 30 messages each: an identify, two tracks, an identify, ... A person's two tracks share a batch.
    def kind(k: int) -> str:
        return "identify" if k % 3 == 0 else "track"

    people = 20
    spool = tmp_path / "spool.sqlite3"
    with drip_api() as drip:
        # Requests of 20 upserts or 40 events: Drip holds the first three answers 0.2 s, the fourth (40 events,
        # 120 records in all) until the relay is dead.
        drip.state.inject("delay", count=3, seconds=0.2)
        drip.state.inject("delay", count=1, seconds=60)
        relay = relays.start(drip, spool)
        accept(relay, rounds(people, 0, 15, kind))
        wait_for(lambda: len(arrivals(drip)) == 120, "Drip took the records of four requests")
        relay.kill()
        drip.state.clear_faults()
        in_flight = in_flight_at_kill(drip, spool, set(range(300)))
        assert len(in_flight) == 40

        again = relays.start(drip, spool)
        accept(again, rounds(people, 15, 30, kind))  # accepted while the dead relay's records still wait
        wait_drained(again, drip, 600 + len(in_flight))
        seen_once: set[int] = set()
        by_person: dict[str, list[int]] = {}
        for email, n in arrivals(drip):
            if n in in_flight and n not in seen_once:
                seen_once.add(n)  # the copy the dead relay sent and never committed: it came again after
                continue
            by_person.setdefault(email, []).append(n)
        assert seen_once == in_flight
        for p in range(people):
            expected = [k * people + p for k in range(30)]
            got = by_person.get(f"person{p}@example.com")
            assert got == expected, f"person {p}: Drip got {got}, accepted in the order {expected}"
        stop(again)
