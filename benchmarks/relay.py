"""The relay in the benchmark: `driptag relay serve` as its own process, loaded from another process.

    .venv/bin/python benchmarks/run.py --relay-only            # these rows alone (a few minutes)
    .venv/bin/python benchmarks/run.py --relay-only --quick    # tiny counts: a smoke test (seconds)

benchmarks/run.py calls `measure(plan)` and puts `table_rows(results)` in its one table and the results
under "relay" in its JSON. Every figure stands next to the limit it is measured against, taken in the same
run on the same machine and disk:

- **ingest through /v1/batch**: 100 messages a request (analytics-python's track calls, each with a unique
  messageId, an e-mail in its properties, 10,000 people), BATCH_SENDERS concurrent keep-alive connections;
  the first 10,000 are not counted (the plan's warm_up_messages). Messages/s and request latency p50/p99 —
  next to the raw rate of fsynced SQLite commits on the same disk (WAL, synchronous=FULL, one row per
  commit): the physical limit for a relay that committed each request alone. The ratio is what group commit buys.
- **single /v1/track**: TRACK_SENDERS concurrent keep-alive connections, one message a request: requests/s
  and latency p50/p99 — next to a bare WSGI app (it reads the body and answers `{"success": true}`)
  under waitress with the relay's settings and thread count, loaded the same way.
- **drain**: the batch ingest leaves 100,000 events waiting (the plan's backlog); then delivery starts,
  and the time until the spool is empty is measured, with the Drip requests that took (requests per
  10,000 events, records per batch request) — next to the Drip API emulator taking the same events in
  batches of 1,000 posted back to back by one client (what the emulator itself needs).
- **1,000,000 pending**: a fresh relay filled through /v1/batch: the fill's rate, the spool's size on disk
  (next to the size of the records' JSON) and the relay's VmRSS and VmHWM from /proc/<pid>/status (next
  to its VmRSS right after it started).

How the processes are laid out: the relay (`python -m driptag relay serve`, waitress), the load
generator (`python benchmarks/relay.py load …`: threads over raw keep-alive sockets, cheaper per request
than any HTTP library, so the relay gets most of the machine) and the Drip API emulator (`… drip-api`,
werkzeug's threaded server) are three processes: none shares a GIL with another.

Delivery during ingest: waiting for its budget, as it is in a relay under any burst. Drip allows an
account 50 batch and 3,600 single requests an hour (about 53,600 records); a relay taking 10,000 messages
a second spends that in seconds and then waits for the hour to free it, with its backlog growing. So
each relay starts with a budget of one request of each class per hour (rateLimits {single: 1, batch: 1,
windowSeconds: 3600}) and spends it on a priming call and a priming batch before anything is measured;
from then on its sender delivers nothing and waits, and every ingest figure includes what that waiting
sender costs. The drain starts when relay.json gets the lifted quotas below and the relay is sent
SIGHUP (it reloads, and the sender starts on the backlog at once).

Quotas for the drain: "lifted" as far as the relay's configuration goes. A source's rateLimits may not
exceed Drip's 3,600 single / 50 batch requests per window, and the sender paces itself by that budget,
so the window is shortened instead: rateLimits {single: 3600, batch: 50, windowSeconds: 1}, and the
emulator's quotas the same (3,600 / 50 per second). The sender keeps every request in its window for
one second longer than the window (a margin so that it never runs ahead of Drip's count), so its budget
is 50 batch requests per 2 s (25,000 records/s) and, once those are spent, single requests (as at Drip's
limits, where the 3,600 singles an hour follow the 50 batches): 100,000 events cannot drain in less
than about 2 s. Every write is fsynced throughout: nothing is relaxed for the benchmark.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import inspect
import itertools
import json
import os
import re
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()

ACCOUNT = "83702741"
TOKEN = "bench0token0for0the0relay0abcd"
WRITE_KEY = "bench-write-key"
PEOPLE = 10_000
BATCH_SIZE = 100  # messages per /v1/batch request
BATCH_SENDERS = 4
TRACK_SENDERS = 8
DRIP_BATCH = 1000  # Drip's most records in one batch request
LIFTED = {"single": 3600, "batch": 50, "windowSeconds": 1}
SPENT = {"single": 1, "batch": 1, "windowSeconds": 3600}  # a budget the priming calls use up for the hour

TARGETS = {
    "batch_messages_per_second": 10_000,
    "track_requests_per_second": 1_000,
    "track_p99_ms": 50.0,
    "records_per_batch_request": 990,
    "rss_mb_at_million": 200,
}


@dataclasses.dataclass(frozen=True)
class Plan:
    """How much of each measurement: the full benchmark, or tiny counts for a smoke test."""

    warm_up_messages: int      # /v1/batch messages sent before the ingest is timed
    backlog: int               # messages of the timed ingest plus the warm-up: the events the drain drains
    track_warm_up: float       # seconds of /v1/track before it is timed
    track_seconds: float       # seconds of each round of /v1/track
    pending: int               # messages filled for the RSS and spool-size figures
    commit_seconds: float      # how long the raw fsynced commits are counted
    rounds: int = 3            # the timed ingest and /v1/track in rounds: the median is reported
    quick: bool = False


FULL = Plan(warm_up_messages=10_000, backlog=100_000, track_warm_up=2.0, track_seconds=4.0,
            pending=1_000_000, commit_seconds=3.0)
QUICK = Plan(warm_up_messages=200, backlog=1_000, track_warm_up=0.2, track_seconds=0.3,
             pending=3_000, commit_seconds=0.3, quick=True)


# ---------------------------------------------------------------------------------------------
# What the clients send


def message(prefix: str, number: int) -> str:
    """One analytics-python track call as JSON text; `prefix` + `number` make its messageId unique."""
    person = number % PEOPLE
    return ('{"type":"track","event":"Order Completed","userId":"user-%d","properties":{"email":'
            '"user-%d@example.com","revenue":19.99,"sku":"SKU-%d","currency":"USD","plan":"pro"},'
            '"context":{"library":{"name":"analytics-python","version":"2.3.4"},"ip":"203.0.113.7"},'
            '"timestamp":"2025-03-01T12:00:00.000000+00:00","integrations":{},"messageId":"%s-%d"}'
            % (person, person, number, prefix, number))


def drip_event(number: int) -> dict[str, Any]:
    """The event the relay sends Drip for message(…, number): the emulator-alone figure posts these."""
    person = number % PEOPLE
    return {"email": f"user-{person}@example.com", "action": "Order Completed",
            "properties": {"value": 1999, "sku": f"SKU-{number}", "currency": "USD", "plan": "pro"},
            "occurred_at": "2025-03-01T12:00:00Z"}


def basic(user: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:".encode()).decode("ascii")


# ---------------------------------------------------------------------------------------------
# The load generator (a process of its own: `relay.py load …`)


class Connection:
    """One keep-alive HTTP/1.1 connection over a plain socket: send prepared bytes, read one answer."""

    def __init__(self, host: str, port: int):
        self.address = (host, port)
        self.sock: socket.socket | None = None

    def request(self, data: bytes) -> int:
        """Send one request; the answer's status (its body is read and dropped)."""
        if self.sock is None:
            self.sock = socket.create_connection(self.address, timeout=60)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock = self.sock
        try:
            sock.sendall(data)
            buffer = b""
            while b"\r\n\r\n" not in buffer:
                chunk = sock.recv(65536)
                if not chunk:
                    raise ConnectionError("the server closed the connection")
                buffer += chunk
        except OSError:
            self.close()
            raise
        head, _, rest = buffer.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        length, close = 0, False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
        while len(rest) < length:
            chunk = sock.recv(65536)
            if not chunk:
                self.close()
                raise ConnectionError("the server closed the connection mid-answer")
            rest += chunk
        if close:
            self.close()
        return status

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def _request_bytes(host: str, port: int, path: str, body: bytes, authorization: str) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: {authorization}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            f"User-Agent: driptag-bench\r\n\r\n").encode("ascii") + body


def percentile(values: list[float], fraction: float) -> float:
    """The nearest-rank percentile of sorted `values`."""
    if not values:
        return float("nan")
    rank = max(1, min(len(values), round(fraction * len(values) + 0.5)))
    return values[rank - 1]


def _phase(threads: int, work: Callable[[Connection, list[tuple[float, int]]], None],
           connections: list[Connection]) -> tuple[float, list[tuple[float, int]]]:
    """Run `work` on each connection in its own thread; (wall seconds, [(latency s, status)])."""
    samples: list[list[tuple[float, int]]] = [[] for _ in range(threads)]
    workers = [threading.Thread(target=work, args=(connections[i], samples[i])) for i in range(threads)]
    start = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return time.perf_counter() - start, [sample for part in samples for sample in part]


def _summary(elapsed: float, samples: list[tuple[float, int]], per_request: int) -> dict[str, Any]:
    latencies = sorted(latency for latency, status in samples if status == 200)
    statuses: dict[str, int] = {}
    for _, status in samples:
        statuses[str(status)] = statuses.get(str(status), 0) + 1
    ok = len(latencies)
    return {"seconds": elapsed, "requests": len(samples), "ok": ok, "statuses": statuses,
            "requests_per_second": ok / elapsed if elapsed else 0.0,
            "messages_per_second": ok * per_request / elapsed if elapsed else 0.0,
            "p50_ms": percentile(latencies, 0.50) * 1000, "p99_ms": percentile(latencies, 0.99) * 1000,
            "max_ms": (latencies[-1] if latencies else float("nan")) * 1000}


def _rounds(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Rounds in one report: each figure the median of the rounds' (min and max beside the rates and
    p99), counts summed. On a shared machine one round can fall on another process's burst of work;
    the median is what the relay does, the spread says how quiet the machine was."""
    def median(key: str) -> float:
        return statistics.median(entry[key] for entry in rounds)

    statuses: dict[str, int] = {}
    for entry in rounds:
        for status, count in entry["statuses"].items():
            statuses[status] = statuses.get(status, 0) + count
    out: dict[str, Any] = {"rounds": rounds, "statuses": statuses,
                           "seconds": sum(entry["seconds"] for entry in rounds),
                           "requests": sum(entry["requests"] for entry in rounds),
                           "ok": sum(entry["ok"] for entry in rounds)}
    for key in ("requests_per_second", "messages_per_second", "p50_ms", "p99_ms", "max_ms"):
        out[key] = median(key)
    for key in ("requests_per_second", "messages_per_second", "p99_ms"):
        out[f"{key}_min"] = min(entry[key] for entry in rounds)
        out[f"{key}_max"] = max(entry[key] for entry in rounds)
    return out


def load(url: str, path: str, senders: int, batch: int, *, messages: int = 0, warm_up: int = 0,
         seconds: float = 0.0, warm_up_seconds: float = 0.0, rounds: int = 1, prefix: str = "m",
         progress: bool = False) -> dict[str, Any]:
    """POST to `url` + `path` from `senders` threads, each on its own keep-alive connection.

    `batch` > 0: /v1/batch bodies of that many messages, `warm_up` + `messages` messages in all, the
    warm-up not counted, the rest in `rounds` rounds. `batch` == 0: one message per request (its body is
    the message), for `warm_up_seconds` uncounted, then `rounds` rounds of `seconds`."""
    match = re.fullmatch(r"http://([^:/]+):(\d+)", url)
    if not match:
        raise ValueError(f"not an http://host:port URL: {url}")
    host, port = match.group(1), int(match.group(2))
    authorization = basic(WRITE_KEY)
    per_request = batch or 1

    def body(number: int) -> bytes:
        if batch:
            first = number * batch
            text = '{"batch":[' + ",".join(message(prefix, first + i) for i in range(batch)) + "]}"
        else:
            text = message(prefix, number)
        return _request_bytes(host, port, path, text.encode("utf-8"), authorization)

    def send(connection: Connection, into: list[tuple[float, int]], number: int) -> None:
        data = body(number)
        start = time.perf_counter()
        try:
            status = connection.request(data)
        except OSError:
            status = 0
        into.append((time.perf_counter() - start, status))

    connections = [Connection(host, port) for _ in range(senders)]
    report: dict[str, Any] = {"senders": senders, "messages_per_request": per_request, "path": path}

    def numbered(numbers: Iterator[int]) -> Callable[[Connection, list[tuple[float, int]]], None]:
        def work(connection: Connection, into: list[tuple[float, int]]) -> None:
            for number in numbers:  # one iterator shared by the threads: next() on it is atomic in CPython
                send(connection, into, number)
                if progress and number and number * batch % 100_000 == 0:
                    print(f"  … {number * batch:,} messages sent", file=sys.stderr, flush=True)
        return work

    def during(seconds_: float, numbers: Iterator[int]) -> Callable[[Connection, list[tuple[float, int]]], None]:
        deadline = time.perf_counter() + seconds_

        def work(connection: Connection, into: list[tuple[float, int]]) -> None:
            while time.perf_counter() < deadline:
                send(connection, into, next(numbers))
        return work

    measured = []
    if batch:
        first, last = warm_up // batch, (warm_up + messages) // batch
        if first:
            _phase(senders, numbered(iter(range(first))), connections)
        bounds = [first + (last - first) * n // rounds for n in range(rounds + 1)]
        for start, end in zip(bounds, bounds[1:]):
            measured.append(_summary(*_phase(senders, numbered(iter(range(start, end))), connections), per_request))
    else:
        numbers = itertools.count()
        if warm_up_seconds:
            _phase(senders, during(warm_up_seconds, numbers), connections)
        for _ in range(rounds):
            measured.append(_summary(*_phase(senders, during(seconds, numbers), connections), per_request))
    for connection in connections:
        connection.close()
    report.update(_rounds(measured))
    return report


# ---------------------------------------------------------------------------------------------
# The processes: the Drip API emulator, a bare WSGI app, the relay


def serve_drip_api() -> None:
    """`relay.py drip-api`: the emulator with the drain's quotas at /emulator/api and, at
    /alone/emulator/api, a second one without quotas (for the emulator-alone figure), plus
    /bench/summary: what the first one was asked, counted. Prints its base URL, serves until killed."""
    from driptag.emulators.drip_api import create_app, drip_api_for
    from flask import jsonify
    from werkzeug.middleware.dispatcher import DispatcherMiddleware
    from werkzeug.serving import WSGIRequestHandler, make_server

    app = create_app({"DRIP_API_TOKENS": {ACCOUNT: TOKEN}, "DRIP_API_SINGLE_PER_HOUR": LIFTED["single"],
                      "DRIP_API_BATCH_PER_HOUR": LIFTED["batch"],
                      "DRIP_API_WINDOW_SECONDS": LIFTED["windowSeconds"]})
    alone = create_app({"DRIP_API_TOKENS": {ACCOUNT: TOKEN}, "DRIP_API_SINGLE_PER_HOUR": 10**9,
                        "DRIP_API_BATCH_PER_HOUR": 10**9})

    @app.get("/bench/summary")
    def summary():  # noqa: ANN202 - a Flask view
        counts: dict[str, Any] = {"statuses": {}, "batch_requests": 0, "single_requests": 0, "batch_records": [],
                                  "events": len(drip_api_for(app).received()["events"])}
        for entry in drip_api_for(app).requests():
            if "/_" in entry["path"]:
                continue
            counts["statuses"][str(entry["status"])] = counts["statuses"].get(str(entry["status"]), 0) + 1
            if entry["status"] is None or not 200 <= entry["status"] < 300:
                continue
            if entry["path"].endswith("/batches"):
                counts["batch_requests"] += 1
                counts["batch_records"].append(sum(len(next(iter(part.values()))) for part in entry["body"]["batches"]))
            else:
                counts["single_requests"] += 1
        return jsonify(counts)

    class Quiet(WSGIRequestHandler):
        def log_request(self, *args: Any) -> None:
            pass

    server = make_server("127.0.0.1", 0, DispatcherMiddleware(app, {"/alone": alone}), threaded=True,
                         request_handler=Quiet)
    print(f"serving on http://127.0.0.1:{server.server_port}", flush=True)
    server.serve_forever()


def relay_threads() -> int:
    """The thread count `relay serve` gives waitress (Relay.start's default)."""
    from driptag.relay.service import Relay

    return int(inspect.signature(Relay.start).parameters["threads"].default)


def serve_bare_wsgi() -> None:
    """`relay.py bare-wsgi`: a WSGI app that reads the body and answers `{"success": true}`, under waitress
    with the relay's settings and thread count: what waitress alone costs per request here."""
    import waitress
    from driptag.relay.service import MAX_BODY_BYTES

    answer = b'{"success": true}'

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(answer)))])
        return [answer]

    server = waitress.create_server(app, host="127.0.0.1", port=0, threads=relay_threads(), ident="bare",
                                    channel_timeout=30, cleanup_interval=10, clear_untrusted_proxy_headers=True,
                                    max_request_body_size=MAX_BODY_BYTES)
    print(f"serving on http://127.0.0.1:{server.effective_port}", flush=True)
    server.run()


class Process:
    """A child process whose output is read line by line in the background (so its pipe never fills)."""

    def __init__(self, command: list[str], what: str):
        self.what = what
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self.proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_for(self, pattern: str, timeout: float = 30.0) -> re.Match[str]:
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self.lines:
                    found = regex.search(line)
                    if found:
                        return found
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError(f"{self.what} did not start: {' | '.join(self.lines[-10:])}")
                self._changed.wait(0.1)

    def url(self) -> str:
        return self.wait_for(r"on (http://127\.0\.0\.1:\d+)").group(1)

    def stop(self, timeout: float = 20.0) -> float:
        """SIGTERM, then wait; the seconds it took (SIGKILL after `timeout`)."""
        start = time.perf_counter()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return time.perf_counter() - start


def python(*args: str) -> list[str]:
    return [sys.executable, *args]


class Relay:
    """`python -m driptag relay serve` on a spool of its own in `folder`, delivering to `drip_url`."""

    def __init__(self, folder: Path, name: str, drip_url: str, *, max_pending: int = 1_000_000):
        self.folder = folder
        self.config = folder / f"{name}.json"
        self.spool = folder / f"{name}.sqlite3"
        self.max_pending = max_pending
        self.write_config(SPENT)
        self.process = Process(python("-m", "driptag", "relay", "serve", "--config", str(self.config),
                                      "--spool", str(self.spool), "--port", "0", "--drip-api", drip_url),
                               f"the relay ({name})")
        try:
            self.url = self.process.url()
            self.pid = self.process.proc.pid
            self.spend_budget()
        except BaseException:
            self.process.stop()
            raise

    def write_config(self, limits: dict[str, float]) -> None:
        data = {"sources": [{"writeKey": WRITE_KEY, "account": ACCOUNT, "apiToken": TOKEN, "rateLimits": limits}],
                "maxPending": self.max_pending}
        temporary = self.config.with_suffix(".tmp")
        temporary.write_text(json.dumps(data), encoding="utf-8")
        os.replace(temporary, self.config)

    def post(self, path: str, body: str) -> None:
        status = http_request(self.url + path, "POST", body.encode(), {"Authorization": basic(WRITE_KEY),
                                                                       "Content-Type": "application/json"})
        if status != 200:
            raise RuntimeError(f"the relay answered {status} to {path}")

    def spend_budget(self) -> None:
        """Use up the hour's budget of one single and one batch request: a lone call goes alone, then
        BATCH_AT calls go as a batch (after the sender's linger). From then on the sender waits for its
        budget, as a relay under a burst at Drip's limits does, and delivers nothing more."""
        from driptag.relay.delivery import BATCH_AT

        self.post("/v1/track", message("prime", 0))
        wait_until(lambda: self.pending() == 0, "the priming call delivered", timeout=30)
        self.post("/v1/batch", '{"batch":[' + ",".join(message("prime", n) for n in range(1, BATCH_AT + 1)) + "]}")
        wait_until(lambda: self.pending() == 0, "the priming batch delivered", timeout=30)

    def deliver(self) -> None:
        """Lifted quotas, and SIGHUP: the relay reloads and its sender starts on the backlog."""
        self.write_config(LIFTED)
        self.process.proc.send_signal(signal.SIGHUP)

    def pending(self) -> int:
        text = http_get(self.url + "/metrics").decode()
        found = re.search(r"^driptag_relay_pending_records (\S+)$", text, re.MULTILINE)
        if not found:
            raise RuntimeError("the relay's /metrics has no pending_records")
        return int(float(found.group(1)))

    def memory(self) -> dict[str, float]:
        """VmRSS and VmHWM (peak) of the relay's process, in MiB."""
        out = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                out[name] = int(value.split()[0]) / 1024
        return out

    def spool_bytes(self) -> dict[str, int]:
        return {suffix or "db": os.path.getsize(f"{self.spool}{suffix}") if os.path.exists(f"{self.spool}{suffix}") else 0
                for suffix in ("", "-wal", "-shm")}


def http_get(url: str, timeout: float = 30.0) -> bytes:
    import urllib.request

    with urllib.request.urlopen(url, timeout=timeout) as response:  # 127.0.0.1 only
        return response.read()


def http_request(url: str, method: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> int:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            response.read()
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def run_load(*args: str) -> dict[str, Any]:
    """The load generator as a process of its own; its JSON report (progress lines pass through).
    Any answer but 200 makes the figures meaningless: RuntimeError saying which."""
    done = subprocess.run(python(str(HERE), "load", *args), stdout=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"the load generator failed (status {done.returncode})")
    report = json.loads(done.stdout)
    if set(report["statuses"]) != {"200"}:
        raise RuntimeError(f"{report['path']} answered {report['statuses']} (status 0: no answer)")
    return report


def wait_until(check: Callable[[], bool], what: str, timeout: float, every: float = 0.05) -> float:
    """Poll `check` until true; the seconds it took (RuntimeError after `timeout`)."""
    start = time.perf_counter()
    while not check():
        if time.perf_counter() - start > timeout:
            raise RuntimeError(f"after {timeout:g} s, still not: {what}")
        time.sleep(every)
    return time.perf_counter() - start


# ---------------------------------------------------------------------------------------------
# The measurements


def fsynced_commits(folder: Path, seconds: float) -> dict[str, Any]:
    """Commits per second of one ~300-byte row each, WAL and synchronous=FULL, on the spool's disk."""
    path = folder / "commits.sqlite3"
    db = sqlite3.connect(str(path), isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = FULL")
    db.execute("CREATE TABLE t (seq INTEGER PRIMARY KEY AUTOINCREMENT, record TEXT NOT NULL)")
    row = message("c", 0)[:300]
    for _ in range(50):  # warm up
        db.execute("INSERT INTO t (record) VALUES (?)", (row,))
    commits, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        db.execute("INSERT INTO t (record) VALUES (?)", (row,))  # autocommit: one transaction, one fsync
        commits += 1
    db.close()
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.remove(f"{path}{suffix}")
    return {"commits_per_second": commits / elapsed, "us_per_commit": elapsed / commits * 1e6, "commits": commits}


def ingest_and_drain(folder: Path, drip_url: str, plan: Plan) -> dict[str, Any]:
    """Batch ingest into a fresh relay (its sender waiting for its budget), then the drain of what it took."""
    relay = Relay(folder, "ingest", drip_url + "/emulator/api")
    try:
        ingest = run_load(relay.url, "/v1/batch", "--senders", str(BATCH_SENDERS), "--batch", str(BATCH_SIZE),
                          "--warm-up", str(plan.warm_up_messages),
                          "--messages", str(plan.backlog - plan.warm_up_messages), "--rounds", str(plan.rounds),
                          "--prefix", "ingest")
        waiting = relay.pending()
        if waiting != plan.backlog:
            raise RuntimeError(f"the relay holds {waiting:,} records after taking {plan.backlog:,} messages")
        http_request(drip_url + "/emulator/api/_received", "DELETE")
        start = time.perf_counter()
        relay.deliver()
        wait_until(lambda: relay.pending() == 0, "the backlog drained", timeout=600)
        drained = time.perf_counter() - start
        counts = json.loads(http_get(drip_url + "/bench/summary"))
    finally:
        relay.process.stop()
    if counts["events"] != plan.backlog:
        raise RuntimeError(f"the emulator received {counts['events']:,} events of {plan.backlog:,}")
    requests = counts["batch_requests"] + counts["single_requests"]
    sizes = counts["batch_records"]
    return {
        "ingest": ingest,
        "drain": {"events": plan.backlog, "seconds": drained, "events_per_second": plan.backlog / drained,
                  "drip_requests": requests, "batch_requests": counts["batch_requests"],
                  "single_requests": counts["single_requests"], "statuses": counts["statuses"],
                  "requests_per_10000_events": requests / plan.backlog * 10_000,
                  "records_per_batch_request": sum(sizes) / len(sizes) if sizes else 0.0,
                  "smallest_batch": min(sizes) if sizes else 0,
                  "budget_batch_requests_per_second": LIFTED["batch"] / (LIFTED["windowSeconds"] + 1.0),
                  "rate_limits": LIFTED},
    }


def emulator_alone(drip_url: str, events: int) -> dict[str, Any]:
    """The emulator taking `events` in batches of 1,000 posted back to back by one client."""
    import httpx

    bodies = []
    for first in range(0, events, DRIP_BATCH):
        records = [drip_event(n) for n in range(first, min(events, first + DRIP_BATCH))]
        bodies.append(json.dumps({"batches": [{"events": records}]}, separators=(",", ":")).encode())
    url = f"{drip_url}/alone/emulator/api/v2/{ACCOUNT}/events/batches"
    with httpx.Client(headers={"Authorization": basic(TOKEN), "Content-Type": "application/json"}) as client:
        start = time.perf_counter()
        for body in bodies:
            answer = client.post(url, content=body)
            if answer.status_code != 201:
                raise RuntimeError(f"the emulator answered {answer.status_code}: {answer.text[:200]}")
        elapsed = time.perf_counter() - start
    return {"events": events, "requests": len(bodies), "seconds": elapsed}


def singles(folder: Path, drip_url: str, plan: Plan) -> dict[str, Any]:
    """/v1/track on a fresh relay (its sender waiting for its budget), then the bare WSGI app, loaded the same way."""
    arguments = ("--senders", str(TRACK_SENDERS), "--batch", "0", "--warm-up-seconds", str(plan.track_warm_up),
                 "--seconds", str(plan.track_seconds), "--rounds", str(plan.rounds))
    relay = Relay(folder, "track", drip_url + "/emulator/api")
    try:
        track = run_load(relay.url, "/v1/track", *arguments, "--prefix", "track")
        stored = relay.pending()
    finally:
        relay.process.stop()
    bare = Process(python(str(HERE), "bare-wsgi"), "the bare WSGI app")
    try:
        plain = run_load(bare.url(), "/v1/track", *arguments, "--prefix", "bare")
    finally:
        bare.stop()
    return {"track": {**track, "records_stored": stored}, "bare_wsgi": {**plain, "threads": relay_threads()}}


def million_pending(folder: Path, drip_url: str, plan: Plan) -> dict[str, Any]:
    """A fresh relay filled with `plan.pending` messages through /v1/batch (its sender waiting for its budget)."""
    relay = Relay(folder, "pending", drip_url + "/emulator/api", max_pending=max(1_000_000, plan.pending))
    try:
        started = relay.memory()
        fill = run_load(relay.url, "/v1/batch", "--senders", str(BATCH_SENDERS), "--batch", str(BATCH_SIZE),
                        "--messages", str(plan.pending), "--prefix", "fill", *(() if plan.quick else ("--progress",)))
        waiting = relay.pending()
        memory = relay.memory()
        on_disk = relay.spool_bytes()
    finally:
        stop_seconds = relay.process.stop()
    db = sqlite3.connect(f"file:{relay.spool}?mode=ro", uri=True)
    try:
        records_bytes = db.execute("SELECT coalesce(sum(length(record)), 0) FROM messages").fetchone()[0]
    finally:
        db.close()
    total = sum(on_disk.values())
    return {"messages": plan.pending, "pending": waiting, "fill": fill,
            "rss_mib": memory["VmRSS"], "hwm_mib": memory["VmHWM"], "rss_at_start_mib": started["VmRSS"],
            "spool_bytes": on_disk, "spool_total_bytes": total, "records_json_bytes": records_bytes,
            "spool_bytes_per_record": total / waiting if waiting else 0.0, "stop_seconds": stop_seconds}


def measure(plan: Plan = FULL) -> dict[str, Any]:
    """Every relay figure (see the module's docstring); RuntimeError when the benchmark cannot run."""
    results: dict[str, Any] = {"targets": TARGETS, "plan": dataclasses.asdict(plan),
                               "batch_size": BATCH_SIZE, "batch_senders": BATCH_SENDERS,
                               "track_senders": TRACK_SENDERS, "relay_threads": relay_threads()}
    with tempfile.TemporaryDirectory(prefix="driptag-bench-relay-") as name:
        folder = Path(name)
        results["disk"] = disk(folder)
        results["commits"] = fsynced_commits(folder, plan.commit_seconds)
        drip = Process(python(str(HERE), "drip-api"), "the Drip API emulator")
        try:
            drip_url = drip.url()
            results.update(ingest_and_drain(folder, drip_url, plan))
            results["emulator_alone"] = emulator_alone(drip_url, plan.backlog)
            results.update(singles(folder, drip_url, plan))
            results["pending"] = million_pending(folder, drip_url, plan)
        finally:
            drip.stop()
    return results


def disk(folder: Path) -> dict[str, str]:
    """The file system and block device the spools were on."""
    device, fstype, mount = "unknown", "unknown", "/"
    best = ""
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            source, point, kind = line.split()[:3]
            if str(folder.resolve()).startswith(point) and len(point) > len(best):
                best, device, fstype, mount = point, source, kind, point
    except OSError:
        pass
    name = Path(device).name
    rotational = Path(f"/sys/block/{name}/queue/rotational")
    kind = ""
    if rotational.exists():
        kind = "rotational" if rotational.read_text().strip() == "1" else "non-rotational"
    return {"folder": str(folder.parent), "device": device, "filesystem": fstype, "mount": mount,
            "reported_as": kind}


# ---------------------------------------------------------------------------------------------
# Rows of the benchmark's table: (what, driptag, next to, target, met?)


def _met(ok: bool) -> str:
    return "yes" if ok else "NO"


def _spread(figures: dict[str, Any], key: str, digits: int = 0) -> str:
    """A median with the rounds' min–max, when there was more than one round."""
    text = f"{figures[key]:,.{digits}f}"
    if len(figures.get("rounds", ())) > 1:
        text += f" ({figures[key + '_min']:,.{digits}f}–{figures[key + '_max']:,.{digits}f})"
    return text


def _latency(figures: dict[str, Any]) -> str:
    return f"{figures['p50_ms']:.1f} / {_spread(figures, 'p99_ms', 1)}"


def table_rows(results: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    t = TARGETS
    ingest, commits, drain = results["ingest"], results["commits"], results["drain"]
    track, bare, pending = results["track"], results["bare_wsgi"], results["pending"]
    alone = results["emulator_alone"]
    counted = ingest["ok"] * ingest["messages_per_request"]
    rounds = len(ingest["rounds"])
    return [
        (f"[relay] ingest via /v1/batch ({BATCH_SIZE} a request, {BATCH_SENDERS} senders, {counted:,} messages), "
         f"messages/s, median (min–max) of {rounds} rounds (next to: fsynced SQLite commits/s, one row each)",
         _spread(ingest, "messages_per_second"), f"{commits['commits_per_second']:,.0f}",
         f"≥ {t['batch_messages_per_second']:,}",
         _met(ingest["messages_per_second"] >= t["batch_messages_per_second"])),
        ("[relay] /v1/batch request latency p50 / p99 (min–max), ms", _latency(ingest), "", "", ""),
        (f"[relay] single /v1/track ({TRACK_SENDERS} senders, keep-alive), requests/s (next to: bare WSGI app, "
         f"waitress, {bare['threads']} threads)", _spread(track, "requests_per_second"),
         _spread(bare, "requests_per_second"), f"≥ {t['track_requests_per_second']:,}",
         _met(track["requests_per_second"] >= t["track_requests_per_second"])),
        ("[relay] /v1/track latency p50 / p99 (min–max), ms", _latency(track), _latency(bare),
         f"p99 ≤ {t['track_p99_ms']:g}", _met(track["p99_ms"] <= t["track_p99_ms"])),
        (f"[relay] Drip requests per 10,000 events delivered from a backlog (next to: all in batches of "
         f"{DRIP_BATCH:,})", f"{drain['requests_per_10000_events']:.1f}", f"{10_000 / DRIP_BATCH:.1f}", "", ""),
        ("[relay] records per batch request, mean (smallest)",
         f"{drain['records_per_batch_request']:,.1f} ({drain['smallest_batch']:,})", "",
         f"≥ {t['records_per_batch_request']:,}",
         _met(drain["records_per_batch_request"] >= t["records_per_batch_request"])),
        (f"[relay] time to drain {drain['events']:,} waiting events, quotas lifted, s (next to: the emulator "
         f"alone, {alone['requests']} batch{'es' if alone['requests'] != 1 else ''} of {DRIP_BATCH:,} back to back)",
         f"{drain['seconds']:.2f}", f"{alone['seconds']:.2f}", "", ""),
        (f"[relay] fill to {pending['messages']:,} pending via /v1/batch, messages/s (next to: ingest on a "
         "fresh spool)", f"{pending['fill']['messages_per_second']:,.0f}",
         f"{ingest['messages_per_second']:,.0f}", "", ""),
        (f"[relay] spool on disk with {pending['pending']:,} pending, MB (next to: the records' JSON)",
         f"{pending['spool_total_bytes'] / 1e6:,.0f} ({pending['spool_bytes_per_record']:,.0f} B/record)",
         f"{pending['records_json_bytes'] / 1e6:,.0f}", "", ""),
        (f"[relay] RSS with {pending['pending']:,} pending, MiB: VmRSS (peak VmHWM) (next to: VmRSS at start)",
         f"{pending['rss_mib']:,.0f} ({pending['hwm_mib']:,.0f})", f"{pending['rss_at_start_mib']:,.0f}",
         f"≤ {t['rss_mb_at_million']}", _met(pending["hwm_mib"] <= t["rss_mb_at_million"])),
    ]


# ---------------------------------------------------------------------------------------------
# Entry points of the helper processes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The relay benchmark's helper processes (benchmarks/run.py "
                                                 "--relay-only runs the benchmark).")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("drip-api", help="serve the Drip API emulator")
    commands.add_parser("bare-wsgi", help="serve a bare WSGI app under waitress")
    loader = commands.add_parser("load", help="load a server; print a JSON report")
    loader.add_argument("url")
    loader.add_argument("path")
    loader.add_argument("--senders", type=int, required=True)
    loader.add_argument("--batch", type=int, required=True, help="messages per /v1/batch request; 0: single calls")
    loader.add_argument("--messages", type=int, default=0)
    loader.add_argument("--warm-up", type=int, default=0)
    loader.add_argument("--seconds", type=float, default=0.0)
    loader.add_argument("--warm-up-seconds", type=float, default=0.0)
    loader.add_argument("--rounds", type=int, default=1)
    loader.add_argument("--prefix", default="m")
    loader.add_argument("--progress", action="store_true")
    args = parser.parse_args(argv)
    if args.command == "drip-api":
        serve_drip_api()
    elif args.command == "bare-wsgi":
        serve_bare_wsgi()
    else:
        report = load(args.url, args.path, args.senders, args.batch, messages=args.messages, warm_up=args.warm_up,
                      seconds=args.seconds, warm_up_seconds=args.warm_up_seconds, rounds=args.rounds,
                      prefix=args.prefix,
                      progress=args.progress)
        print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
