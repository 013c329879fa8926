"""A running relay: its configuration, spool, senders and HTTP server, and how it stops.

SIGTERM or SIGINT: stop accepting, let the requests in progress commit, let each sender finish the Drip
request it has in flight, commit, exit 0 — within 10 seconds. A restart on the same spool continues
where this one stopped. SIGHUP (or a change of the configuration file, looked at every 2 seconds)
reloads the configuration; a bad one is reported and the old one kept.

One relay per spool: the spool's lock file is held for the relay's life (`flock`), so a second relay on
the same spool refuses to start instead of sending everything a second time.
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import waitress

from .config import ConfigError, RelayConfig, load_config
from .delivery import CREDENTIALS_REJECTED, Delivery
from .drip_client import DripClient
from .ingest import create_app
from .metrics import Metrics
from .spool import Spool

log = logging.getLogger("driptag.relay")

DEFAULT_SPOOL = "driptag-relay.sqlite3"
DEFAULT_DRIP_API = "https://api.getdrip.com"
STOP_WITHIN = 10.0
MAX_BODY_BYTES = 1024 * 1024  # the ingest refuses more than 500 KB anyway; waitress need not buffer a gigabyte
RELOAD_EVERY = 2.0


class SpoolBusy(RuntimeError):
    """Another relay serves this spool."""


class SpoolLock:
    """An exclusive lock on `<spool>.lock`, held while the relay runs (released by the kernel on exit,
    even after kill -9, so a stale lock never blocks a restart)."""

    def __init__(self, spool_path: Path):
        self.path = Path(f"{spool_path}.lock")
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            raise SpoolBusy(f"another relay is already serving the spool {spool_path} "
                            "(one relay per spool: two would send everything twice)") from None
        os.ftruncate(self._fd, 0)
        os.write(self._fd, f"{os.getpid()}\n".encode())

    def release(self) -> None:
        os.close(self._fd)


class Relay:
    """Everything `relay serve` runs. `config`, `spool` and `metrics` are what the ingest app reads."""

    def __init__(self, config_path: str | os.PathLike[str] | None, spool_path: str | os.PathLike[str],
                 drip_api: str = DEFAULT_DRIP_API, *, config: RelayConfig | None = None):
        self.config_path = Path(config_path) if config_path is not None else None
        self.config: RelayConfig = config if config is not None else load_config(self.config_path)
        self._config_stamp = self._stamp()
        self.client = DripClient(drip_api)
        spool_path = Path(spool_path)
        self.lock = SpoolLock(spool_path)
        try:
            self.spool = Spool(spool_path)
        except BaseException:
            self.lock.release()
            raise
        self.metrics = Metrics()
        self.metrics.watch(pending=lambda: self.spool.pending, dead_letters=self._dead_letters,
                           paused_accounts=self._paused_accounts)
        self.delivery = Delivery(self.config, self.spool, self.client, self.metrics)
        self.app = create_app(self)
        self._stop = threading.Event()
        self._server: Any = None

    # -- running ---------------------------------------------------------------------------------

    def start(self, host: str, port: int, *, threads: int = 8) -> tuple[str, int]:
        """Listen and start delivering; returns the address listened on (port 0: a free one)."""
        self._server = waitress.create_server(self.app, host=host, port=port, threads=threads, ident="driptag",
                                              channel_timeout=30, cleanup_interval=10, clear_untrusted_proxy_headers=True,
                                              max_request_body_size=MAX_BODY_BYTES)
        address = self._server.effective_host, self._server.effective_port
        self.delivery.start()
        threading.Thread(target=self._serve_http, name="http", daemon=True).start()
        threading.Thread(target=self._watch_config, name="config-watch", daemon=True).start()
        return address

    def _serve_http(self) -> None:
        """The HTTP server's loop, until stop() closes the server. stop() closes its sockets from another
        thread; the loop may be about to select() on them and get EBADF. Once stopping, that is the end of
        serving, not an error worth a traceback in the log."""
        try:
            self._server.run()
        except (OSError, ValueError):
            if not self._stop.is_set():
                raise

    def serve_until_signalled(self, host: str, port: int) -> None:
        """`relay serve`: run until SIGTERM or SIGINT, then stop cleanly."""
        signal.signal(signal.SIGTERM, lambda *_: self._stop.set())
        signal.signal(signal.SIGINT, lambda *_: self._stop.set())
        signal.signal(signal.SIGHUP, lambda *_: threading.Thread(target=self.reload, daemon=True).start())
        bound_host, bound_port = self.start(host, port)
        log.info("serving %d source(s) on http://%s:%s; spool %s; Drip API %s", len(self.config.sources),
                 bound_host if ":" not in str(bound_host) else f"[{bound_host}]", bound_port, self.spool.path,
                 self.client.base_url)
        self._stop.wait()
        log.info("stopping: no new requests; finishing what is in flight")
        self.stop()
        log.info("stopped; %d message(s) wait in the spool for the next start", self.spool.pending)

    def stop(self) -> None:
        """Stop accepting, finish the requests and the Drip calls in flight, commit, close."""
        deadline = time.monotonic() + STOP_WITHIN - 1.0
        self._stop.set()
        if self._server is not None:
            self._server.close()  # no new connections
            self._server.task_dispatcher.shutdown(cancel_pending=False, timeout=3)
        if not self.delivery.stop(timeout=max(0.5, deadline - time.monotonic() - 0.5)):
            log.warning("a Drip request was still in flight at the deadline; its records stay in the spool "
                        "and are sent again at the next start")
        self.spool.close()
        self.client.close()
        self.lock.release()

    # -- configuration ---------------------------------------------------------------------------

    def reload(self) -> bool:
        """Read the configuration file again; keep the running one if the new one is invalid."""
        if self.config_path is None:
            return False
        self._config_stamp = self._stamp()
        try:
            config = load_config(self.config_path)
        except ConfigError as error:
            for problem in error.problems:
                log.error("configuration not reloaded: %s", problem)
            return False
        self.config = config
        self.delivery.reconfigure(config)
        log.info("configuration reloaded: %d source(s)", len(config.sources))
        return True

    def _stamp(self) -> tuple[int, int] | None:
        try:
            info = self.config_path.stat() if self.config_path else None
        except OSError:
            return None
        return (info.st_mtime_ns, info.st_size) if info else None

    def _watch_config(self) -> None:
        while not self._stop.wait(RELOAD_EVERY):
            if self._stamp() != self._config_stamp:
                self.reload()

    # -- gauges ----------------------------------------------------------------------------------

    def _dead_letters(self) -> float:
        return self.spool.reader().execute("SELECT count(*) FROM dead_letters").fetchone()[0]

    def _paused_accounts(self) -> float:
        now = time.time()
        reader = self.spool.reader()
        paused = {row[0] for row in reader.execute("SELECT account FROM pauses WHERE until > ?", (now,))}
        paused |= {row[0] for row in reader.execute("SELECT account FROM sources WHERE paused = ?",
                                                    (CREDENTIALS_REJECTED,))}
        return len(paused)
