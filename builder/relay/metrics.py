"""The relay's Prometheus metrics, served as text at `GET /metrics`.

Each relay has its own registry, so two relays in one process (the demo, the tests) never mix their
counts and nothing is registered globally. Label values come only from the configuration and from
fixed vocabularies (message types, skip reasons, rejection reasons, Drip answer labels), never from
what a client sent, so a client cannot make the number of series grow.

Counters are incremented once per request or per Drip answer, by the number of messages involved,
not once per message: the ingest path stays cheap.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.process_collector import ProcessCollector

log = logging.getLogger("driptag.relay")

PREFIX = "driptag_relay"


class Metrics:
    """One Prometheus registry per relay, and the relay's counters and gauges in it.

    - `accepted` {source, type}: messages of requests answered 200 (duplicates and skipped ones
      included: they were acknowledged); `type` is the message's type, or "invalid" for a message
      without a known one.
    - `skipped` {source, reason}: acknowledged messages that send nothing to Drip (no email,
      integrations, not forwarded, invalid).
    - `rejected` {reason}: what was refused: requests answered with an error status, and messages
      dropped from an otherwise accepted batch ("message too large").
    - `duplicates` {source}: messages whose messageId the source already sent within 24 hours.
    - `delivered` {source, kind}: Drip records delivered (subscriber, event, campaign).
    - `drip_responses` {status}: Drip's answers ("200", "429", "timeout", ...).
    - gauges read when scraped: records pending, dead letters, paused accounts (see `watch`);
      and the process's own CPU, memory and file descriptors.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self.accepted = Counter(f"{PREFIX}_accepted_messages", "Messages acknowledged to clients, by type.",
                                ["source", "type"], registry=registry)
        self.skipped = Counter(f"{PREFIX}_skipped_messages", "Acknowledged messages that send nothing to Drip, "
                               "by reason.", ["source", "reason"], registry=registry)
        self.rejected = Counter(f"{PREFIX}_rejected", "Requests answered with an error, and messages dropped "
                                "from a batch, by reason.", ["reason"], registry=registry)
        self.duplicates = Counter(f"{PREFIX}_duplicate_messages", "Messages whose messageId the source had "
                                  "already sent within 24 hours.", ["source"], registry=registry)
        self.delivered = Counter(f"{PREFIX}_delivered_records", "Drip records delivered, by kind.",
                                 ["source", "kind"], registry=registry)
        self.drip_responses = Counter(f"{PREFIX}_drip_responses", "Drip's answers, by status.", ["status"],
                                      registry=registry)
        self._gauges: dict[str, Gauge] = {}
        ProcessCollector(namespace=PREFIX, registry=registry)

    def watch(self, *, pending: Callable[[], float], dead_letters: Callable[[], float],
              paused_accounts: Callable[[], float]) -> None:
        """Gauges whose values are read at scrape time. Calling it again replaces the readers.

        A reader that fails gives NaN for that scrape (and a log line) rather than failing /metrics:
        the other series still matter most when something is wrong.
        """
        for name, help_text, reader in (
                ("pending_records", "Drip records waiting in the spool.", pending),
                ("dead_letters", "Messages Drip refused for good, kept for `relay dead-letters`.", dead_letters),
                ("paused_accounts", "Drip accounts that currently wait (rate limit or rejected credentials).",
                 paused_accounts)):
            gauge = self._gauges.get(name)
            if gauge is None:
                gauge = self._gauges[name] = Gauge(f"{PREFIX}_{name}", help_text, registry=self.registry)
            gauge.set_function(_guarded(name, reader))

    def render(self) -> tuple[bytes, str]:
        """The registry in Prometheus's text format: (body, content type) for GET /metrics."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def _guarded(name: str, reader: Callable[[], float]) -> Callable[[], float]:
    def read() -> float:
        try:
            return float(reader())
        except Exception as error:  # noqa: BLE001 - a scrape must not fail because one gauge could not be read
            log.warning("metrics: could not read %s: %s", name, error)
            return math.nan

    return read
