"""The relay's part of the benchmark runs end to end in its quick mode (tiny counts, a few seconds) and
writes every row with numbers. A smoke test: nothing here judges a figure, only that each was measured."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NUMBER = re.compile(r"^[0-9][0-9,]*(\.[0-9]+)?")

# The quick plan's counts (benchmarks/relay.py QUICK): exact, whatever the machine's speed.
BACKLOG = 1_000
PENDING = 3_000

ROWS = [
    "[relay] ingest via /v1/batch",
    "[relay] /v1/batch request latency p50 / p99",
    "[relay] single /v1/track",
    "[relay] /v1/track latency p50 / p99",
    "[relay] Drip requests per 10,000 events",
    "[relay] records per batch request",
    f"[relay] time to drain {BACKLOG:,} waiting events",
    f"[relay] fill to {PENDING:,} pending via /v1/batch",
    f"[relay] spool on disk with {PENDING:,} pending",
    f"[relay] RSS with {PENDING:,} pending",
]
JUDGED = {"[relay] ingest via /v1/batch", "[relay] single /v1/track", "[relay] /v1/track latency p50 / p99",
          "[relay] records per batch request", f"[relay] RSS with {PENDING:,} pending"}

FIGURES = [
    ("commits", "commits_per_second"), ("ingest", "messages_per_second"), ("ingest", "p50_ms"),
    ("ingest", "p99_ms"), ("track", "requests_per_second"), ("track", "p50_ms"), ("track", "p99_ms"),
    ("bare_wsgi", "requests_per_second"), ("bare_wsgi", "p50_ms"), ("bare_wsgi", "p99_ms"),
    ("drain", "seconds"), ("drain", "requests_per_10000_events"), ("drain", "records_per_batch_request"),
    ("emulator_alone", "seconds"), ("pending", "rss_mib"), ("pending", "hwm_mib"), ("pending", "rss_at_start_mib"),
    ("pending", "spool_total_bytes"), ("pending", "records_json_bytes"),
]


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """`benchmarks/run.py --relay-only --quick`, run once for this module; its JSON."""
    folder = tmp_path_factory.mktemp("bench")
    out = folder / "bench.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run.py"), "--relay-only", "--quick",
                           "--json", str(out)], capture_output=True, text=True, timeout=300, cwd=folder)
    assert done.returncode == 0, f"the benchmark exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return json.loads(out.read_text(encoding="utf-8"))


def test_quick_relay_benchmark_writes_every_row_with_a_number_and_a_verdict_for_each_target(results):

    table = results["table"]
    whats = [row["what"] for row in table]
    assert len(table) == len(ROWS), f"expected the {len(ROWS)} relay rows, got: {whats}"
    for expected, row in zip(ROWS, table):
        assert row["what"].startswith(expected), f"expected a row starting {expected!r}, got {row['what']!r}"
        assert NUMBER.match(row["driptag"]), f"{row['what']}: no number measured: {row['driptag']!r}"
        if expected in JUDGED:
            assert row["target"] and row["met"] in ("yes", "NO"), f"{row['what']}: target {row!r}"
        else:
            assert (row["target"], row["met"]) == ("", ""), f"{row['what']} has no target: {row!r}"

    relay = results["relay"]
    for part, name in FIGURES:
        value = relay[part][name]
        assert isinstance(value, (int, float)) and math.isfinite(value) and value > 0, \
            f"relay.{part}.{name} is not a positive number: {value!r}"


def test_quick_relay_benchmark_stores_drains_and_fills_exactly_what_it_sent(results):
    relay = results["relay"]

    assert relay["ingest"]["statuses"] == {"200": (BACKLOG - 200) // 100}, relay["ingest"]
    assert set(relay["track"]["statuses"]) == {"200"}, relay["track"]
    assert set(relay["bare_wsgi"]["statuses"]) == {"200"}, relay["bare_wsgi"]
    drain = relay["drain"]
    assert (drain["events"], drain["batch_requests"], drain["single_requests"], drain["statuses"]) == \
        (BACKLOG, 1, 0, {"201": 1}), drain
    assert (relay["pending"]["messages"], relay["pending"]["pending"]) == (PENDING, PENDING), relay["pending"]
    assert relay["pending"]["fill"]["statuses"] == {"200": PENDING // 100}, relay["pending"]["fill"]
