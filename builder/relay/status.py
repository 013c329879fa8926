"""What `relay status` and `relay dead-letters` read and change, from the spool file alone.

Both run beside a serving relay (SQLite's WAL lets readers read while the relay writes; the dead-letter
changes are short transactions that the relay's writer waits for). Write keys are shown masked; tokens
are not in the spool at all.
"""

from __future__ import annotations

import datetime
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

from .config import DRIP_HOURLY_BATCH, DRIP_HOURLY_SINGLE, RelayConfig, mask
from .spool import connect, open_for_maintenance


class NoSpool(FileNotFoundError):
    """No spool file where one was expected."""


def _read(path: str | Path) -> sqlite3.Connection:
    if not Path(path).is_file():
        raise NoSpool(2, "no spool there (a relay creates it when it starts)", str(path))
    return connect(path, readonly=True)


def _iso(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).isoformat(timespec="seconds").replace(
        "+00:00", "Z")


def spool_status(path: str | Path, config: RelayConfig | None = None, now: float | None = None) -> dict[str, Any]:
    """Per source: pending by kind, delivered in the last hour and day, skipped by reason, dead letters,
    requests used of each hourly budget, pauses and Drip's last error."""
    now = time.time() if now is None else now
    hour = int(now // 3600)
    db = _read(path)
    try:
        sources = []
        for source_id, write_key, account, paused, last_error, last_error_at in db.execute(
                "SELECT id, write_key, account, paused, last_error, last_error_at FROM sources ORDER BY id"):
            configured = config.source_for(write_key) if config else None
            limits = configured.rate_limits if configured else None
            pending = dict(db.execute("SELECT kind, count(*) FROM messages WHERE source_id = ? GROUP BY kind",
                                      (source_id,)).fetchall())
            stats = db.execute("SELECT name, hour, n FROM stats WHERE source_id = ?", (source_id,)).fetchall()
            delivered_hour = sum(n for name, h, n in stats if name.startswith("delivered:") and h == hour)
            delivered_day = sum(n for name, h, n in stats if name.startswith("delivered:") and h > hour - 24)
            skipped: dict[str, int] = {}
            for name, _, n in stats:
                if name.startswith("skipped:"):
                    skipped[name[8:]] = skipped.get(name[8:], 0) + n
            budgets = {}
            for endpoint_class, default in (("single", DRIP_HOURLY_SINGLE), ("batch", DRIP_HOURLY_BATCH)):
                window = limits.window_seconds if limits else 3600.0
                limit = (limits.single if endpoint_class == "single" else limits.batch) if limits else default
                used = db.execute("SELECT count(*) FROM requests WHERE account = ? AND class = ? AND at > ?",
                                  (account, endpoint_class, now - window)).fetchone()[0]
                until = db.execute("SELECT until, reason FROM pauses WHERE account = ? AND class = ? AND until > ?",
                                   (account, endpoint_class, now)).fetchone()
                budgets[endpoint_class] = {"used": used, "limit": limit, "windowSeconds": window,
                                           "pausedUntil": _iso(until[0]) if until else None,
                                           "pauseReason": until[1] if until else None}
            sources.append({
                "account": account,
                "writeKey": mask(write_key),
                "configured": configured is not None if config else None,
                "pending": {kind: pending.get(kind, 0) for kind in ("subscriber", "event", "campaign")},
                "delivered": {"lastHour": delivered_hour, "lastDay": delivered_day},
                "skipped": dict(sorted(skipped.items())),
                "deadLetters": db.execute("SELECT count(*) FROM dead_letters WHERE source_id = ?",
                                          (source_id,)).fetchone()[0],
                "requests": budgets,
                "paused": paused,
                "lastError": {"at": _iso(last_error_at), "error": last_error} if last_error else None,
            })
        return {"spool": str(path), "at": _iso(now),
                "pending": db.execute("SELECT count(*) FROM messages").fetchone()[0],
                "deadLetters": db.execute("SELECT count(*) FROM dead_letters").fetchone()[0],
                "sources": sources}
    finally:
        db.close()


def format_status(status: dict[str, Any]) -> str:
    """`relay status` for people."""
    lines = [f"spool {status['spool']}: {status['pending']:,} pending, {status['deadLetters']:,} dead letter(s)"]
    if not status["sources"]:
        lines.append("  no source has sent anything yet")
    for source in status["sources"]:
        pending = source["pending"]
        lines.append(f"source {source['account']} (write key {source['writeKey']})"
                     + ("  [no longer in the configuration]" if source["configured"] is False else ""))
        lines.append(f"  pending: {pending['subscriber']:,} subscriber(s), {pending['event']:,} event(s), "
                     f"{pending['campaign']:,} campaign subscription(s)")
        lines.append(f"  delivered: {source['delivered']['lastHour']:,} in the last hour, "
                     f"{source['delivered']['lastDay']:,} in the last day")
        skipped = ", ".join(f"{reason} {n:,}" for reason, n in source["skipped"].items()) or "none"
        lines.append(f"  skipped: {skipped}")
        lines.append(f"  dead letters: {source['deadLetters']:,}")
        for endpoint_class, budget in source["requests"].items():
            pause = f"; paused until {budget['pausedUntil']} ({budget['pauseReason']})" if budget["pausedUntil"] else ""
            lines.append(f"  {endpoint_class} requests: {budget['used']:,} of {budget['limit']:,} "
                         f"per {budget['windowSeconds']:g} s{pause}")
        if source["paused"]:
            lines.append(f"  PAUSED: {source['paused']} (fix the API token in the configuration; nothing is dropped)")
        if source["lastError"]:
            lines.append(f"  last Drip error ({source['lastError']['at']}): {source['lastError']['error']}")
    return "\n".join(lines) + "\n"


def dead_letters(path: str | Path) -> list[dict[str, Any]]:
    db = _read(path)
    try:
        rows = db.execute("SELECT d.id, s.account, s.write_key, d.kind, d.campaign_id, d.person, d.record, "
                          "d.message_id, d.accepted_at, d.failed_at, d.status, d.error FROM dead_letters d "
                          "JOIN sources s ON s.id = d.source_id ORDER BY d.id").fetchall()
    finally:
        db.close()
    return [{"id": r[0], "account": r[1], "writeKey": mask(r[2]), "kind": r[3], "campaignId": r[4], "email": r[5],
             "record": json.loads(r[6]), "messageId": r[7], "acceptedAt": _iso(r[8]), "failedAt": _iso(r[9]),
             "status": r[10], "error": r[11]} for r in rows]


def format_dead_letters(letters: list[dict[str, Any]]) -> str:
    if not letters:
        return "no dead letters\n"
    lines = []
    for letter in letters:
        what = letter["kind"] + (f" to campaign {letter['campaignId']}" if letter["campaignId"] else "")
        lines.append(f"#{letter['id']} {letter['failedAt']} account {letter['account']} {what} for {letter['email']}")
        lines.append(f"  Drip: {letter['error']}")
        lines.append(f"  record: {json.dumps(letter['record'], ensure_ascii=False, separators=(',', ':'))}")
    return "\n".join(lines) + "\n"


def retry_dead_letters(path: str | Path) -> int:
    """Queue every dead letter again, at the end of the spool; returns how many."""
    if not Path(path).is_file():
        raise NoSpool(2, "no spool there (a relay creates it when it starts)", str(path))
    db = open_for_maintenance(path)
    try:
        db.execute("BEGIN IMMEDIATE")
        moved = db.execute(
            "INSERT INTO messages (source_id, person, kind, campaign_id, record, message_id, accepted_at) "
            "SELECT source_id, person, kind, campaign_id, record, message_id, accepted_at FROM dead_letters "
            "ORDER BY id").rowcount
        db.execute("DELETE FROM dead_letters")
        db.execute("COMMIT")
        return moved
    finally:
        db.close()


def purge_dead_letters(path: str | Path) -> int:
    """Delete every dead letter; returns how many."""
    if not Path(path).is_file():
        raise NoSpool(2, "no spool there (a relay creates it when it starts)", str(path))
    db = open_for_maintenance(path)
    try:
        db.execute("BEGIN IMMEDIATE")
        purged = db.execute("DELETE FROM dead_letters").rowcount
        db.execute("COMMIT")
        return purged
    finally:
        db.close()
