"""The QA demo site (`driptag demo`), used as a person would: fill the forms, press the buttons, read the logs.

The app under test is `driptag.web.demo.create_app`, served on 127.0.0.1 by werkzeug in a daemon thread,
with the offline Drip emulator. Chromium is offline (see conftest.py); nothing here needs a network.
"""

from __future__ import annotations

import re
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from flask import Flask
from playwright.sync_api import Page, expect
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from werkzeug.serving import make_server

from driptag import Settings, build_manifest, render
from driptag.cli import main as driptag
from driptag.emulators.trackjs import collector_for, emulator_script

ACCOUNT = "83702741"
CAMPAIGN = "7654321"
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
LAPTOP = {"width": 1366, "height": 768}


@dataclass
class Served:
    app: Flask
    url: str


def serve(app: Flask) -> Iterator[Served]:
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Served(app, f"http://127.0.0.1:{server.server_port}")
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def demo_server() -> Iterator[Served]:
    from driptag.web.demo import create_app

    yield from serve(create_app({"DEMO_ACCOUNT": ACCOUNT, "DEMO_CAMPAIGN_ID": CAMPAIGN}))


@pytest.fixture(scope="module")
def slow_server() -> Iterator[Served]:
    """The emulator answering after 800 ms: later than the loader's 300 ms callback timeout."""
    from driptag.web.demo import create_app

    yield from serve(create_app({"DEMO_ACCOUNT": ACCOUNT, "DRIP_EMULATOR_LATENCY_MS": 800}))


@pytest.fixture(scope="module")
def real_server() -> Iterator[Served]:
    from driptag.web.demo import create_app

    yield from serve(create_app({"DEMO_ACCOUNT": ACCOUNT, "DEMO_DRIP": "real"}))


class DemoPage:
    """The demo page in a browser tab, with what a person sees in it."""

    def __init__(self, page: Page, server: Served) -> None:
        self.page = page
        self.server = server
        self.console_errors: list[str] = []
        self.page_errors: list[str] = []
        self.requests: list[tuple[str, str]] = []
        page.on("console", lambda m: m.type == "error" and self.console_errors.append(m.text))
        page.on("pageerror", lambda e: self.page_errors.append(str(e)))
        page.on("request", lambda r: self.requests.append((r.method, r.url)))
        page.set_viewport_size(LAPTOP)
        page.set_default_timeout(10_000)

    def open(self, *, ready: bool = True) -> "DemoPage":
        self.page.goto(self.server.url + "/")
        if ready:
            expect(self.badge).to_have_text("ready")
        return self

    @property
    def badge(self):
        return self.page.locator("#status-badge")

    @property
    def dcq_log(self):
        return self.page.get_by_role("log", name="Commands pushed to _dcq")

    @property
    def emulator_log(self):
        return self.page.get_by_role("log", name="Commands received by the emulator")

    def pushed(self, command: str):
        return self.dcq_log.locator(f".push[data-command={command}]")

    def received(self, command: str):
        return self.emulator_log.locator(f".report[data-command={command}]")

    def identify(self, *, user_id: str = "", email: str = "", traits: str = "", integrations: str = "",
                 campaign: str = "") -> None:
        page = self.page
        page.get_by_label("User ID").fill(user_id)
        page.get_by_label("Email", exact=True).fill(email)
        page.get_by_label("Traits").fill(traits)
        page.locator("#identify-form").get_by_label("integrations").fill(integrations)
        page.get_by_label("Campaign override").fill(campaign)
        page.get_by_role("button", name="Send identify").click()

    def track(self, *, event: str, properties: str = "", revenue: str = "", integrations: str = "") -> None:
        page = self.page
        page.get_by_label("Event name").fill(event)
        page.get_by_label("Properties").fill(properties)
        page.get_by_label("Revenue").fill(revenue)
        page.locator("#track-form").get_by_label("integrations").fill(integrations)
        page.get_by_role("button", name="Send track").click()

    def collector(self) -> list[dict]:
        return collector_for(self.server.app).reports(account=ACCOUNT)

    def writes(self) -> list[tuple[str, str]]:
        """Requests other than GET (what would carry form data to a server)."""
        return [(method, url) for method, url in self.requests if method != "GET"]


@pytest.fixture
def demo(page: Page, demo_server: Served) -> Iterator[DemoPage]:
    collector_for(demo_server.app).clear()
    tab = DemoPage(page, demo_server)
    yield tab
    assert tab.page_errors == [], f"the page threw: {tab.page_errors}"


def no_console_errors(tab: DemoPage) -> None:
    assert tab.console_errors == [], f"console errors (a CSP violation, a 404...): {tab.console_errors}"


# ---------------------------------------------------------------------------------------------
# The forms, the _dcq log and the emulator's column


def test_identify_shows_in_the_dcq_log_and_in_the_emulator_column_with_success(demo: DemoPage):
    demo.open()
    demo.identify(user_id="user-1", email="ada@example.com", traits='{"first_name": "Ada", "tags": "vip, beta"}')

    identify = demo.pushed("identify")
    expect(identify).to_have_count(1)
    expect(identify).to_have_attribute("data-answer", "success")
    expect(identify).to_contain_text('"email": "ada@example.com"')
    expect(identify).to_contain_text('"user_id": "user-1"')
    expect(identify).to_contain_text('"vip"')  # tags: a list, as the loader maps them
    subscribe = demo.pushed("subscribe")
    expect(subscribe).to_contain_text(f'"campaign_id": "{CAMPAIGN}"')
    expect(demo.dcq_log.locator(".outcome")).to_have_text(re.compile(r"callback ran after Drip's answer"))
    expect(demo.dcq_log.locator(".call-source")).to_contain_text('analytics.identify("user-1", {')

    received = demo.received("identify")
    expect(received).to_have_count(1)
    expect(received).to_have_attribute("data-answer", "success")
    expect(received.locator(".answer")).to_have_text("success")
    expect(received).to_contain_text("ada@example.com")
    expect(received).to_contain_text("visitor_uuid")
    expect(demo.received("subscribe")).to_have_attribute("data-answer", "success")

    commands = [report["command"][0] for report in demo.collector()]
    assert commands == ["identify", "subscribe"], f"the collector got {commands}"
    no_console_errors(demo)


def test_track_with_revenue_sends_value_in_cents(demo: DemoPage):
    demo.open()
    demo.track(event="Order Completed", properties='{"order_id": "A-1001"}', revenue="19.99")

    track = demo.pushed("track")
    expect(track).to_have_attribute("data-answer", "success")
    expect(track).to_contain_text("Order Completed")
    expect(track).to_contain_text('"value": 1999')
    expect(track.locator(".payload")).not_to_contain_text("revenue")
    received = demo.received("track")
    expect(received).to_have_attribute("data-answer", "success")
    expect(received).to_contain_text('"value": 1999')

    [report] = demo.collector()
    assert report["command"][:2] == ["track", "Order Completed"]
    assert report["command"][2]["value"] == 1999 and "revenue" not in report["command"][2]
    no_console_errors(demo)


def test_identify_with_an_invalid_email_shows_drips_failure(demo: DemoPage):
    demo.open()
    demo.identify(email="not-an-email", campaign="none")

    identify = demo.pushed("identify")
    expect(identify).to_have_attribute("data-answer", "failure")
    expect(identify.locator(".response")).to_contain_text("with no argument")
    received = demo.received("identify")
    expect(received).to_have_attribute("data-answer", "failure")
    expect(received.locator(".answer")).to_have_text("failure")
    expect(demo.pushed("subscribe")).to_have_count(0)  # campaign override "none": no subscribe this time


def test_identify_without_email_sends_nothing_and_says_why(demo: DemoPage):
    demo.open()
    demo.identify(user_id="user-without-email")

    call = demo.dcq_log.locator(".entry.call")
    expect(call.locator(".nothing-pushed")).to_contain_text("Nothing was pushed to _dcq")
    expect(call.locator(".warning")).to_contain_text("[driptag] identify: no email")
    expect(call.locator(".outcome")).to_have_attribute("data-outcome", "timeout")
    expect(call.locator(".outcome")).to_contain_text("timeout")
    demo.page.wait_for_timeout(700)  # more than one poll of the collector
    expect(demo.emulator_log.locator(".report")).to_have_count(0)
    assert demo.collector() == []


def test_unknown_campaign_override_shows_drip_doing_nothing(demo: DemoPage):
    demo.open()
    demo.identify(email="grace@example.com", campaign="999")

    expect(demo.pushed("subscribe")).to_contain_text('"campaign_id": "999"')
    subscribe = demo.received("subscribe")
    expect(subscribe).to_have_attribute("data-answer", "none")
    expect(subscribe).to_contain_text("Unknown campaign")
    expect(demo.received("identify")).to_have_attribute("data-answer", "success")


def test_integrations_option_turns_drip_off_for_one_call(demo: DemoPage):
    demo.open()
    demo.track(event="Hidden", integrations='{"Drip": false}')
    call = demo.dcq_log.locator(".entry.call")
    expect(call.locator(".nothing-pushed")).to_be_visible()
    expect(call.locator(".outcome")).to_have_attribute("data-outcome", "timeout")
    demo.track(event="Shown", integrations='{"All": false, "Drip": true}')
    expect(demo.received("track")).to_contain_text("Shown")
    expect(demo.received("track")).to_have_count(1)
    demo.identify(email="ada@example.com", integrations='{"Drip": false}')
    expect(call.first.locator(".nothing-pushed")).to_be_visible()  # the newest call is first
    expect(demo.pushed("identify")).to_have_count(0)


def test_campaign_override_does_not_turn_drip_back_on_when_all_is_false(demo: DemoPage):
    demo.open()
    demo.identify(email="ada@example.com", integrations='{"All": false}', campaign=CAMPAIGN)
    expect(demo.page.locator("#identify-campaign-error")).to_contain_text("Drip is off for this call")
    expect(demo.dcq_log.locator(".entry.call")).to_have_count(0)  # nothing was called, nothing pushed


def test_an_answer_after_the_timeout_leaves_the_callback_at_the_timeout(page: Page, slow_server: Served):
    demo = DemoPage(page, slow_server).open()
    demo.identify(email="ada@example.com", campaign="none")
    call = demo.dcq_log.locator(".entry.call")
    expect(call.locator(".push .answer")).to_have_text("success (after the timeout)")
    expect(call.locator(".outcome")).to_have_attribute("data-outcome", "timeout")
    assert demo.page_errors == [], f"the page threw: {demo.page_errors}"


def test_invalid_json_shows_an_error_next_to_the_field_and_sends_nothing(demo: DemoPage):
    demo.open()
    page = demo.page
    demo.identify(email="ada@example.com", traits='{"first_name": "Ada",}')

    traits = page.get_by_label("Traits")
    error = page.locator("#identify-traits-error")
    expect(error).to_be_visible()
    expect(error).to_contain_text("Invalid JSON in traits")
    expect(error).to_have_attribute("role", "alert")
    expect(traits).to_have_attribute("aria-invalid", "true")
    assert "identify-traits-error" in traits.get_attribute("aria-describedby").split()
    expect(traits).to_be_focused()
    # The error sits right under its field.
    field_box, error_box = traits.bounding_box(), error.bounding_box()
    assert 0 <= error_box["y"] - (field_box["y"] + field_box["height"]) < 30

    # A JSON array where an object is needed, in the track form's integrations.
    demo.track(event="Signed Up", properties='["plan"]', integrations="{nope")
    expect(page.locator("#track-properties-error")).to_contain_text("must be a JSON object")
    expect(page.locator("#track-integrations-error")).to_contain_text("Invalid JSON in integrations")
    expect(page.locator("#track-properties")).to_be_focused()  # the first invalid field

    page.wait_for_timeout(700)
    expect(demo.dcq_log.locator(".entry")).to_have_count(0)
    expect(page.locator("#dcq-empty")).to_be_visible()
    assert demo.collector() == []
    assert demo.writes() == [], f"form data left the page: {demo.writes()}"

    # Fixing the field clears its error, and the call goes out.
    traits.fill('{"first_name": "Ada"}')
    expect(error).to_be_hidden()
    expect(traits).not_to_have_attribute("aria-invalid", "true")
    page.get_by_role("button", name="Send identify").click()
    expect(demo.received("identify")).to_have_attribute("data-answer", "success")


def test_bad_revenue_and_missing_event_are_errors_next_to_their_fields(demo: DemoPage):
    demo.open()
    demo.track(event="", revenue="lots")
    expect(demo.page.locator("#track-event-error")).to_contain_text("event name")
    expect(demo.page.locator("#track-revenue-error")).to_contain_text("number")
    expect(demo.page.get_by_label("Event name")).to_be_focused()
    expect(demo.dcq_log.locator(".entry")).to_have_count(0)


def test_page_code_pushes_are_logged_after_track_js_replaced_the_queue(demo: DemoPage):
    demo.open()
    demo.page.wait_for_function("() => window._dcq && !Array.isArray(window._dcq)")
    demo.page.evaluate("() => window._dcq.push(['track', 'From the console', {}])")
    lone = demo.dcq_log.locator(".entry.lone")
    expect(lone.locator(".push[data-command=track]")).to_contain_text("From the console")
    expect(demo.received("track")).to_contain_text("From the console")
    # The spy left the loader and track.js alone: _dcq is Drip's object, and driptag still works.
    assert demo.page.evaluate("() => typeof window._dcq.initialize") == "function"
    assert demo.page.evaluate("() => driptag.status") == "ready"


def test_blocking_the_emulator_script_turns_the_badge_to_failed(demo: DemoPage):
    demo.page.route("**/emulator/*.js", lambda route: route.abort())
    demo.open(ready=False)
    expect(demo.badge).to_have_text("failed")
    expect(demo.page.locator("#status-badge")).to_have_attribute("data-status", "failed")
    expect(demo.page.locator("#status-detail")).to_contain_text("did not load")

    # Calls are still logged: pushed, never answered (and said so), the callback runs at the timeout.
    demo.identify(email="ada@example.com")
    expect(demo.pushed("identify")).to_have_attribute("data-answer", "unanswered")
    expect(demo.pushed("identify").locator(".answer")).to_have_text("will not be answered")
    expect(demo.dcq_log.locator(".outcome")).to_have_attribute("data-outcome", "timeout")
    expect(demo.dcq_log.locator(".outcome")).to_contain_text("track.js did not load, so Drip will not answer")
    expect(demo.emulator_log.locator(".report")).to_have_count(0)


def test_missing_loader_is_reported_and_nothing_is_sent(demo: DemoPage):
    demo.page.route("**/drip.js", lambda route: route.abort())
    demo.open(ready=False)
    expect(demo.badge).to_have_text("failed")
    demo.identify(email="ada@example.com")
    expect(demo.page.locator("#identify-form-error")).to_contain_text("loader is not on this page")


# ---------------------------------------------------------------------------------------------
# /drip.js and the snippet


def fetch(url: str) -> tuple[int, dict, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def test_drip_js_is_the_builders_js_output_pointing_at_the_emulator(demo_server: Served):
    status, headers, body = fetch(demo_server.url + "/drip.js")
    assert status == 200
    assert headers["Content-Type"].startswith("application/javascript")
    expected = render(Settings(account=ACCOUNT, campaign_id=CAMPAIGN, script_origin=demo_server.url + "/emulator"), "js")
    assert body == expected.encode("utf-8")
    assert f"{demo_server.url}/emulator/{ACCOUNT}.js".encode() in body


def test_snippet_is_the_html_output_with_sizes_hashes_and_a_copy_button(demo: DemoPage):
    demo.page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=demo.server.url)
    demo.open()
    page = demo.page
    settings = Settings(account=ACCOUNT, campaign_id=CAMPAIGN)
    snippet = render(settings, "html")
    html, js = build_manifest(settings, "html"), build_manifest(settings, "js")

    text = page.get_by_label("The snippet")
    expect(text).to_have_value(snippet)
    assert "https://tag.getdrip.com/83702741.js" in snippet
    expect(page.locator("#snippet-bytes")).to_have_text(f"{html['bytes']:,} bytes")
    expect(page.locator("#snippet-gzip")).to_have_text(f"{html['gzip_bytes']:,} bytes")
    expect(page.locator("#snippet-csp-hash")).to_have_text(html["csp_hash"])
    expect(page.locator("#js-integrity")).to_have_text(js["integrity"])

    page.get_by_role("button", name="Copy snippet").click()
    expect(page.locator("#copy-status")).to_contain_text("Copied")
    assert page.evaluate("() => navigator.clipboard.readText()") == snippet


def test_copy_falls_back_to_selecting_when_the_clipboard_api_is_missing(demo: DemoPage):
    demo.page.add_init_script("Object.defineProperty(navigator, 'clipboard', {value: undefined})")
    demo.open()
    demo.page.get_by_role("button", name="Copy snippet").click()
    expect(demo.page.locator("#copy-status")).not_to_be_empty()
    selected = demo.page.evaluate(
        "() => { const t = document.getElementById('snippet-text'); return t.value.slice(t.selectionStart, t.selectionEnd); }")
    assert selected == render(Settings(account=ACCOUNT, campaign_id=CAMPAIGN), "html")


# ---------------------------------------------------------------------------------------------
# Keyboard


def test_keyboard_tab_reaches_the_forms_and_enter_sends(demo: DemoPage):
    demo.open()
    page = demo.page
    focused = lambda: page.evaluate("() => document.activeElement && document.activeElement.id")  # noqa: E731

    def tab_to(element_id: str, limit: int = 30) -> list[str]:
        seen = []
        for _ in range(limit):
            page.keyboard.press("Tab")
            seen.append(focused())
            if seen[-1] == element_id:
                return seen
        raise AssertionError(f"Tab never reached #{element_id}; it went through {seen}")

    tab_to("identify-user-id")
    page.keyboard.type("kb-user")
    page.keyboard.press("Tab")
    assert focused() == "identify-email"
    page.keyboard.type("kb@example.com")
    page.keyboard.press("Enter")
    expect(demo.pushed("identify")).to_contain_text("kb@example.com")
    expect(demo.received("identify")).to_have_attribute("data-answer", "success")

    seen = tab_to("track-event")
    assert seen[:3] == ["identify-traits", "identify-integrations", "identify-campaign"], seen
    page.keyboard.type("Keyboard Event")
    page.keyboard.press("Enter")
    expect(demo.pushed("track")).to_contain_text("Keyboard Event")

    # Ctrl+Enter in a JSON field sends its form; the focused control shows a visible outline.
    page.get_by_label("Properties").fill('{"via": "ctrl-enter"}')
    page.get_by_label("Properties").press("Control+Enter")
    expect(demo.pushed("track").filter(has_text="ctrl-enter")).to_have_count(1)
    tab_to("track-send")
    outline = page.evaluate("() => getComputedStyle(document.activeElement).outlineStyle")
    assert outline not in ("", "none"), f"the focused button has no visible outline ({outline})"


# ---------------------------------------------------------------------------------------------
# Real Drip mode (no network: Drip's host is routed to a stand-in)


def test_real_mode_drip_js_points_at_tag_getdrip_com():
    from driptag.web.demo import create_app

    client = create_app({"DEMO_ACCOUNT": ACCOUNT, "DEMO_DRIP": "real"}).test_client()
    response = client.get("/drip.js")
    assert response.status_code == 200
    assert response.data == render(Settings(account=ACCOUNT), "js").encode("utf-8")
    assert b"https://tag.getdrip.com/83702741.js" in response.data
    assert b"/emulator/" not in response.data
    page = client.get("/")
    assert b"collector is not used" in page.data
    assert "https://tag.getdrip.com" in page.headers["Content-Security-Policy"]


def test_real_mode_page_shows_drips_answers_in_the_dcq_log(page: Page, real_server: Served):
    # Stand in for tag.getdrip.com: the emulator's script, with no collector (Drip has none).
    page.route("**/tag.getdrip.com/**", lambda route: route.fulfill(
        body=emulator_script(collector=None), content_type="application/javascript"))
    tab = DemoPage(page, real_server)
    tab.open()
    expect(page.locator("#fact-mode")).to_have_text("real Drip")
    expect(page.locator("#emulator-not-used")).to_contain_text("collector is not used")
    tab.identify(email="ada@example.com")
    expect(tab.pushed("identify")).to_have_attribute("data-answer", "success")
    assert collector_for(real_server.app).reports() == []
    assert not any("/emulator/" in url for _, url in tab.requests)


def test_real_mode_with_track_js_failed_says_calls_will_not_be_answered(page: Page, real_server: Served):
    # Drip's host answers nothing until the test lets it fail: a call made while track.js is loading waits
    # for Drip; once track.js has failed, it and every later call say no answer will come.
    held = []
    page.route("**/tag.getdrip.com/**", lambda route: held.append(route))
    tab = DemoPage(page, real_server)
    page.goto(real_server.url + "/", wait_until="domcontentloaded")  # "load" would wait for track.js
    expect(tab.badge).to_have_text("loading")
    tab.identify(email="ada@example.com")
    identify = tab.pushed("identify")
    expect(identify.locator(".answer")).to_have_text("waiting for Drip")
    expect(identify).to_have_attribute("data-answer", "pending")

    assert len(held) == 1, f"track.js requests held: {[route.request.url for route in held]}"
    held[0].abort()
    expect(tab.badge).to_have_text("failed")
    expect(identify).to_have_attribute("data-answer", "unanswered")
    expect(identify.locator(".answer")).to_have_text("will not be answered")
    expect(identify.locator(".response")).to_have_text(
        "track.js did not load, so this command stays in _dcq: Drip never gets it.")

    tab.track(event="Order Completed", revenue="19.99")
    track = tab.pushed("track")
    expect(track).to_have_attribute("data-answer", "unanswered")
    expect(track.locator(".answer")).to_have_text("will not be answered")
    outcomes = tab.dcq_log.locator(".outcome")
    expect(outcomes).to_have_count(2)
    for index in range(2):
        expect(outcomes.nth(index)).to_have_attribute("data-outcome", "timeout")
        expect(outcomes.nth(index)).to_contain_text(
            "callback ran after the timeout (300 ms): track.js did not load, so Drip will not answer")
    expect(tab.dcq_log).not_to_contain_text("waiting for Drip")
    assert tab.page_errors == [], f"the page threw: {tab.page_errors}"


# ---------------------------------------------------------------------------------------------
# The server


def test_the_app_never_runs_with_debug():
    from driptag.web.demo import create_app

    assert create_app().debug is False
    assert create_app({"DEBUG": True}).debug is False


FAKE_FD = 1_000_003  # the stand-in socket's file descriptor, as handed to make_server


@pytest.fixture
def started(monkeypatch) -> dict:
    """run_demo with stand-ins for its listening socket and werkzeug's make_server: what they were given, and
    whether the server was closed. Nothing binds a port, so any port number can be asked for."""
    import driptag.web.demo as demo_module

    started: dict = {"closed": False}

    class FakeListening:
        """What `_listen` returns, bound to nothing: it reports the address it was asked for."""

        def __init__(self, host: str, port: int) -> None:
            self.address = (host, port)

        def getsockname(self) -> tuple[str, int]:
            return self.address

        def fileno(self) -> int:
            return FAKE_FD

        def close(self) -> None:
            started["listening_closed"] = True

    def fake_listen(host: str, port: int) -> FakeListening:
        started["listened"] = (host, port)
        return FakeListening(host, port)

    class FakeServer:
        def __init__(self, port: int) -> None:
            self.server_port = port

        def serve_forever(self) -> None:
            raise KeyboardInterrupt  # as when the user presses Ctrl-C

        def server_close(self) -> None:
            started["closed"] = True

    def fake_make_server(host, port, app, **kwargs):
        started.update(host=host, port=port, app=app, **kwargs)
        return FakeServer(port)

    monkeypatch.setattr(demo_module, "_listen", fake_listen)
    monkeypatch.setattr(demo_module, "make_server", fake_make_server)
    return started


def test_run_demo_serves_threaded_without_debugger_and_prints_the_url(started, capsys):
    from driptag.web.demo import run_demo

    run_demo(account="83702741", campaign_id=None, host="127.0.0.1", port=5123, drip="emulator")
    assert started["listened"] == ("127.0.0.1", 5123)
    assert started["fd"] == FAKE_FD, "werkzeug was not handed the socket run_demo listens on"
    assert isinstance(started["app"], Flask) and started["app"].debug is False
    assert started["threaded"] is True
    assert "use_debugger" not in started or started["use_debugger"] is False
    assert started["closed"] and started["listening_closed"]
    out = capsys.readouterr().out
    assert "http://127.0.0.1:5123/" in out
    assert "campaign 7654321" in out

    # /drip.js of that app points at the emulator, and the emulator knows the demo campaign.
    client = started["app"].test_client()
    assert b"http://127.0.0.1:5123/emulator/83702741.js" in client.get("/drip.js", base_url="http://127.0.0.1:5123").data
    assert client.get("/emulator/83702741.js").data.count(b"7654321") == 1


def test_run_demo_on_all_interfaces_keeps_the_emulator_on_loopback(started):
    from driptag.web.demo import run_demo

    run_demo(account="83702741", campaign_id="1234", host="0.0.0.0", port=5124, drip="emulator")
    assert started["listened"] == ("0.0.0.0", 5124)
    client = started["app"].test_client()
    body = client.get("/drip.js", base_url="http://192.168.1.20:5124").data
    assert b"http://127.0.0.1:5124/emulator/83702741.js" in body
    assert "http://127.0.0.1:5124" in client.get("/", base_url="http://192.168.1.20:5124").headers["Content-Security-Policy"]


@pytest.mark.parametrize("host", ["::1", "192.168.1.20"])
def test_driptag_demo_refuses_a_host_the_emulator_cannot_be_reached_from(capsys, host):
    assert driptag(["demo", "--host", host, "--port", "0"]) == 2
    assert capsys.readouterr().err == (f"driptag: --host {host}: with the emulator the page loads track.js over http "
                                       "from 127.0.0.1, so listen on 127.0.0.1, localhost, 0.0.0.0 or ::, or use "
                                       "--drip real\n")


def test_driptag_demo_listens_on_127_0_0_1_by_default(started):
    assert driptag(["demo", "--port", "0"]) == 0
    assert started["host"] == "127.0.0.1"


def test_driptag_demo_with_an_invalid_account_exits_2(capsys):
    assert driptag(["demo", "--account", "12ab", "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert "account" in err and "12ab" in err and "Traceback" not in err


@pytest.mark.parametrize("method, path, body", [
    ("POST", "/", b"userId=x&traits={oops"),
    ("GET", "/?traits=%7Boops", None),
    ("GET", "/drip.js?x=%00", None),
    ("PUT", "/drip.js", b"{}"),
    ("GET", "/emulator/not-an-account.js", None),
    ("POST", "/emulator/events", b"{oops"),
    ("GET", "/emulator/events?after=-1", None),
    ("GET", "/nowhere", None),
])
def test_the_server_never_answers_500(demo_server: Served, method: str, path: str, body: bytes | None):
    request = urllib.request.Request(demo_server.url + path, data=body, method=method,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            status = response.status
    except urllib.error.HTTPError as error:
        status = error.code
    assert status < 500, f"{method} {path} answered {status}"


def test_odd_host_headers_never_break_drip_js():
    from driptag.web.demo import create_app

    client = create_app().test_client()
    for host in ("evil.example", "127.0.0.1:99999", "[::1]:5000", "localhost:5000", "LOCALHOST"):
        response = client.get("/drip.js", headers={"Host": host})
        assert response.status_code == 200, host
        assert re.search(rb"http://(127\.0\.0\.1|localhost)(:\d+)?/emulator/83702741\.js", response.data), host


def test_page_has_a_strict_csp_and_no_inline_script(demo_server: Served):
    status, headers, body = fetch(demo_server.url + "/")
    assert status == 200
    csp = headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "'unsafe-inline'" not in csp and "default-src 'none'" in csp
    html = body.decode("utf-8")
    assert not re.search(r"\son[a-z]+\s*=", html), "inline event handler in the page"
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", html, re.S)
    assert all('type="application/json"' in attrs or "src=" in attrs for attrs, _ in scripts)
    assert not re.search(r"https?://(?!127\.0\.0\.1|localhost|tag\.getdrip\.com)", re.sub(r"<textarea.*?</textarea>", "", html, flags=re.S)), \
        "the page refers to another host (fonts, CDNs)"


# ---------------------------------------------------------------------------------------------
# Layout, from a phone to a wide screen

PLACEHOLDERS = {
    "identify-user-id": "e.g. user-42",
    "identify-email": "e.g. ada@example.com",
    "identify-traits": 'e.g. {"first_name": "Ada", "tags": "vip, beta"}',
    "identify-integrations": 'e.g. {"Drip": {"doubleOptin": true}}',
    "identify-campaign": "e.g. 1234567, or none",
    "track-event": "e.g. Order Completed",
    "track-revenue": "e.g. 19.99",
    "track-properties": 'e.g. {"order_id": "A-1001", "items": 2}',
    "track-integrations": 'e.g. {"All": false, "Drip": true}',
    "track-timestamp": "e.g. 2024-05-01T12:00:00Z",
}

# Every pair of panels whose boxes overlap, at every scroll position from the top to the bottom of the page.
OVERLAPS = """() => {
  const panels = [...document.querySelectorAll(".panel")];
  const names = panels.map(p => p.getAttribute("aria-labelledby"));
  const overlaps = [];
  const bottom = document.documentElement.scrollHeight - window.innerHeight;
  for (let y = 0; ; y = Math.min(bottom, y + 40)) {
    window.scrollTo(0, y);
    const boxes = panels.map(p => p.getBoundingClientRect());
    for (let i = 0; i < boxes.length; i++) {
      for (let j = i + 1; j < boxes.length; j++) {
        const a = boxes[i], b = boxes[j];
        if (a.left < b.right - 1 && b.left < a.right - 1 && a.top < b.bottom - 1 && b.top < a.bottom - 1) {
          overlaps.push(`${names[i]} and ${names[j]} at scrollY ${Math.round(window.scrollY)}`);
        }
      }
    }
    if (y >= bottom) break;
  }
  window.scrollTo(0, 0);
  return overlaps;
}"""


def send_ten_calls(demo: DemoPage) -> None:
    """Five identify and five track calls, through the forms, each answered by the emulator."""
    for n in range(5):
        demo.identify(user_id=f"user-{n}", email=f"person{n}@example.com", traits='{"plan": "pro"}')
        demo.track(event=f"Order Completed {n}", properties='{"order_id": "A-%d"}' % n, revenue="19.99")
    expect(demo.received("identify")).to_have_count(5)
    expect(demo.received("subscribe")).to_have_count(5)
    expect(demo.received("track")).to_have_count(5)
    expect(demo.dcq_log.locator(".outcome[data-outcome=answered]")).to_have_count(10)


def click_landing_on(page: Page, button) -> None:
    """Click `button` as a person would: Playwright clicks only once the button itself gets the pointer at its
    centre, so a button covered by another box makes this time out (reported with what covers it)."""
    button.scroll_into_view_if_needed()
    try:
        button.click(timeout=5000)
    except PlaywrightTimeout:
        covered_by = button.evaluate("""b => { const r = b.getBoundingClientRect();
            const e = document.elementFromPoint(r.x + r.width / 2, r.y + r.height / 2);
            return e ? e.outerHTML.slice(0, 160) : null; }""")
        raise AssertionError(f"the click never landed on the button: it is covered by {covered_by}") from None


@pytest.mark.parametrize("width", [1280, 1920])
def test_copy_snippet_can_be_clicked_after_ten_calls_on_a_wide_window(demo: DemoPage, width: int):
    page = demo.page
    page.set_viewport_size({"width": width, "height": 900})
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=demo.server.url)
    demo.open()
    send_ten_calls(demo)

    click_landing_on(page, page.get_by_role("button", name="Copy snippet"))
    snippet = render(Settings(account=ACCOUNT, campaign_id=CAMPAIGN), "html")
    expect(page.locator("#copy-status")).to_have_text(f"Copied {len(snippet):,} characters")
    assert page.evaluate("() => navigator.clipboard.readText()") == snippet
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"demo-{width}-after-copy.png"))


@pytest.mark.parametrize("width", [360, 800, 1180, 1280, 1920, 2560])
def test_no_panel_covers_another_and_nothing_scrolls_sideways(demo: DemoPage, width: int):
    page = demo.page
    page.set_viewport_size({"width": width, "height": 800})
    demo.open()
    send_ten_calls(demo)

    assert page.evaluate(OVERLAPS) == [], f"panels overlap at {width}px"
    scroll_width = page.evaluate("() => document.documentElement.scrollWidth")
    assert scroll_width <= width, f"the page is {scroll_width}px wide in a {width}px window"
    # The snippet comes after the logs, in the page's order and on the screen.
    logs_bottom = page.locator(".logs").evaluate("e => e.getBoundingClientRect().bottom")
    snippet_top = page.locator(".snippet").evaluate("e => e.getBoundingClientRect().top")
    assert snippet_top > logs_bottom, f"the snippet starts at {snippet_top}px, above the logs' end ({logs_bottom}px)"


@pytest.mark.parametrize("width", [1280, 1920])
def test_the_cloud_mode_panel_is_a_third_column_beside_the_logs(demo: DemoPage, width: int):
    # Cloud mode's panel is one more panel in .logs (here saying that the relay is not running: this app has none).
    page = demo.page
    page.set_viewport_size({"width": width, "height": 800})
    demo.open()
    expect(page.locator(".logs > .log-panel:nth-child(3)")).to_have_id("cloud-mode")
    boxes = page.locator(".logs > .log-panel").evaluate_all(
        "panels => panels.map(p => { const r = p.getBoundingClientRect(); return [r.left, r.top, r.width]; })")
    assert len(boxes) == 3
    lefts, tops, widths = zip(*boxes)
    assert list(lefts) == sorted(lefts) and len(set(tops)) == 1, f"not side by side: {boxes}"
    assert max(widths) - min(widths) < 1, f"columns of different widths: {boxes}"
    assert page.evaluate(OVERLAPS) == []
    assert page.evaluate("() => document.documentElement.scrollWidth") <= width


def test_placeholders_are_examples_in_a_muted_italic_style(demo: DemoPage):
    demo.open()
    page = demo.page
    fields = page.locator("input[placeholder], textarea[placeholder]")
    assert dict(fields.evaluate_all("els => els.map(e => [e.id, e.placeholder])")) == PLACEHOLDERS
    styles = fields.evaluate_all("""els => els.map(e => {
        const field = getComputedStyle(e), hint = getComputedStyle(e, "::placeholder");
        return [e.id, field.color, hint.color, hint.fontStyle, hint.opacity]; })""")
    for field_id, text_colour, colour, font_style, opacity in styles:
        assert (colour, font_style, opacity) == ("rgb(107, 114, 128)", "italic", "1"), \
            f"#{field_id}: placeholder {colour} {font_style}, opacity {opacity}"
        assert text_colour == "rgb(28, 34, 48)", f"#{field_id}: typed text is {text_colour}"


# ---------------------------------------------------------------------------------------------
# How it looks


def test_full_page_screenshot(demo: DemoPage):
    demo.open()
    demo.identify(user_id="user-42", email="ada@example.com", traits='{"first_name": "Ada", "plan": "pro"}')
    expect(demo.received("subscribe")).to_have_count(1)
    demo.track(event="Order Completed", properties='{"order_id": "A-1001", "items": 2}', revenue="19.99")
    expect(demo.received("track")).to_have_count(1)
    demo.identify(user_id="visitor-7")
    expect(demo.dcq_log.locator(".outcome[data-outcome=timeout]")).to_have_count(1)
    demo.page.get_by_label("Traits").fill('{"first_name": "Grace",}')
    demo.page.get_by_role("button", name="Send identify").click()
    expect(demo.page.locator("#identify-traits-error")).to_be_visible()

    # Readable on a laptop: nothing wider than the window.
    width = demo.page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= LAPTOP["width"], f"the page is {width}px wide on a {LAPTOP['width']}px screen"
    demo.page.evaluate("() => window.scrollTo(0, 0)")
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / "demo.png"
    demo.page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000
    # The first screen (no scrolling) too, as a person sees it on opening the page.
    demo.page.screenshot(path=str(ARTIFACTS / "demo-viewport.png"))
    no_console_errors(demo)
