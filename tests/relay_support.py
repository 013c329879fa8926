"""Helpers for the relay's tests: the Drip REST API emulator on 127.0.0.1, a relay in this process or as a
subprocess (where a crash or a signal is the point of the test), and polling with a deadline."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from driptag.emulators.drip_api import create_app, drip_api_for, start_server
from driptag.relay.config import parse_config
from driptag.relay.service import Relay

T = TypeVar("T")

ACCOUNT = "83702741"
TOKEN = "drip0token0for0tests0abcd"
WRITE_KEY = "test-write-key"
CAMPAIGN = "1234567"


def wait_for(check: Callable[[], T], what: str, timeout: float = 15.0, every: float = 0.02) -> T:
    """Poll `check` until it returns something truthy; fail saying `what` did not happen (and the last value)."""
    deadline = time.monotonic() + timeout
    value = check()
    while not value:
        if time.monotonic() > deadline:
            raise AssertionError(f"after {timeout:g} s, still not: {what} (last seen: {value!r})")
        time.sleep(every)
        value = check()
    return value


@dataclasses.dataclass
class DripApi:
    """The emulator, served on 127.0.0.1: `url` is what --drip-api takes; `state` is what it received."""

    url: str
    state: Any
    app: Any
    stop: Callable[[], None]

    def records(self, kind: str) -> list[dict[str, Any]]:
        """The records accepted of one kind ("subscribers", "events", "campaign_subscriptions")."""
        return [entry["record"] for entry in self.state.received()[kind]]

    def api_requests(self) -> list[dict[str, Any]]:
        """Every request to Drip's API endpoints (not the emulator's own /_… paths)."""
        return [r for r in self.state.requests() if "/_" not in r["path"]]

    def configure(self, **config: Any) -> None:
        self.app.config.update(config)


@contextmanager
def drip_api(**config: Any) -> Iterator[DripApi]:
    settings = {"DRIP_API_TOKENS": {ACCOUNT: TOKEN}, "DRIP_API_CAMPAIGNS": [CAMPAIGN], **config}
    app = create_app(settings)
    base, stop = start_server(app)
    try:
        yield DripApi(base + "/emulator/api", drip_api_for(app), app, stop)
    finally:
        stop()


def source(**overrides: Any) -> dict[str, Any]:
    """One entry of relay.json for the test account."""
    return {"writeKey": WRITE_KEY, "account": ACCOUNT, "apiToken": TOKEN, **overrides}


@contextmanager
def relay_in_process(tmp_path: Path, drip: DripApi, *sources: dict[str, Any], max_pending: int | None = None,
                     spool: Path | None = None) -> Iterator[Relay]:
    """A relay in this process (no signals), listening on a free port; `relay.url` is its base URL."""
    data: dict[str, Any] = {"sources": list(sources) or [source()]}
    if max_pending is not None:
        data["maxPending"] = max_pending
    config = parse_config(data, "relay.json", {})
    running = Relay(None, spool or tmp_path / "relay.sqlite3", drip.url, config=config)
    host, port = running.start("127.0.0.1", 0)
    running.url = f"http://{host}:{port}"  # type: ignore[attr-defined]
    try:
        yield running
    finally:
        running.stop()


class RelayProcess:
    """`driptag relay serve` as a subprocess; its stderr is collected line by line."""

    def __init__(self, config_path: Path, spool: Path, drip_url: str, *, env: dict[str, str] | None = None,
                 port: int = 0):
        self.lines: list[str] = []
        self._seen = threading.Condition()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "driptag", "relay", "serve", "--config", str(config_path), "--spool", str(spool),
             "--port", str(port), "--drip-api", drip_url],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
            env={**os.environ, **(env or {})})
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.url = ""

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._seen:
                self.lines.append(line.rstrip("\n"))
                self._seen.notify_all()
        with self._seen:
            self._seen.notify_all()

    def wait_for_line(self, pattern: str, timeout: float = 20.0) -> re.Match[str]:
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._seen:
            while True:
                for line in self.lines:
                    match = regex.search(line)
                    if match:
                        return match
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(f"the relay never said {pattern!r}; it said: {self.lines!r} "
                                         f"(exit status {self.proc.poll()})")
                self._seen.wait(min(left, 0.1))

    def wait_serving(self) -> "RelayProcess":
        match = self.wait_for_line(r"on (http://127\.0\.0\.1:\d+)")
        self.url = match.group(1)
        return self

    def signal(self, signum: int, timeout: float = 15.0) -> int:
        """Send `signum` and wait for the exit status."""
        self.proc.send_signal(signum)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)

    @property
    def stderr(self) -> str:
        return "\n".join(self.lines)


def write_config(path: Path, *sources: dict[str, Any], **top: Any) -> Path:
    path.write_text(json.dumps({"sources": list(sources) or [source()], **top}), encoding="utf-8")
    return path
