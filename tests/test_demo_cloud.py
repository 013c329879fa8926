"""The demo's cloud mode panel: calls a back end sends through the relay, what the relay holds, and what the
Drip API emulator received — used through the page as a person would, and through the demo server's routes.

The app under test is `driptag.web.demo.create_app`, served on 127.0.0.1 by werkzeug in a daemon thread, with
the relay running beside it (`driptag.web.demo_cloud.running_relay`), as `driptag demo` runs it. Nothing here
needs a network.
"""

from __future__ import annotations

import json
import re
import socket
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from flask import Flask
from playwright.sync_api import Page, expect
from werkzeug.serving import make_server

from driptag.emulators.drip_api import drip_api_for
from driptag.relay.service import Relay
from driptag.relay.status import dead_letters
from driptag.version import __version__
from driptag.web.demo import create_app
from driptag.web.demo_cloud import ANONYMOUS_ID, DEMO_WRITE_KEY, cloud_for, running_relay
from relay_support import wait_for
from test_demo import OVERLAPS

ACCOUNT = "83702741"
CAMPAIGN = "7654321"
TOKEN = "demotoken0for0tests0abcd"
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ADA = '{"email": "ada@example.com"}'
WAIT_MS = 15_000  # for what waits on the relay's back-off or pauses (seconds, with jitter)


@dataclass
class CloudServer:
    app: Flask
    url: str
    relay: Relay
    before: int = 0  # the calls sent before this test: numbers go on from there

    def seq(self, n: int) -> int:
        """The number of this test's `n`th call."""
        return self.before + n


@pytest.fixture(scope="module")
def cloud_server() -> Iterator[CloudServer]:
    app = create_app({"DEMO_ACCOUNT": ACCOUNT, "DEMO_CAMPAIGN_ID": CAMPAIGN, "DEMO_API_TOKEN": TOKEN})
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_port}"
    try:
        with running_relay(app, f"{url}/emulator/api") as relay:
            assert relay is not None
            yield CloudServer(app, url, relay)
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def cloud(cloud_server: CloudServer) -> CloudServer:
    """A clean slate: no fault pending, nothing waiting in the relay and no pause, no call listed, nothing
    received."""
    app = cloud_server.app
    emulator = drip_api_for(app)
    emulator.clear_faults()
    wait_for(lambda: cloud_server.relay.spool.pending == 0, "the relay delivered what an earlier test sent")
    wait_for(lambda: cloud_for(app).view(app, 0)["relay"]["pausedFor"] is None, "an earlier test's pause ended")
    cloud_for(app).clear_calls()
    emulator.clear()
    cloud_server.before = cloud_for(app).sent
    return cloud_server


@pytest.fixture
def client(cloud: CloudServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=cloud.url, timeout=20, trust_env=False) as http:
        yield http


def api_requests(app: Flask) -> list[dict[str, Any]]:
    """What the Drip API emulator received on Drip's API paths, oldest first."""
    return [entry for entry in drip_api_for(app).requests() if "/_" not in entry["path"]]


def calls(app: Flask) -> list[dict[str, Any]]:
    """The calls as the page gets them from /cloud/state, oldest first."""
    return cloud_for(app).view(app, 0)["calls"]


def settled(app: Flask, seq: int, state: str) -> dict[str, Any]:
    """Wait until call `seq` is in `state`; return it."""
    def check() -> dict[str, Any] | None:
        found = [call for call in calls(app) if call["seq"] == seq]
        return found[0] if found and found[0]["state"] == state else None
    return wait_for(check, f"call {seq} is {state} (calls: {calls(app)})")


def post(http: httpx.Client, path: str, **fields: Any) -> httpx.Response:
    return http.post(path, json=fields)


# ---------------------------------------------------------------------------------------------
# Through the demo server's routes


def test_a_track_reaches_the_drip_api_emulator_through_the_relay_as_the_exact_request(cloud, client):
    response = post(client, "/cloud/track", userId="user-1", event="Order Completed",
                    properties='{"email": "ada@example.com", "revenue": 19.99, "order_id": "A-1001"}')
    assert (response.status_code, response.json()) == \
        (200, {"seq": cloud.seq(1), "status": 200, "answer": {"success": True}})

    call = settled(cloud.app, cloud.seq(1), "delivered")
    message = call["message"]
    assert re.fullmatch(r"demo-[0-9a-f-]{36}", message["messageId"]), message
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", message["timestamp"]), message
    assert message == {"type": "track", "messageId": message["messageId"], "timestamp": message["timestamp"],
                       "context": {"library": {"name": "driptag-demo", "version": __version__}},
                       "userId": "user-1", "event": "Order Completed",
                       "properties": {"email": "ada@example.com", "revenue": 19.99, "order_id": "A-1001"}}
    event = {"email": "ada@example.com", "action": "Order Completed",
             "properties": {"order_id": "A-1001", "value": 1999}, "occurred_at": message["timestamp"]}
    [request] = api_requests(cloud.app)
    assert (request["method"], request["path"], request["status"], request["auth"], request["body"]) == \
        ("POST", f"/emulator/api/v2/{ACCOUNT}/events", 204, True, {"events": [event]}), \
        "the relay did not deliver the event with the demo token"
    assert call["records"] == [{"kind": "event", "campaignId": None, "record": event, "state": "delivered",
                                "requests": [{"n": request["n"], "status": 204, "fault": None}]}]
    assert call["status"] == 200 and call["answer"] == {"success": True} and call["path"] == "/v1/track"


def test_an_identify_with_the_demo_campaign_is_an_upsert_then_a_subscription(cloud, client):
    response = post(client, "/cloud/identify", userId="user-2", email="grace@example.com",
                    traits='{"firstName": "Grace"}')
    assert response.status_code == 200, response.text
    call = settled(cloud.app, cloud.seq(1), "delivered")
    assert [(record["kind"], record["campaignId"], record["state"]) for record in call["records"]] == \
        [("subscriber", None, "delivered"), ("campaign", CAMPAIGN, "delivered")]
    # The user ID is also the custom field `id`, as the loader sends it in device mode.
    person = {"email": "grace@example.com", "user_id": "user-2", "first_name": "Grace",
              "custom_fields": {"id": "user-2"}}
    assert [(r["path"], r["status"], r["body"]) for r in api_requests(cloud.app)] == [
        (f"/emulator/api/v2/{ACCOUNT}/subscribers", 200, {"subscribers": [person]}),
        (f"/emulator/api/v2/{ACCOUNT}/campaigns/{CAMPAIGN}/subscribers", 200, {"subscribers": [
            {"email": "grace@example.com", "user_id": "user-2", "custom_fields": {"id": "user-2"}}]}),
    ]


def test_a_track_without_an_email_for_an_unknown_user_is_skipped_with_the_relays_reason(cloud, client):
    before = cloud_for(cloud.app).view(cloud.app, 0)["relay"]["skipped"].get("no email", 0)
    assert post(client, "/cloud/track", userId="stranger", event="Viewed").status_code == 200
    call = settled(cloud.app, cloud.seq(1), "skipped")
    assert (call["skipped"], call["records"]) == ("no email", [])
    assert cloud_for(cloud.app).view(cloud.app, 0)["relay"]["skipped"]["no email"] == before + 1
    assert cloud.relay.spool.pending == 0 and api_requests(cloud.app) == []


def test_a_track_for_a_user_identified_before_goes_to_the_email_the_relay_remembers(cloud, client):
    assert post(client, "/cloud/identify", userId="user-3", email="lin@example.com").status_code == 200
    assert post(client, "/cloud/track", userId="user-3", event="Logged In").status_code == 200
    call = settled(cloud.app, cloud.seq(2), "delivered")
    assert [record["record"]["email"] for record in call["records"]] == ["lin@example.com"]
    assert api_requests(cloud.app)[-1]["body"]["events"][0]["email"] == "lin@example.com"


def test_a_call_without_a_user_id_is_sent_with_the_demos_anonymous_id(cloud, client):
    assert post(client, "/cloud/identify", email="anon@example.com").status_code == 200
    message = calls(cloud.app)[0]["message"]
    assert message["anonymousId"] == ANONYMOUS_ID and "userId" not in message
    assert message["traits"] == {"email": "anon@example.com"}


def test_an_injected_500_is_retried_with_back_off_until_delivered(cloud, client):
    fault = post(client, "/cloud/faults", fault="500", count="2")
    assert (fault.status_code, fault.json()) == (201, {"fault": "500", "remaining": 2, "path": None, "seconds": None})
    assert post(client, "/cloud/track", userId="u", event="Checkout", properties=ADA).status_code == 200

    def retrying() -> dict[str, Any] | None:
        [call] = calls(cloud.app)
        record = call["records"][0]
        return record if record["state"] == "pending" and record["attempts"] >= 1 else None
    record = wait_for(retrying, "the record waits, after a failed attempt")
    assert record["error"] == "500: server_error Internal server error (injected fault)", record
    call = settled(cloud.app, cloud.seq(1), "delivered")
    assert [(r["status"], r["fault"]) for r in call["records"][0]["requests"]] == \
        [(500, "500"), (500, "500"), (204, None)]
    assert [r["status"] for r in api_requests(cloud.app)] == [500, 500, 204]


def test_an_injected_422_puts_the_record_in_the_dead_letters_with_drips_error(cloud, client):
    assert post(client, "/cloud/faults", fault="422", count=1).status_code == 201
    assert post(client, "/cloud/track", userId="u", event="Refused", properties=ADA).status_code == 200
    call = settled(cloud.app, cloud.seq(1), "dead")
    [record] = call["records"]
    assert (record["state"], record["status"], record["error"]) == \
        ("dead", 422, "422: validation_error (email) Invalid record (injected fault)")
    assert record["requests"] == [{"n": api_requests(cloud.app)[0]["n"], "status": 422, "fault": "422"}]
    letter = [item for item in dead_letters(cloud.relay.spool.path)
              if item["messageId"] == call["message"]["messageId"]]
    assert [(item["kind"], item["status"], item["error"]) for item in letter] == [("event", 422, record["error"])]


def test_an_injected_429_pauses_the_relays_single_requests_for_retry_after(cloud, client):
    assert post(client, "/cloud/faults", fault="429", count=1).status_code == 201
    assert post(client, "/cloud/track", userId="u", event="Throttled", properties=ADA).status_code == 200
    settled(cloud.app, cloud.seq(1), "delivered")  # by the batch endpoint, whose budget the 429 did not touch
    relay = cloud_for(cloud.app).view(cloud.app, 0)["relay"]
    assert relay["pausedFor"] is not None and 0 < relay["pausedFor"] <= 5, relay
    assert relay["pauseReason"].startswith("429: "), relay
    assert [r["status"] for r in api_requests(cloud.app)] == [429, 201]


def test_pending_faults_are_listed_and_cleared(cloud, client):
    post(client, "/cloud/faults", fault="500", count="3")
    assert client.get("/cloud/state").json()["faults"] == \
        [{"fault": "500", "remaining": 3, "path": None, "seconds": None}]
    assert client.delete("/cloud/faults").status_code == 204
    assert client.get("/cloud/state").json()["faults"] == []


@pytest.mark.parametrize("path, body, errors", [
    ("/cloud/track", {"userId": "u", "event": "E", "properties": '{"a":'},
     {"properties": "Invalid JSON in properties: Expecting value (line 1, column 6)"}),
    ("/cloud/track", {"userId": "u", "event": " ", "properties": "[1]"},
     {"event": "Type an event name, like Order Completed: Drip needs an action name.",
      "properties": 'properties must be a JSON object, like {"plan": "pro"}, not an array.'}),
    ("/cloud/identify", {"email": "a@example.com", "traits": '{"score": NaN}'},
     {"traits": "Invalid JSON in traits: NaN is not JSON: use a number or null"}),
    ("/cloud/identify", {"traits": "[" * 5000}, {"traits": "Invalid JSON in traits: nested too deeply"}),
    ("/cloud/identify", {"userId": ["not", "text"]}, {"userId": "must be text"}),
    ("/cloud/identify", {"userId": "x" * 1001}, {"userId": "at most 1000 characters"}),
    ("/cloud/faults", {"fault": "404", "count": "0"},
     {"fault": "choose one of 500, 429, 422", "count": "a whole number from 1 to 100"}),
])
def test_a_mistake_in_a_cloud_form_is_a_400_naming_its_field_and_nothing_is_sent(cloud, client, path, body, errors):
    response = client.post(path, json=body)
    assert (response.status_code, response.json()) == (400, {"errors": errors})
    assert calls(cloud.app) == [] and api_requests(cloud.app) == []
    assert client.get("/cloud/state").json()["faults"] == []


@pytest.mark.parametrize("content, content_type, error", [
    (b"oops", "application/json", "the form must be sent as a JSON object"),
    (b'["userId"]', "application/json", "the form must be sent as a JSON object"),
    (b"userId=x", "application/x-www-form-urlencoded", "send the form as application/json"),
    (b'{"userId": "' + b"x" * 70_000 + b'"}', "application/json", "the form is larger than 64 KB"),
])
def test_a_body_that_is_not_a_form_is_a_400_for_the_whole_form(cloud, client, content, content_type, error):
    response = client.post("/cloud/track", content=content, headers={"Content-Type": content_type})
    assert (response.status_code, response.json()) == (400, {"errors": {"": error}})


@pytest.mark.parametrize("method, path, body", [
    ("GET", "/cloud/state?after=-1", None),
    ("GET", "/cloud/state?after=" + "9" * 40, None),
    ("GET", "/cloud/identify", None),
    ("PUT", "/cloud/track", b"{}"),
    ("POST", "/cloud/faults", b"{oops"),
    ("POST", "/cloud/state", b"{}"),
    ("DELETE", "/cloud/nowhere", None),
])
def test_the_cloud_routes_never_answer_500(cloud, client, method, path, body):
    response = client.request(method, path, content=body, headers={"Content-Type": "application/json"})
    assert response.status_code < 500, f"{method} {path} answered {response.status_code}: {response.text[:200]}"


def test_the_api_token_is_shown_only_as_its_last_4_characters(cloud, client):
    assert post(client, "/cloud/identify", email="ada@example.com").status_code == 200
    settled(cloud.app, cloud.seq(1), "delivered")
    page = client.get("/").text
    state = client.get("/cloud/state").text
    assert TOKEN not in page and TOKEN not in state
    assert '<code id="cloud-token">…abcd</code>' in page
    assert f'<code id="cloud-write-key">{DEMO_WRITE_KEY}</code>' in page


def test_a_page_opened_as_localhost_finds_the_cloud_routes_on_its_own_origin(cloud):
    # The page's script asks for /cloud/... relative to the page: any host name of this server works.
    with httpx.Client(base_url=cloud.url.replace("127.0.0.1", "localhost"), trust_env=False) as http:
        assert http.get("/cloud/state").json()["enabled"] is True


# ---------------------------------------------------------------------------------------------
# Cloud mode off


def test_with_real_drip_cloud_mode_is_off_and_no_relay_runs():
    app = create_app({"DEMO_DRIP": "real"})
    with running_relay(app, "http://127.0.0.1:9/emulator/api") as relay:
        assert relay is None
        client = app.test_client()
        page = client.get("/").get_data(as_text=True)
        assert '<span class="badge" id="cloud-badge" data-status="off" role="status">off</span>' in page
        assert "Cloud mode is off with --drip real: the demo&#39;s relay delivers only to the Drip REST API " \
               "emulator, never to Drip." in page
        assert 'id="cloud-identify-form"' not in page
        response = client.post("/cloud/track", json={"event": "E", "properties": '{"email": "a@example.com"}'})
        assert response.status_code == 409
        assert response.get_json()["error"].startswith("Cloud mode is off with --drip real")
        state = client.get("/cloud/state").get_json()
        assert (state["enabled"], state["calls"], state["relay"]) == (False, [], None)


def test_an_app_without_its_relay_says_cloud_mode_is_off():
    client = create_app().test_client()
    page = client.get("/").get_data(as_text=True)
    assert "The relay is not running: `driptag demo` starts one beside the page." in page
    response = client.post("/cloud/identify", json={"email": "a@example.com"})
    assert (response.status_code, response.get_json()) == \
        (409, {"error": "The relay is not running: `driptag demo` starts one beside the page."})
    # A form mistake is still a mistake of its field, relay or not.
    response = client.post("/cloud/identify", json={"traits": "{"})
    assert response.status_code == 400 and "traits" in response.get_json()["errors"]


def test_an_api_token_that_is_not_drips_shape_is_refused_when_the_app_is_created():
    with pytest.raises(ValueError, match="apiToken"):
        create_app({"DEMO_API_TOKEN": "too-short"})


# ---------------------------------------------------------------------------------------------
# run_demo


@pytest.fixture
def demo_run(monkeypatch) -> dict:
    """run_demo with a stand-in for werkzeug's server, whose serve_forever looks at the running demo (its relay
    answers, its spool exists) and then stops as Ctrl+C does. Nothing binds the page's port."""
    import driptag.web.demo as demo_module

    seen: dict = {}

    class FakeListening:
        def getsockname(self) -> tuple[str, int]:
            return ("127.0.0.1", 5125)

        def fileno(self) -> int:
            return 1_000_005

        def close(self) -> None:
            pass

    class FakeServer:
        def __init__(self, app: Flask) -> None:
            self.app = app

        def serve_forever(self) -> None:
            cloud = cloud_for(self.app)
            seen["relay"] = cloud.relay
            seen["relay_url"] = cloud.relay_url
            if cloud.relay is not None:
                seen["spool"] = Path(cloud.relay.spool.path)
                seen["spool_existed"] = seen["spool"].is_file()
                seen["drip_api"] = cloud.relay.client.base_url
                seen["health"] = httpx.get(f"{cloud.relay_url}/health", trust_env=False).status_code
            raise KeyboardInterrupt

        def server_close(self) -> None:
            seen["closed"] = True

    monkeypatch.setattr(demo_module, "_listen", lambda host, port: FakeListening())
    monkeypatch.setattr(demo_module, "make_server", lambda host, port, app, **kwargs: FakeServer(app))
    return seen


def _refused(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=2).close()
    except OSError:
        return True
    return False


def test_run_demo_runs_the_relay_beside_the_page_and_removes_its_spool_at_exit(demo_run, capsys):
    from driptag.web.demo import run_demo

    run_demo(port=5125)
    assert demo_run["health"] == 200, "the relay did not answer while the demo ran"
    assert demo_run["spool_existed"] and demo_run["spool"].name == "relay.sqlite3"
    assert str(demo_run["drip_api"]) == "http://127.0.0.1:5125/emulator/api"
    assert not demo_run["spool"].parent.exists(), "the relay's temporary folder is still there"
    assert demo_run["closed"]
    host, port = re.fullmatch(r"http://(127\.0\.0\.1):(\d+)", demo_run["relay_url"]).groups()
    # The relay closed its listening socket; the kernel lets go of it once the server loop's select() on
    # it returns, so it may take a moment to refuse.
    wait_for(lambda: _refused(host, int(port)), f"the relay's port {port} refuses connections", timeout=5)

    out = capsys.readouterr().out
    token = demo_run["relay"].config.sources[0].api_token
    assert token not in out
    assert f"  cloud mode: relay {demo_run['relay_url']} (write key {DEMO_WRITE_KEY}), delivering to the Drip API " \
           f"emulator with the demo token …{token[-4:]}\n" in out


def test_run_demo_with_real_drip_runs_no_relay(demo_run, capsys):
    from driptag.web.demo import run_demo

    run_demo(port=5125, drip="real")
    assert demo_run["relay"] is None and demo_run["relay_url"] is None
    assert "  cloud mode: off with real Drip\n" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------
# In the browser


class CloudPage:
    """The demo page's cloud panel in a browser tab."""

    def __init__(self, page: Page, server: CloudServer, width: int = 1280) -> None:
        self.page = page
        self.server = server
        self.page_errors: list[str] = []
        self.posts: list[str] = []
        page.on("pageerror", lambda error: self.page_errors.append(str(error)))
        page.on("request", lambda r: r.method != "GET" and self.posts.append(f"{r.method} {r.url}"))
        page.set_viewport_size({"width": width, "height": 900})
        page.set_default_timeout(15_000)

    def open(self) -> "CloudPage":
        self.page.goto(self.server.url + "/")
        expect(self.page.locator("#cloud-badge")).to_have_text("relay running")
        return self

    @property
    def calls_log(self):
        return self.page.get_by_role("log", name="Calls sent through the relay")

    @property
    def api_log(self):
        return self.page.get_by_role("log", name="Requests received by the Drip API emulator")

    def call(self, seq: int):
        return self.calls_log.locator(f".cloud-call[data-call='{seq}']")

    def identify(self, *, user_id: str = "", email: str = "", traits: str = "") -> None:
        form = self.page.locator("#cloud-identify-form")
        form.get_by_label("User ID").fill(user_id)
        form.get_by_label("Email").fill(email)
        form.get_by_label("Traits").fill(traits)
        form.get_by_role("button", name="Send to the relay").click()

    def track(self, *, event: str, user_id: str = "", properties: str = "") -> None:
        form = self.page.locator("#cloud-track-form")
        form.get_by_label("User ID").fill(user_id)
        form.get_by_label("Event name").fill(event)
        form.get_by_label("Properties").fill(properties)
        form.get_by_role("button", name="Send to the relay").click()

    def inject(self, fault: str, count: int) -> None:
        form = self.page.locator("#cloud-fault-form")
        form.get_by_label("Answer").select_option(fault)
        form.get_by_label("for the next").fill(str(count))
        form.get_by_role("button", name="Inject").click()


def png_size(path: Path) -> tuple[int, int]:
    """A PNG file's width and height, from its IHDR chunk; AssertionError if the file is not a PNG."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


@pytest.mark.parametrize("width", [1280, 390])
def test_a_track_is_delivered_then_an_injected_500_is_retried_then_delivered(page: Page, cloud: CloudServer,
                                                                              width: int):
    tab = CloudPage(page, cloud, width).open()

    # A track through the relay: delivered, and beside it the exact request the emulator received.
    tab.track(user_id="user-42", event="Order Completed",
              properties='{"email": "ada@example.com", "revenue": 19.99, "order_id": "A-1001"}')
    first = tab.call(cloud.seq(1))
    expect(first).to_have_attribute("data-state", "delivered")
    expect(first.locator(".relay-answer")).to_have_text('relay answered 200 {"success":true}')
    [delivered] = api_requests(cloud.app)
    expect(first.locator(".record[data-kind=event] .record-detail")).to_have_text(
        f"Drip API requests: #{delivered['n']} 204")
    received = tab.api_log.locator(f".api-request[data-n='{delivered['n']}']")
    expect(received).to_have_attribute("data-status", "204")
    expect(received.locator(".api-path")).to_have_text(f"/v2/{ACCOUNT}/events")
    expect(received.locator(".payload")).to_have_text(json.dumps(delivered["body"], indent=2))

    # The emulator answers 500 twice: the relay backs off and tries again, then delivers.
    tab.inject("500", 2)
    expect(page.locator("#cloud-faults")).to_have_text("Pending: 500 for the next 2 calls.")
    tab.track(user_id="user-42", event="Checkout Started", properties='{"email": "ada@example.com"}')
    second = tab.call(cloud.seq(2))
    retrying = second.locator(".record[data-state=pending]:not([data-attempts='0']) .record-detail",
                              has_text=re.compile(r"^[12] attempts? failed: 500: server_error Internal server error \(injected fault\) · next try in \d"))
    expect(retrying).to_have_count(1, timeout=WAIT_MS)
    expect(second).to_have_attribute("data-state", "delivered", timeout=WAIT_MS)
    failed_first, failed_again, ok = [r["n"] for r in api_requests(cloud.app)[1:]]
    expect(second.locator(".record-detail")).to_have_text(
        f"Drip API requests: #{failed_first} 500 (injected) → #{failed_again} 500 (injected) → #{ok} 204")
    expect(tab.api_log.locator(".api-request[data-status='500'] .tag")).to_have_text(["injected 500", "injected 500"])
    expect(page.locator("#cloud-faults")).to_have_text("No fault pending: the emulator answers as Drip does.")

    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"demo-cloud-{width}.png"
    path.unlink(missing_ok=True)
    # What the relay holds and what the emulator received, in sight (the panel scrolls inside on a wide window).
    page.locator(".cloud-views").evaluate("views => views.scrollIntoView({block: 'start'})")
    page.screenshot(path=str(path))
    assert png_size(path) == (width, 900), f"{path} is not a screenshot of the {width} px page"
    assert tab.page_errors == [], f"the page threw: {tab.page_errors}"


def test_invalid_json_in_a_cloud_form_is_shown_next_to_the_field_and_nothing_is_sent(page: Page, cloud: CloudServer):
    tab = CloudPage(page, cloud).open()
    tab.identify(email="ada@example.com", traits='{"first_name": "Ada",}')

    traits = page.locator("#cloud-identify-traits")
    error = page.locator("#cloud-identify-traits-error")
    expect(error).to_contain_text("Invalid JSON in traits: ")
    expect(error).to_have_attribute("role", "alert")
    expect(traits).to_have_attribute("aria-invalid", "true")
    expect(traits).to_be_focused()
    field_box, error_box = traits.bounding_box(), error.bounding_box()
    assert 0 <= error_box["y"] - (field_box["y"] + field_box["height"]) < 30, "the error is not under its field"

    tab.track(event="Signed Up", properties='["plan"]')
    expect(page.locator("#cloud-track-properties-error")).to_have_text(
        'properties must be a JSON object, like {"plan": "pro"}, not an array.')
    assert tab.posts == [], f"a form with a JSON mistake was sent: {tab.posts}"

    # A mistake only the server sees (a blank event name) comes back next to its field too.
    tab.track(event=" ", properties='{"email": "ada@example.com"}')
    expect(page.locator("#cloud-track-event-error")).to_have_text(
        "Type an event name, like Order Completed: Drip needs an action name.")
    expect(page.locator("#cloud-track-event")).to_be_focused()
    assert calls(cloud.app) == [] and api_requests(cloud.app) == []
    expect(page.locator("#cloud-calls-empty")).to_be_visible()

    # Fixed, the call goes out.
    traits.fill('{"first_name": "Ada"}')
    expect(error).to_be_hidden()
    page.locator("#cloud-identify-form").get_by_role("button", name="Send to the relay").click()
    expect(tab.call(cloud.seq(1))).to_have_attribute("data-state", "delivered")
    assert tab.page_errors == [], f"the page threw: {tab.page_errors}"


def test_a_dead_letter_and_a_skipped_call_say_why(page: Page, cloud: CloudServer):
    tab = CloudPage(page, cloud).open()
    tab.inject("422", 1)
    tab.track(event="Refused", properties='{"email": "ada@example.com"}')
    expect(tab.call(cloud.seq(1))).to_have_attribute("data-state", "dead")
    expect(tab.call(cloud.seq(1)).locator(".record-detail")).to_contain_text(
        "in the dead letters, with Drip's error: 422: validation_error (email) Invalid record (injected fault)")
    tab.track(user_id="nobody-knows", event="Viewed")
    expect(tab.call(cloud.seq(2))).to_have_attribute("data-state", "skipped")
    expect(tab.call(cloud.seq(2)).locator(".record")).to_have_text(
        "Skipped: no email. Nothing goes to Drip for this call.")
    expect(page.locator("#cloud-summary")).to_contain_text("dead letter")


@pytest.mark.parametrize("width", [360, 390, 800, 1180, 1280, 1920, 2560])
def test_the_cloud_panel_fits_from_a_phone_to_a_wide_screen(page: Page, cloud: CloudServer, client, width: int):
    tab = CloudPage(page, cloud, width)
    for n in range(3):
        post(client, "/cloud/identify", userId=f"user-{n}", email=f"person{n}@example.com", traits='{"plan": "pro"}')
        post(client, "/cloud/track", userId=f"user-{n}", event=f"Order Completed {n}",
             properties='{"order_id": "A-%d", "revenue": 19.99}' % n)
    settled(cloud.app, cloud.seq(6), "delivered")
    tab.open()
    expect(tab.calls_log.locator(".cloud-call[data-state=delivered]")).to_have_count(6)
    expect(tab.api_log.locator(".api-request")).to_have_count(9)

    assert page.evaluate(OVERLAPS) == [], f"panels overlap at {width}px"
    scroll_width = page.evaluate("() => document.documentElement.scrollWidth")
    assert scroll_width <= width, f"the page is {scroll_width}px wide in a {width}px window"
    panel = page.locator("#cloud-mode")
    assert panel.evaluate("p => p.scrollWidth <= p.clientWidth"), f"the cloud panel scrolls sideways at {width}px"

    views = page.locator(".cloud-view").evaluate_all(
        "vs => vs.map(v => { const r = v.getBoundingClientRect(); return [r.left, r.top, r.width]; })")
    (relay_left, relay_top, _), (api_left, api_top, _) = views
    inner = panel.evaluate("""p => { const style = getComputedStyle(p);
        return p.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight); }""")
    if inner >= 600:
        assert relay_top == api_top and relay_left < api_left, f"not side by side in a {inner}px panel: {views}"
    else:
        assert relay_left == api_left and relay_top < api_top, f"not one under the other in a {inner}px panel: {views}"
    if width > 1180:
        # A column of its own beside the device-mode logs, starting level with them.
        tops = page.locator(".logs > .log-panel").evaluate_all("ps => ps.map(p => p.getBoundingClientRect().top)")
        assert len(tops) == 3 and len(set(tops)) == 1, f"the cloud panel is not a third column: {tops}"
    assert tab.page_errors == [], f"the page threw: {tab.page_errors}"
