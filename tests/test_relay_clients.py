"""The relay with Segment's own client libraries, nothing of driptag's between them and the relay:
@segment/analytics-node run by Node.js, and Analytics.js 2.0's Segment.io destination in Chromium (web cloud
mode: a page on another origin, so every request is cross-origin and goes through CORS). Both are pinned in
tests/analytics_next/package-lock.json and installed by `make npm`. Each test asserts what the library sent
(path, content type, write key) and the exact records the Drip API emulator received.
(segment-analytics-python is tested the same way in test_relay_end_to_end.py.)"""

from __future__ import annotations

import base64
import json
import shutil
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from driptag.relay.config import parse_config
from driptag.relay.service import Relay
from pages import page_html
from relay_support import CAMPAIGN, WRITE_KEY, drip_api, relay_in_process, source, wait_for

NPM_PROJECT = Path(__file__).parent / "analytics_next"
NODE_CLIENT = NPM_PROJECT / "relay-client.mjs"
BUNDLE = NPM_PROJECT / "dist" / "analytics-next.js"
TIME_ZONE = "Europe/Berlin"  # the browser's, which Analytics.js 2.0 sends as context.timezone
BASIC = "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()

# The person and the calls every client sends, and what Drip must receive for them.
TRAITS = {"email": "ann@example.com", "firstName": "Ann", "some trait": "yes"}
PROPERTIES = {"revenue": 19.99, "sku": "B-1"}
TIMESTAMP = "2026-12-01T12:30:00+02:00"
CUSTOM_FIELDS = {"some_trait": "yes", "id": "u1"}
EVENT = {"email": "ann@example.com", "action": "Order Completed", "properties": {"sku": "B-1", "value": 1999},
         "occurred_at": "2026-12-01T10:30:00.000Z"}


def assert_drip_received(drip, **person: str) -> None:
    """The upsert, the campaign subscription after it, and the event: exactly these, once each."""
    wait_for(lambda: drip.records("events") and drip.records("campaign_subscriptions"),
             "the event and the campaign subscription reached Drip")
    assert drip.records("subscribers") == [
        {"email": "ann@example.com", "user_id": "u1", "first_name": "Ann", **person, "custom_fields": CUSTOM_FIELDS}]
    assert drip.records("campaign_subscriptions") == [
        {"email": "ann@example.com", "user_id": "u1", **person, "custom_fields": CUSTOM_FIELDS}]
    assert drip.records("events") == [EVENT]


# -- @segment/analytics-node ------------------------------------------------------------------------------

NODE_CALLS = [
    ["identify", {"userId": "u1", "traits": TRAITS}],
    ["track", {"userId": "u1", "event": "Order Completed", "properties": PROPERTIES, "timestamp": TIMESTAMP}],
]


def run_node_client(relay_url: str, write_key: str, calls: list) -> tuple[int, list[dict[str, Any]], str]:
    """relay-client.mjs (the library, driven by its public API) → (exit status, its JSON lines, stderr)."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("Node.js is missing: `node` is not on PATH. Install nodejs and npm (`make npm` does it).",
                    pytrace=False)
    if not (NPM_PROJECT / "node_modules" / "@segment" / "analytics-node").is_dir():
        pytest.fail(f"@segment/analytics-node is not installed in {NPM_PROJECT}: run `make npm`", pytrace=False)
    done = subprocess.run([node, str(NODE_CLIENT), relay_url, write_key, json.dumps(calls)], cwd=NPM_PROJECT,
                          capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    return done.returncode, lines, done.stderr


def test_analytics_node_identify_and_track_reach_drip_as_rest_requests(tmp_path):
    with drip_api() as drip, relay_in_process(tmp_path, drip, source(campaignId=CAMPAIGN)) as relay:
        status, lines, stderr = run_node_client(relay.url, WRITE_KEY, NODE_CALLS)
        assert status == 0, f"analytics-node did not report success (exit {status}): {lines} {stderr}"
        assert lines[-1] == {"delivered": 2, "errors": []}
        requests = [line["request"] for line in lines if "request" in line]
        assert [(r["method"], r["url"]) for r in requests] == [("POST", relay.url + "/v1/batch")]
        headers = requests[0]["headers"]
        assert (headers["Content-Type"], headers["Authorization"]) == ("application/json", BASIC)
        body = json.loads(requests[0]["body"])
        assert body["writeKey"] == WRITE_KEY, "analytics-node also sends the write key in the body"
        assert [(m["type"], m["userId"]) for m in body["batch"]] == [("identify", "u1"), ("track", "u1")]
        assert body["batch"][1]["timestamp"] == TIMESTAMP
        assert [line["response"]["status"] for line in lines if "response" in line] == [200]
        assert_drip_received(drip)


def test_analytics_node_reports_the_relays_refusal_of_an_unknown_write_key(tmp_path):
    with drip_api() as drip, relay_in_process(tmp_path, drip) as relay:
        status, lines, stderr = run_node_client(relay.url, "not-a-source", NODE_CALLS)
        assert status == 1, f"analytics-node should have reported the 401 (exit {status}): {lines} {stderr}"
        assert [line["response"]["status"] for line in lines if "response" in line] == [401]
        # Each callback fires at least 300 ms after its call was made: when the answer takes longer than
        # that, the two may fire in either order.
        assert lines[-1]["delivered"] == 0
        assert sorted(lines[-1]["errors"]) == ["identify: Error: [401] UNAUTHORIZED",
                                               "track: Error: [401] UNAUTHORIZED"]
        # The library's own 'error' event, once per failed call, as an app listening to it would see it.
        assert [line["emitted"] for line in lines if "emitted" in line] == [
            "delivery_failure: Error: [401] UNAUTHORIZED"] * 2
        assert relay.spool.pending == 0 and drip.api_requests() == []


# -- Analytics.js 2.0 in Chromium, Segment.io destination pointed at the relay ----------------------------


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args):
    return {**browser_context_args, "timezone_id": TIME_ZONE}


@pytest.fixture(scope="module")
def bundle_url(site) -> str:
    if not BUNDLE.is_file():
        pytest.fail(f"{BUNDLE} is missing: run `make npm` (it bundles Analytics.js 2.0 with npm)", pytrace=False)
    return site.add(BUNDLE.read_text(encoding="utf-8"), "js")


def cloud_mode_page(site, bundle_url: str, relay_url: str, **segmentio: Any) -> str:
    """A page on the test site's origin that loads Analytics.js 2.0 with its Segment.io destination sending
    to the relay. The settings a page would fetch from Segment's CDN are given inline (nothing leaves the
    machine); `segmentio` adds options of the destination (e.g. its delivery strategy)."""
    relay = urlsplit(relay_url)
    cdn_settings = {"integrations": {"Segment.io": {"apiKey": WRITE_KEY}}, "metrics": {"sampleRate": 0}}
    options = {"integrations": {"Segment.io": {"apiHost": f"{relay.netloc}/v1", "protocol": relay.scheme,
                                               **segmentio}}}
    settings = {"writeKey": WRITE_KEY, "cdnSettings": cdn_settings}
    load = f"window.analytics = AnalyticsBrowser.load({json.dumps(settings)}, {json.dumps(options)});"
    return site.add_page(page_html(f'<script src="{bundle_url}"></script><script>{load}</script>'))


# The calls, made the way a web page makes them; each promise settles once the event went through the plugins.
BROWSER_CALLS = f"""async () => {{
  await analytics.identify('u1', {json.dumps(TRAITS)});
  await analytics.track('Order Completed', {json.dumps(PROPERTIES)}, {{timestamp: '{TIMESTAMP}'}});
}}"""


class Traffic:
    """What the page asked for and what it was answered, seen from the browser."""

    def __init__(self, page) -> None:
        self.requests: list[Any] = []
        self.responses: list[Any] = []
        self.failed: list[str] = []
        self.console_errors: list[str] = []
        self.page = page
        page.on("request", lambda request: self.requests.append(request))
        page.on("response", lambda response: self.responses.append(response))
        page.on("requestfailed", lambda request: self.failed.append(f"{request.url}: {request.failure}"))
        page.on("console", lambda m: m.type == "error" and self.console_errors.append(m.text))

    def wait(self, check, what: str, timeout: float = 15.0):
        """wait_for, letting Playwright deliver the page's events between checks (its sync API hands them
        over only while it is called)."""
        try:
            return wait_for(lambda: self.page.wait_for_timeout(20) or check(), what, timeout)
        except AssertionError as error:
            raise AssertionError(f"{error}; failed requests: {self.failed}; console errors: {self.console_errors}") \
                from None

    def to(self, origin: str) -> list[Any]:
        return [r for r in self.requests if r.url.startswith(origin + "/")]

    def answers(self, origin: str) -> list[Any]:
        return [r for r in self.responses if r.url.startswith(origin + "/")]

    def answered(self, origin: str) -> list[tuple[str, int]]:
        return [(urlsplit(r.url).path, r.status) for r in self.answers(origin)]

    def assert_offline(self) -> None:
        elsewhere = [r.url for r in self.requests if urlsplit(r.url).hostname != "127.0.0.1"]
        assert elsewhere == [], f"requests left the machine: {elsewhere}"


def assert_sent_as_web_cloud_mode(request, path: str) -> dict[str, Any]:
    """A cross-origin POST of text/plain with the write key in the body and as Basic credentials (the
    Authorization header makes the browser ask the relay first, in a preflight); returns the body."""
    headers = request.headers
    assert (request.method, urlsplit(request.url).path) == ("POST", path)
    assert headers["content-type"] == "text/plain", headers
    assert headers["authorization"] == BASIC, headers
    body = json.loads(request.post_data)
    assert body["writeKey"] == WRITE_KEY
    return body


def test_analytics_next_cloud_mode_posts_each_call_cross_origin_and_drip_gets_them(page, site, bundle_url, tmp_path):
    with drip_api() as drip, relay_in_process(tmp_path, drip, source(campaignId=CAMPAIGN)) as relay:
        assert urlsplit(site.url).netloc != urlsplit(relay.url).netloc, "the page must be on another origin"
        traffic = Traffic(page)
        page.goto(cloud_mode_page(site, bundle_url, relay.url))
        page.evaluate(BROWSER_CALLS)
        traffic.wait(lambda: len(traffic.answered(relay.url)) == 2, "the relay answered both calls")
        assert traffic.answered(relay.url) == [("/v1/i", 200), ("/v1/t", 200)], traffic.failed
        identify, track = traffic.to(relay.url)
        assert assert_sent_as_web_cloud_mode(identify, "/v1/i")["traits"] == TRAITS
        assert assert_sent_as_web_cloud_mode(track, "/v1/t")["properties"] == PROPERTIES
        for response in traffic.answers(relay.url):
            assert response.headers["access-control-allow-origin"] == "*"
            assert response.json() == {"success": True}
        assert_drip_received(drip, time_zone=TIME_ZONE)
        assert (traffic.failed, traffic.console_errors) == ([], [])
        traffic.assert_offline()


def test_analytics_next_batching_mode_posts_one_batch_to_v1_b_and_drip_gets_it(page, site, bundle_url, tmp_path):
    batching = {"strategy": "batching", "config": {"size": 2, "timeout": 200}}
    with drip_api() as drip, relay_in_process(tmp_path, drip, source(campaignId=CAMPAIGN)) as relay:
        traffic = Traffic(page)
        page.goto(cloud_mode_page(site, bundle_url, relay.url, deliveryStrategy=batching))
        page.evaluate(BROWSER_CALLS)
        traffic.wait(lambda: traffic.answered(relay.url), "the relay answered the batch")
        assert traffic.answered(relay.url) == [("/v1/b", 200)], traffic.failed
        [request] = traffic.to(relay.url)
        body = assert_sent_as_web_cloud_mode(request, "/v1/b")
        assert [(m["type"], m["userId"]) for m in body["batch"]] == [("identify", "u1"), ("track", "u1")]
        assert_drip_received(drip, time_zone=TIME_ZONE)
        assert (traffic.failed, traffic.console_errors) == ([], [])
        traffic.assert_offline()


@contextmanager
def relay_later(tmp_path: Path, drip) -> Iterator[tuple[str, Any]]:
    """A relay's address before the relay listens there: yields (url, start); connections are refused until
    start() is called, which starts a relay on that very port and returns it."""
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused, and the port stays ours
    port = holder.getsockname()[1]
    running: list[Relay] = []

    def start() -> Relay:
        config = parse_config({"sources": [source(campaignId=CAMPAIGN)]}, "relay.json", {})
        relay = Relay(None, tmp_path / "relay.sqlite3", drip.url, config=config)
        holder.close()
        relay.start("127.0.0.1", port)
        running.append(relay)
        return relay

    try:
        yield f"http://127.0.0.1:{port}", start
    finally:
        holder.close()
        for relay in running:
            relay.stop()


def test_analytics_next_retries_a_call_the_relay_was_not_up_for_and_the_retry_passes_cors(page, site, bundle_url,
                                                                                         tmp_path):
    with drip_api() as drip, relay_later(tmp_path, drip) as (url, start):
        traffic = Traffic(page)
        page.goto(cloud_mode_page(site, bundle_url, url))
        page.evaluate("() => { analytics.identify('u1', %s); }" % json.dumps(TRAITS))
        traffic.wait(lambda: traffic.failed, "the first attempt failed (nothing listens yet)")
        start()
        traffic.wait(lambda: traffic.answered(url), "the retry reached the relay", timeout=20)
        assert traffic.answered(url) == [("/v1/i", 200)]
        refused = [f for f in traffic.failed if f.endswith("net::ERR_CONNECTION_REFUSED")]
        assert refused and refused == traffic.failed, \
            f"only the attempts before the relay was up may fail: {traffic.failed}"
        retry = traffic.to(url)[-1]
        assert int(retry.headers.get("x-retry-count", "0")) >= 1, f"not a retry: {retry.headers}"
        assert [e for e in traffic.console_errors if "CORS" in e] == []
        wait_for(lambda: drip.records("subscribers"), "the identify reached Drip")
        assert drip.records("subscribers") == [{"email": "ann@example.com", "user_id": "u1", "first_name": "Ann",
                                                "time_zone": TIME_ZONE, "custom_fields": CUSTOM_FIELDS}]
