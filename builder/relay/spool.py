"""The spool: everything the relay accepted and has not yet delivered, in one SQLite file.

Nothing accepted may be lost, so the relay answers a client only after what it accepted is committed
with an fsync (WAL mode, ``synchronous=FULL``: a commit survives a crash or a power loss). A message
leaves the spool only in the same transaction that records Drip's 2xx for it (ack after commit).

One thread writes; request threads and senders hand it jobs and wait for the commit. It runs every job
that waits in one transaction, so many concurrent requests share one fsync (group commit). Readers
(senders, `relay status` in another process) use their own connections: WAL lets them read while the
writer writes.

Tables: ``messages`` (pending Drip records, in acceptance order), ``people`` (userId/anonymousId →
e-mail), ``seen`` (messageIds of the last 24 hours), ``requests`` (Drip requests made, for the hourly
budgets), ``pauses`` (an account's endpoint class told to wait), ``sources`` (per source: credentials
pause, last Drip error), ``stats`` (delivered per hour, skipped by reason), ``dead_letters``.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

from .config import Source
from .mapping import InvalidMessage, map_message

T = TypeVar("T")
log = logging.getLogger("driptag.relay")

DEDUP_SECONDS = 24 * 3600
WRITE_TIMEOUT = 60.0  # a commit that takes longer means the disk is in trouble: the caller answers 503
_MAX_JOBS_PER_COMMIT = 256

SCHEMA = """
CREATE TABLE IF NOT EXISTS sources (
    id INTEGER PRIMARY KEY,
    write_key TEXT NOT NULL UNIQUE,
    account TEXT NOT NULL,
    paused TEXT,                -- why the whole source waits (credentials rejected), or NULL
    token_fingerprint TEXT,     -- which token Drip rejected (a hash, never the token)
    last_error TEXT,
    last_error_at REAL
);
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    source_id INTEGER NOT NULL,
    person TEXT NOT NULL,        -- the e-mail, lower-cased: a person's records go in this order
    kind TEXT NOT NULL,          -- subscriber | event | campaign
    campaign_id TEXT,
    record TEXT NOT NULL,        -- the record as Drip's API takes it, JSON
    message_id TEXT,
    after_seq INTEGER,           -- a campaign subscription waits for this subscriber upsert
    accepted_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    not_before REAL NOT NULL DEFAULT 0,
    single_only INTEGER NOT NULL DEFAULT 0  -- Drip rejected it inside a batch: send it alone
);
CREATE INDEX IF NOT EXISTS messages_by_source ON messages (source_id, seq);
CREATE TABLE IF NOT EXISTS people (
    source_id INTEGER NOT NULL, id_kind TEXT NOT NULL, ident TEXT NOT NULL, email TEXT NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (source_id, id_kind, ident)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS seen (
    source_id INTEGER NOT NULL, message_id TEXT NOT NULL, at REAL NOT NULL,
    PRIMARY KEY (source_id, message_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS seen_by_age ON seen (at);
CREATE TABLE IF NOT EXISTS requests (
    account TEXT NOT NULL, class TEXT NOT NULL, at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS requests_by_account ON requests (account, class, at);
CREATE TABLE IF NOT EXISTS pauses (
    account TEXT NOT NULL, class TEXT NOT NULL, until REAL NOT NULL, reason TEXT NOT NULL,
    PRIMARY KEY (account, class)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS stats (
    source_id INTEGER NOT NULL, name TEXT NOT NULL, hour INTEGER NOT NULL, n INTEGER NOT NULL,
    PRIMARY KEY (source_id, name, hour)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    source_id INTEGER NOT NULL, person TEXT NOT NULL, kind TEXT NOT NULL, campaign_id TEXT,
    record TEXT NOT NULL, message_id TEXT, accepted_at REAL NOT NULL, failed_at REAL NOT NULL,
    status INTEGER, error TEXT NOT NULL
);
"""


class SpoolError(RuntimeError):
    """The spool could not commit (disk full, read-only, I/O error): nothing of that job was stored."""


class NotASpool(ValueError):
    """The file given as the spool is something else: not SQLite, or another program's SQLite database."""


_OWN_TABLES = frozenset({"sources", "messages", "people", "dead_letters"})


@dataclasses.dataclass(frozen=True)
class Pending:
    """A Drip record waiting in the spool."""

    seq: int
    source_id: int
    person: str
    kind: str
    campaign_id: str | None
    record: dict[str, Any]
    message_id: str | None
    after_seq: int | None
    accepted_at: float
    attempts: int
    not_before: float
    single_only: bool


@dataclasses.dataclass
class Accepted:
    """What became of the messages of one request, counted."""

    stored: int = 0       # messages that gave at least one Drip record
    records: int = 0      # Drip records queued
    duplicates: int = 0   # messageIds this source already sent in the last 24 hours
    skipped: dict[str, int] = dataclasses.field(default_factory=dict)
    invalid: list[str] = dataclasses.field(default_factory=list)  # one line per invalid message


def connect(path: str | Path, *, readonly: bool = False) -> sqlite3.Connection:
    """A connection with the spool's settings: WAL, fsync on every commit, waits for a busy writer.
    Raises NotASpool for a file that is not SQLite, or an SQLite database of something else: a relay
    must neither fail on it with SQLite's words nor add its tables to somebody's database."""
    if readonly:
        connection = sqlite3.connect(f"file:{Path(path)}?mode=ro", uri=True, isolation_level=None,
                                     check_same_thread=False, timeout=10)
    else:
        connection = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=10)
    try:
        connection.execute("PRAGMA busy_timeout = 10000")
        tables = {name for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if tables and not _OWN_TABLES <= tables:
            raise NotASpool(f"{path}: not a relay spool (an SQLite database with other tables)")
        if not readonly:
            connection.execute("PRAGMA journal_mode = WAL")
            connection.execute("PRAGMA synchronous = FULL")
    except sqlite3.OperationalError:  # locked, unreadable, an I/O error: not about what the file is
        connection.close()
        raise
    except sqlite3.DatabaseError as error:  # "file is not a database"
        connection.close()
        raise NotASpool(f"{path}: not a relay spool ({error})") from None
    except NotASpool:
        connection.close()
        raise
    return connection


def open_for_maintenance(path: str | Path) -> sqlite3.Connection:
    """A writing connection for `relay dead-letters`, which may run beside a serving relay."""
    if not Path(path).exists():
        raise FileNotFoundError(2, "no spool there", str(path))
    connection = connect(path)
    connection.executescript(SCHEMA)
    return connection


class Spool:
    """The relay's durable store. Thread-safe: every write goes through one writer thread."""

    def __init__(self, path: str | Path, *, clock: Callable[[], float] = time.time):
        self.path = Path(path)
        self.clock = clock
        self._db = connect(self.path)
        self._db.executescript(SCHEMA)
        self._reader = threading.local()
        self._jobs: queue.SimpleQueue[tuple[Callable[[sqlite3.Connection], Any], Future[Any]] | None] = \
            queue.SimpleQueue()
        self.pending = self._db.execute("SELECT count(*) FROM messages").fetchone()[0]
        self.on_stored: Callable[[int], None] = lambda source_id: None  # wakes that source's sender
        self._source_ids: dict[tuple[str, str], int] = {}
        self._writer = threading.Thread(target=self._write_loop, name="spool-writer", daemon=True)
        self._writer.start()

    # -- the writer ------------------------------------------------------------------------------

    def run(self, job: Callable[[sqlite3.Connection], T]) -> T:
        """Run `job` in a write transaction and return its result once that transaction is committed."""
        if not self._writer.is_alive():
            raise SpoolError("the spool's writer has stopped")
        future: Future[T] = Future()
        self._jobs.put((job, future))
        try:
            return future.result(timeout=WRITE_TIMEOUT)
        except TimeoutError:
            raise SpoolError(f"the spool did not commit within {WRITE_TIMEOUT:g} s") from None

    def close(self) -> None:
        """Commit what waits, stop the writer and close the file."""
        self._jobs.put(None)
        self._writer.join()
        self._db.close()

    def _write_loop(self) -> None:
        while True:
            first = self._jobs.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < _MAX_JOBS_PER_COMMIT:
                try:
                    item = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._jobs.put(None)  # stop after this commit
                    break
                batch.append(item)
            self._commit(batch)

    def _commit(self, batch: list[tuple[Callable[[sqlite3.Connection], Any], Future[Any]]]) -> None:
        results: list[tuple[Future[Any], Any, BaseException | None]] = []
        pending_before = self.pending
        try:
            self._db.execute("BEGIN IMMEDIATE")
            for job, future in batch:
                self._db.execute("SAVEPOINT job")
                try:
                    results.append((future, job(self._db), None))
                    self._db.execute("RELEASE job")
                except sqlite3.Error:
                    raise  # the file is in trouble: the whole transaction fails
                except Exception as error:  # noqa: BLE001 - a job's own failure is that job's answer
                    self._db.execute("ROLLBACK TO job")
                    self._db.execute("RELEASE job")
                    results.append((future, None, error))
            self._db.execute("COMMIT")
        except sqlite3.Error as error:
            self.pending = pending_before
            try:
                self._db.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            failure = SpoolError(f"the spool could not commit: {error}")
            for _, future in batch:
                future.set_exception(failure)
            return
        for future, result, error in results:
            if error is None:
                future.set_result(result)
            else:
                future.set_exception(error)

    # -- reading ---------------------------------------------------------------------------------

    def reader(self) -> sqlite3.Connection:
        """This thread's own read connection."""
        connection = getattr(self._reader, "connection", None)
        if connection is None:
            connection = connect(self.path)
            self._reader.connection = connection
        return connection

    def remembered_email(self, source_id: int, id_kind: str, ident: str) -> str | None:
        """The e-mail the spool remembers for a source's userId or anonymousId, if one was ever seen."""
        return _remembered_email(self.reader(), source_id, id_kind, ident)

    # -- sources ---------------------------------------------------------------------------------

    def source_id(self, source: Source) -> int:
        """The spool's number for a source (by write key), created on first use."""
        known = self._source_ids.get((source.write_key, source.account))
        if known is not None:
            return known

        def job(db: sqlite3.Connection) -> int:
            db.execute("INSERT OR IGNORE INTO sources (write_key, account) VALUES (?, ?)",
                       (source.write_key, source.account))
            db.execute("UPDATE sources SET account = ? WHERE write_key = ?", (source.account, source.write_key))
            return db.execute("SELECT id FROM sources WHERE write_key = ?", (source.write_key,)).fetchone()[0]

        number = self.run(job)
        self._source_ids[(source.write_key, source.account)] = number
        return number

    # -- ingest ----------------------------------------------------------------------------------

    def accept(self, source: Source, messages: Iterable[Mapping[str, Any]]) -> Accepted:
        """Map and store `messages` of one request; returns once they are committed (SpoolError if not)."""
        source_id = self.source_id(source)
        items = list(messages)
        result = self.run(lambda db: self._accept(db, source, source_id, items))
        if result.records:
            self.on_stored(source_id)
        return result

    def _accept(self, db: sqlite3.Connection, source: Source, source_id: int,
                messages: list[Mapping[str, Any]]) -> Accepted:
        now = self.clock()
        hour = int(now // 3600)
        accepted_at = datetime.datetime.fromtimestamp(now, datetime.timezone.utc).isoformat(
            timespec="milliseconds").replace("+00:00", "Z")
        result = Accepted()

        def recall(id_kind: str, ident: str) -> str | None:
            return _remembered_email(db, source_id, id_kind, ident)

        for message in messages:
            message_id = message.get("messageId") if isinstance(message, Mapping) else None
            message_id = message_id if isinstance(message_id, str) and message_id else None
            if message_id is not None:
                seen = db.execute("SELECT at FROM seen WHERE source_id = ? AND message_id = ?",
                                  (source_id, message_id)).fetchone()
                if seen is not None and seen[0] > now - DEDUP_SECONDS:
                    result.duplicates += 1
                    continue
            try:
                mapped = map_message(message, key_style=source.key_style, campaign_id=source.campaign_id,
                                     recall=recall)
            except InvalidMessage as error:
                result.invalid.append(str(error))
                _count(db, source_id, "skipped:invalid", hour)
                continue
            except Exception:  # noqa: BLE001 - one message the mapping cannot handle must not block its batch
                log.exception("a message could not be mapped; it is skipped as invalid")
                result.invalid.append("the message could not be mapped")
                _count(db, source_id, "skipped:invalid", hour)
                continue
            if message_id is not None:
                db.execute("INSERT OR REPLACE INTO seen (source_id, message_id, at) VALUES (?, ?, ?)",
                           (source_id, message_id, now))
            for id_kind, ident, email in mapped.remember:
                db.execute("INSERT OR REPLACE INTO people (source_id, id_kind, ident, email, updated_at) "
                           "VALUES (?, ?, ?, ?, ?)", (source_id, id_kind, ident, email, now))
            if mapped.skipped:
                result.skipped[mapped.skipped] = result.skipped.get(mapped.skipped, 0) + 1
                _count(db, source_id, f"skipped:{mapped.skipped}", hour)
                continue
            upsert_seq = None
            for record in mapped.records:
                fields = record.record
                if record.kind == "event" and "occurred_at" not in fields:
                    # Drip would date the event when it arrives, which may be much later under its rate
                    # limits: the time the relay accepted it is closer to the truth.
                    fields = {**fields, "occurred_at": accepted_at}
                cursor = db.execute(
                    "INSERT INTO messages (source_id, person, kind, campaign_id, record, message_id, after_seq, "
                    "accepted_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (source_id, record.email.lower(), record.kind, record.campaign_id,
                     json.dumps(fields, separators=(",", ":"), ensure_ascii=False), message_id,
                     upsert_seq if record.kind == "campaign" else None, now))
                if record.kind == "subscriber":
                    upsert_seq = cursor.lastrowid
                result.records += 1
            result.stored += 1
        self.pending += result.records  # only once the job has run through: a failed job adds nothing
        return result

    # -- delivery --------------------------------------------------------------------------------

    def waiting(self, source_id: int, limit: int = 5000) -> list[Pending]:
        """The first `limit` records of a source, in acceptance order."""
        rows = self.reader().execute(
            "SELECT seq, source_id, person, kind, campaign_id, record, message_id, after_seq, accepted_at, "
            "attempts, not_before, single_only FROM messages WHERE source_id = ? ORDER BY seq LIMIT ?",
            (source_id, limit)).fetchall()
        return [Pending(*row[:5], json.loads(row[5]), *row[6:11], bool(row[11])) for row in rows]

    def delivered(self, records: list[Pending]) -> None:
        """Drip answered 2xx for these: they leave the spool."""
        now = self.clock()

        def job(db: sqlite3.Connection) -> None:
            db.executemany("DELETE FROM messages WHERE seq = ?", [(r.seq,) for r in records])
            kinds: dict[tuple[int, str], int] = {}
            for record in records:
                kinds[record.source_id, record.kind] = kinds.get((record.source_id, record.kind), 0) + 1
            for (source_id, kind), count in kinds.items():  # one statement per kind, not per record
                _count(db, source_id, f"delivered:{kind}", int(now // 3600), count)
            self.pending -= len(records)

        self.run(job)

    def retry_later(self, records: list[Pending], not_before: float, *, single_only: bool = False) -> None:
        def job(db: sqlite3.Connection) -> None:
            db.executemany("UPDATE messages SET attempts = attempts + 1, not_before = ?, "
                           "single_only = max(single_only, ?) WHERE seq = ?",
                           [(not_before, int(single_only), r.seq) for r in records])

        self.run(job)

    def dead_letter(self, records: list[Pending], status: int | None, error: str) -> None:
        """Drip refused these for good: they move to the dead letters with its answer, and so do the
        campaign subscriptions that were waiting for them."""
        now = self.clock()

        def job(db: sqlite3.Connection) -> None:
            moved = list(records)
            for record in records:
                if record.kind == "subscriber":
                    rows = db.execute("SELECT seq, source_id, person, kind, campaign_id, record, message_id, "
                                      "after_seq, accepted_at, attempts, not_before, single_only "
                                      "FROM messages WHERE after_seq = ?", (record.seq,)).fetchall()
                    moved += [Pending(*r[:5], json.loads(r[5]), *r[6:11], bool(r[11])) for r in rows]
            for record in moved:
                reason = error if record in records else "not sent: the subscriber upsert it waits for failed"
                db.execute("INSERT INTO dead_letters (source_id, person, kind, campaign_id, record, message_id, "
                           "accepted_at, failed_at, status, error) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                           (record.source_id, record.person, record.kind, record.campaign_id,
                            json.dumps(record.record, separators=(",", ":"), ensure_ascii=False),
                            record.message_id, record.accepted_at, now, status, reason))
                db.execute("DELETE FROM messages WHERE seq = ?", (record.seq,))
            self.pending -= len(moved)

        self.run(job)

    # -- budgets and pauses ----------------------------------------------------------------------

    def requests_since(self, account: str, endpoint_class: str, since: float) -> tuple[int, float | None]:
        """How many requests this account made to the class since `since`, and when the oldest was."""
        count, oldest = self.reader().execute(
            "SELECT count(*), min(at) FROM requests WHERE account = ? AND class = ? AND at > ?",
            (account, endpoint_class, since)).fetchone()
        return count, oldest

    def reserve(self, account: str, endpoint_class: str, count: int = 1) -> None:
        """Count a request before it is sent: a crash after sending must not give its budget back."""
        now = self.clock()
        self.run(lambda db: db.executemany("INSERT INTO requests (account, class, at) VALUES (?, ?, ?)",
                                           [(account, endpoint_class, now)] * count))

    def pause(self, account: str, endpoint_class: str, until: float, reason: str) -> None:
        self.run(lambda db: db.execute("INSERT OR REPLACE INTO pauses (account, class, until, reason) "
                                       "VALUES (?, ?, ?, ?)", (account, endpoint_class, until, reason)))

    def paused_until(self, account: str, endpoint_class: str) -> float:
        row = self.reader().execute("SELECT until FROM pauses WHERE account = ? AND class = ?",
                                    (account, endpoint_class)).fetchone()
        return row[0] if row else 0.0

    def set_source_pause(self, source_id: int, paused: str | None, fingerprint: str | None = None) -> None:
        """Pause the whole source (with `paused` None: end its pause)."""
        self.run(lambda db: db.execute("UPDATE sources SET paused = ?, token_fingerprint = ? WHERE id = ?",
                                       (paused, fingerprint, source_id)))

    def record_error(self, source_id: int, error: str) -> None:
        """Drip's last error for the source, for `relay status`."""
        now = self.clock()
        self.run(lambda db: db.execute("UPDATE sources SET last_error = ?, last_error_at = ? WHERE id = ?",
                                       (error, now, source_id)))

    def source_state(self, source_id: int) -> tuple[str | None, str | None]:
        """(why the source is paused or None, the fingerprint of the token that was rejected)."""
        row = self.reader().execute("SELECT paused, token_fingerprint FROM sources WHERE id = ?", (source_id,)).fetchone()
        return (row[0], row[1]) if row else (None, None)

    def prune(self) -> None:
        """Forget what no longer matters (messageIds older than a day, requests older than two hours,
        statistics older than two days, pauses that ended) and count what waits again."""
        now = self.clock()

        def job(db: sqlite3.Connection) -> None:
            db.execute("DELETE FROM seen WHERE at < ?", (now - DEDUP_SECONDS,))
            db.execute("DELETE FROM requests WHERE at < ?", (now - 7200,))
            db.execute("DELETE FROM stats WHERE name NOT LIKE 'skipped:%' AND hour < ?", (int(now // 3600) - 48,))
            db.execute("DELETE FROM pauses WHERE until < ?", (now,))
            # `relay dead-letters --retry` may have queued records from another process.
            self.pending = db.execute("SELECT count(*) FROM messages").fetchone()[0]

        self.run(job)


def _remembered_email(db: sqlite3.Connection, source_id: int, id_kind: str, ident: str) -> str | None:
    row = db.execute("SELECT email FROM people WHERE source_id = ? AND id_kind = ? AND ident = ?",
                     (source_id, id_kind, ident)).fetchone()
    return row[0] if row else None


def _count(db: sqlite3.Connection, source_id: int, name: str, hour: int, n: int = 1) -> None:
    db.execute("INSERT INTO stats (source_id, name, hour, n) VALUES (?, ?, ?, ?) "
               "ON CONFLICT (source_id, name, hour) DO UPDATE SET n = n + excluded.n", (source_id, name, hour, n))
