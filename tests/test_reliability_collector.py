"""Reliability: the demo's collector (/emulator/events) under load.

20 pages, each with the generated loader and the emulator, send 250 calls each at the same moment; the
emulator reports every answered command to the collector of the test site (a threaded werkzeug server, as
the demo runs). Meanwhile other clients post oversized, malformed and wrongly typed bodies. Every one of
the 5,000 reports must be stored once, in each page's order, and no bad body may be stored or disturb them.
The collector's own rules (413, 400, the 10,000 cap, thread safety) are unit-tested in test_collector.py.
"""

from __future__ import annotations

import http.client
import json
import logging
import threading
import time
from collections import Counter
from urllib.parse import urlsplit

import pytest

from driptag import Settings, render
from driptag.emulators import trackjs as emulator
from driptag.emulators.trackjs import MAX_BODY_BYTES, collector_for

ACCOUNT = "55500010"  # this test's own account: the session's collector also holds other tests' reports
PAGES = 20
CALLS = 250

PAGE_JS = """
window.fire = function (index, at) {
  setTimeout(function () {
    for (var i = 0; i < %d; i++) analytics.track('p' + index + '-' + i, {page: index, n: i});
  }, Math.max(0, at - Date.now()));
};
""" % CALLS

BAD_BODIES = {
    "oversized (64 KiB + 1)": (b'{"account": "%s", "pad": "' % ACCOUNT.encode() + b"x" * MAX_BODY_BYTES + b'"}',
                               "application/json", 413),
    "malformed JSON": (b'{"account": "%s", "command": [' % ACCOUNT.encode(), "application/json", 400),
    "NaN": (b'{"account": "%s", "value": NaN}' % ACCOUNT.encode(), "application/json", 400),
    "not an object": (b'["%s"]' % ACCOUNT.encode(), "application/json", 400),
    "nested 100 deep": (b'{"account": "%s", "x": ' % ACCOUNT.encode() + b"[" * 100 + b"]" * 100 + b"}",
                        "application/json", 400),
    "not JSON content type": (b'{"account": "%s"}' % ACCOUNT.encode(), "text/plain", 400),
    "invalid UTF-8": (b'{"account": "%s", "s": "\xff\xfe"}' % ACCOUNT.encode(), "application/json", 400),
    "empty": (b"", "application/json", 400),
}


def post(host: str, port: int, body: bytes, content_type: str) -> int:
    connection = http.client.HTTPConnection(host, port, timeout=30)
    try:
        connection.request("POST", emulator.COLLECTOR_PATH, body=body, headers={"Content-Type": content_type})
        return connection.getresponse().status
    finally:
        connection.close()


@pytest.fixture
def quiet_server():
    """No log line per request while 5,000 requests arrive (pytest would capture them all)."""
    logger = logging.getLogger("werkzeug")
    logger.disabled = True
    yield
    logger.disabled = False


def test_20_pages_sending_250_calls_at_once_all_5000_stored_once_and_bad_bodies_rejected(browser, site, quiet_server):
    # track.js is the emulator as the demo serves it (/emulator/{account}.js on the same server): no request
    # routing through Playwright, so the 5,000 reports reach the server as they would in the demo. One browser
    # context per page: 20 visitors, each with its own connections to the server.
    settings = Settings(account=ACCOUNT, script_origin=f"{site.url}/emulator")
    errors: list[str] = []
    url = site.add_page(f"<!doctype html><head>{render(settings, 'html')}<script>{PAGE_JS}</script></head>")
    contexts = [browser.new_context() for _ in range(PAGES)]
    try:
        load_and_check(contexts, url, site, errors)
    finally:
        for context in contexts:
            context.close()


def load_and_check(contexts, url, site, errors) -> None:
    pages = []
    for context in contexts:
        page = context.new_page()
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(url, wait_until="domcontentloaded")
        pages.append(page)
    for page in pages:
        page.wait_for_function("() => window.driptag && driptag.status === 'ready'", timeout=10000)
    collector = collector_for(site.app)
    collector.clear()  # as DELETE does; arrival indexes go on (the other tests' pages are closed)

    # Bad bodies from other clients, posted while the pages send.
    parts = urlsplit(site.url)
    statuses: dict[str, list[int]] = {name: [] for name in BAD_BODIES}

    def hostile_client():
        for _ in range(3):
            for name, (body, content_type, _) in BAD_BODIES.items():
                statuses[name].append(post(parts.hostname, parts.port, body, content_type))

    start_at = int(time.time() * 1000) + 300
    clients = [threading.Thread(target=hostile_client) for _ in range(4)]
    for index, page in enumerate(pages):
        page.evaluate("([index, at]) => fire(index, at)", [index, start_at])
    for client in clients:
        client.start()

    deadline = time.monotonic() + 180  # a bound for a loaded CI machine, not a timing assertion
    while len(collector) < PAGES * CALLS and time.monotonic() < deadline:
        pages[0].wait_for_timeout(100)  # polling the collector (the pages keep running meanwhile)
    for client in clients:
        client.join(timeout=30)
    pages[0].wait_for_timeout(200)  # a duplicate report would arrive in this time
    reports = collector.reports(account=ACCOUNT)

    assert len(reports) == PAGES * CALLS, f"{len(reports)} of {PAGES * CALLS} reports stored"
    events = Counter(report["command"][1] for report in reports)
    assert sorted(events) == sorted(f"p{p}-{i}" for p in range(PAGES) for i in range(CALLS)), "calls lost"
    assert set(events.values()) == {1}, f"duplicated: {[e for e, n in events.items() if n > 1][:10]}"
    by_page: dict[str, list] = {}
    for report in reports:
        by_page.setdefault(report["page"], []).append(report)
    assert len(by_page) == PAGES
    for page_reports in by_page.values():
        page_index = page_reports[0]["command"][2]["page"]
        assert [r["seq"] for r in page_reports] == list(range(1, CALLS + 1)), "a page's reports are out of order"
        assert [r["command"] for r in page_reports] == [
            ["track", f"p{page_index}-{i}", {"page": page_index, "n": i}] for i in range(CALLS)]
        assert {r["answer"] for r in page_reports} == {"success"}
    expected_statuses = {name: [status] * 12 for name, (_, _, status) in BAD_BODIES.items()}
    assert statuses == expected_statuses, f"bad bodies answered {statuses}"
    stored_bad = [r for r in collector.reports(account=ACCOUNT) if "pad" in r or "x" in r or "s" in r or "value" in r]
    assert stored_bad == [], f"{len(stored_bad)} bad bodies were stored"
    assert errors == []
    json.dumps(reports)  # what GET serves stays serialisable
