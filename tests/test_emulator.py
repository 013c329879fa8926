"""The Drip emulator (the offline stand-in for Drip's track.js) in headless Chromium, fully offline.

Each test loads a fresh page from the test site with Drip's own snippet; the snippet's request for
`//tag.getdrip.com/{account}.js` is fulfilled with `emulator_script(...)`. The page records every
callback in `window.calls` ({tag, argc, args, t}). Tests wait with `wait_for_function`; a fixed wait
appears only to prove that something did NOT happen.
"""

from __future__ import annotations

import re
import socket
import time

import pytest

from driptag.emulators.trackjs import bp, collector_for, emulator_script
from driptag.loader.escaping import script_json
from pages import drips_snippet, page_html

ACCOUNT = "83702741"
CAMPAIGN = "1234567"
COOKIE = f"_drip_client_{ACCOUNT}"
FAST = {"config_delay_ms": 10, "latency_ms": 5}

# Before Drip's snippet: callback recorders, and a capture listener that notes the page's state the
# moment track.js has run (its `load` event fires right after the script executed).
PAGE_HELPERS = """<script>
window.calls = [];
window.cb = function (tag) {
  return function () {
    window.calls.push({tag: tag, argc: arguments.length,
                       args: JSON.parse(JSON.stringify(Array.prototype.slice.call(arguments))),
                       t: performance.now()});
  };
};
window.atScriptLoad = [];
document.addEventListener("load", function (event) {
  var src = event.target && event.target.src;
  if (!src || !/tag\\.getdrip\\.com|\\/emulator\\/[0-9]+\\.js/.test(src)) { return; }
  window.atScriptLoad.push({
    queueIsArray: Array.isArray(window._dcq),
    queued: Array.isArray(window._dcq) ? JSON.parse(JSON.stringify(window._dcq, function (k, v) {
      return typeof v === "function" ? "[function]" : v;
    })) : null,
    dc: window._dc ? Object.keys(window._dc).filter(function (k) {
      return typeof window._dc[k] === "function";
    }).sort() : null,
    configured: !!(window.dripEmulator && window.dripEmulator.configured),
    received: window.dripEmulator ? window.dripEmulator.received.length : null,
    t: performance.now()
  });
}, true);
</script>"""


class Emulated:
    """One page with Drip's snippet, Drip's host routed to the emulator."""

    def __init__(self, page, site) -> None:
        self.page = page
        self.site = site
        self.script_requests: list[str] = []
        self.collector_posts: list[str] = []
        self.console: list[tuple[str, str]] = []
        self.page_errors: list[str] = []
        self.served = dict(FAST, campaigns=[CAMPAIGN])
        page.on("console", lambda message: self.console.append((message.type, message.text)))
        page.on("pageerror", lambda error: self.page_errors.append(str(error)))
        page.on("request", self._on_request)
        page.route("**/tag.getdrip.com/**", self._serve)

    def _on_request(self, request) -> None:
        if request.method == "POST":
            self.collector_posts.append(request.url)

    def _serve(self, route) -> None:
        self.script_requests.append(route.request.url)
        route.fulfill(body=emulator_script(**self.served), content_type="application/javascript")

    def open(self, after: str = "", *, options: dict | None = None, snippet: str | None = None,
             served: dict | None = None, wait_configured: bool = True) -> "Emulated":
        """Load a page: helpers, `options` as window.dripEmulatorOptions, Drip's snippet, `after`."""
        if served is not None:
            self.served = dict(self.served, **served)
        head = PAGE_HELPERS
        if options is not None:
            head += f"<script>window.dripEmulatorOptions = {script_json(options)};</script>"
        head += drips_snippet(ACCOUNT) if snippet is None else snippet
        self.url = self.site.add_page(page_html(head + after))
        self.page.goto(self.url)
        if wait_configured:
            self.page.wait_for_function("() => window.dripEmulator && window.dripEmulator.configured",
                                        timeout=5000)
        return self

    def js(self, script: str, arg=None):
        return self.page.evaluate(script, arg)

    def records(self) -> list[dict]:
        return self.js("() => window.dripEmulator.received")

    def calls(self) -> list[dict]:
        return self.js("() => window.calls")

    def wait_answered(self, count: int, timeout: float = 5000) -> list[dict]:
        """Wait until `count` commands have been answered; return all records."""
        try:
            self.page.wait_for_function(
                "n => window.dripEmulator && "
                "window.dripEmulator.received.filter(r => r.answer !== 'pending').length >= n",
                arg=count, timeout=timeout)
        except Exception as exc:
            raise AssertionError(f"fewer than {count} commands answered; records: {self.records()!r}, "
                                 f"calls: {self.calls()!r}, page errors: {self.page_errors!r}") from exc
        return self.records()

    def wait_calls(self, count: int, timeout: float = 5000) -> list[dict]:
        try:
            self.page.wait_for_function("n => window.calls.length >= n", arg=count, timeout=timeout)
        except Exception as exc:
            raise AssertionError(f"fewer than {count} callbacks; calls: {self.calls()!r}, "
                                 f"records: {self.records()!r}") from exc
        return self.calls()

    def page_id(self) -> str:
        return self.js("() => window.dripEmulator.page")

    def reports(self, count: int, timeout: float = 5.0) -> list[dict]:
        """This page's reports in the site's collector, once there are `count` of them."""
        page_id = self.page_id()
        collector = collector_for(self.site.app)
        deadline = time.monotonic() + timeout
        while True:
            mine = [r for r in collector.reports() if r.get("page") == page_id]
            if len(mine) >= count or time.monotonic() > deadline:
                return mine
            time.sleep(0.01)  # polling the collector for a condition, with a deadline

    def cookie(self) -> dict | None:
        found = [c for c in self.page.context.cookies() if c["name"] == COOKIE]
        return found[0] if found else None


@pytest.fixture
def emu(page, site) -> Emulated:
    return Emulated(page, site)


def answers(records: list[dict]) -> list[str]:
    return [r["answer"] for r in records]


# -------------------------------------------------------------------------------------------------
# B1. The account


def test_missing_account_logs_no_account_specified_and_defines_nothing(emu):
    snippet = drips_snippet(ACCOUNT).replace(f"_dcs.account = '{ACCOUNT}';", "")
    emu.open('<script>_dcq.push(["identify", {email: "a@example.com", success: cb("s"), failure: cb("f")}]);'
             "</script>", snippet=snippet, wait_configured=False)
    emu.page.wait_for_function("() => window.atScriptLoad.length === 1")
    emu.page.wait_for_timeout(100)  # longer than the configuration delay: nothing may happen
    logs = [text for kind, text in emu.console if kind == "log"]
    assert logs == ["No account specified"], f"console: {emu.console!r}"
    state = emu.js("() => ({dc: typeof window._dc, emulator: typeof window.dripEmulator, "
                   "queueIsArray: Array.isArray(window._dcq), queued: window._dcq.length, calls: window.calls})")
    assert state == {"dc": "undefined", "emulator": "undefined", "queueIsArray": True, "queued": 1,
                     "calls": []}, f"without an account the emulator did something: {state!r}"


# -------------------------------------------------------------------------------------------------
# B2. Configuration


def test_page_options_override_the_served_defaults(emu):
    emu.open(options={"latency": 7, "campaigns": ["222", 333]},
             served={"config_delay_ms": 15, "campaigns": ["111"], "latency_ms": 5})
    config = emu.js("() => window.dripEmulator.config")
    assert config == {"configDelay": 15, "latency": 7, "campaigns": ["222", "333"],
                      "collector": "/emulator/events"}, f"merged config: {config!r}"
    emu.js("""() => {
      _dcq.push(["subscribe", {campaign_id: "111", fields: {email: "a@example.com"}, success: cb("111")}]);
      _dcq.push(["subscribe", {campaign_id: 333, fields: {email: "a@example.com"}, success: cb("333")}]);
    }""")
    records = emu.wait_answered(2)
    assert answers(records) == ["none", "success"], f"records: {records!r}"
    assert [c["tag"] for c in emu.calls()] == ["333"], f"calls: {emu.calls()!r}"


def test_null_collector_turns_reporting_off(emu):
    emu.open('<script>_dcq.push(["track", "Viewed", {success: cb("s")}]);</script>',
             options={"collector": None})
    emu.wait_calls(1)
    emu.page.wait_for_timeout(150)  # a report would have been sent by now
    assert emu.js("() => window.dripEmulator.config.collector") is None
    assert emu.collector_posts == [], f"POSTs to the collector: {emu.collector_posts!r}"
    assert emu.reports(0, timeout=0) == []


# -------------------------------------------------------------------------------------------------
# B3. A second copy of track.js


def test_second_copy_of_track_js_does_nothing(emu):
    emu.open('<script>_dcq.push(["identify", {email: "a@example.com", success: cb("s"), failure: cb("f")}]);'
             "</script>" + drips_snippet(ACCOUNT), options={"configDelay": 60})
    # Both copies ran (the browser may serve the second from its cache: one request or two).
    emu.page.wait_for_function("() => window.atScriptLoad.length === 2")
    assert 1 <= len(emu.script_requests) <= 2, f"track.js requests: {emu.script_requests!r}"
    emu.wait_answered(1)
    emu.page.wait_for_timeout(150)  # a second copy would have run the command again by now
    calls = emu.calls()
    records = emu.records()
    assert [c["tag"] for c in calls] == ["s"], f"callbacks: {calls!r}"
    assert [r["seq"] for r in records] == [1], f"records: {records!r}"
    reports = emu.reports(1)
    emu.page.wait_for_timeout(50)
    assert len(emu.reports(1)) == 1, f"collector: {reports!r}"


# -------------------------------------------------------------------------------------------------
# B4, B5. _dc at once; _dcq swapped only after the configuration delay


def test_dc_is_defined_at_once_while_the_queue_is_still_an_array(emu):
    emu.open('<script>_dcq.push(["track", "Early", {n: 1}]);</script>', options={"configDelay": 600000},
             wait_configured=False)
    emu.page.wait_for_function("() => window.atScriptLoad.length === 1")
    at_load = emu.js("() => window.atScriptLoad[0]")
    assert at_load["dc"] == ["hideForm", "identify", "showForm", "subscribe", "track", "unsubscribe"], at_load
    assert at_load["queueIsArray"] is True and at_load["queued"] == [["track", "Early", {"n": 1}]], at_load
    assert at_load["configured"] is False and at_load["received"] == 0, at_load
    emu.page.wait_for_timeout(100)
    still = emu.js("() => ({isArray: Array.isArray(_dcq), queued: _dcq.length, received: dripEmulator.received})")
    assert still == {"isArray": True, "queued": 1, "received": []}, f"before the configuration: {still!r}"


def test_queue_is_swapped_for_object_only_after_configuration_delay(emu):
    delay = 150
    emu.open('<script>_dcq.push(["track", "Queued", {success: cb("s")}]);</script>',
             options={"configDelay": delay}, wait_configured=False)
    emu.page.wait_for_function("() => window.atScriptLoad.length === 1")
    at_load = emu.js("() => window.atScriptLoad[0]")
    assert at_load["queueIsArray"] is True and at_load["configured"] is False, f"at script load: {at_load!r}"
    assert at_load["queued"] == [["track", "Queued", {"success": "[function]"}]], at_load
    emu.page.wait_for_function("() => !Array.isArray(window._dcq)")
    queue = emu.js("() => ({keys: Object.keys(_dcq).sort(), push: typeof _dcq.push, "
                   "initialize: typeof _dcq.initialize, proto: Object.getPrototypeOf(_dcq) === Object.prototype})")
    assert queue == {"keys": ["initialize", "push"], "push": "function", "initialize": "function",
                     "proto": True}, f"swapped queue: {queue!r}"
    timing = emu.js("() => ({waited: dripEmulator.configuredAt - dripEmulator.startedAt})")
    assert timing["waited"] >= delay - 1, f"swapped after {timing['waited']} ms, configured {delay} ms"
    calls = emu.wait_calls(1)
    assert calls[0]["tag"] == "s" and calls[0]["args"] == [{"success": True}], f"calls: {calls!r}"


def test_push_on_the_swapped_queue_runs_commands(emu):
    emu.open()
    result = emu.js("""() => {
      var r = _dcq.push(["track", "One", {success: cb("one")}], ["track", "Two", {success: cb("two")}]);
      return {isArray: Array.isArray(_dcq), returned: r === undefined ? "undefined" : r};
    }""")
    assert result == {"isArray": False, "returned": "undefined"}, result
    calls = emu.wait_calls(2)
    assert [c["tag"] for c in calls] == ["one", "two"], f"calls: {calls!r}"
    assert [r["command"][1] for r in emu.records()] == ["One", "Two"]


def test_stale_reference_to_the_old_queue_is_not_heard_after_the_swap(emu):
    emu.open('<script>window.oldQueue = _dcq; _dcq.push(["track", "Before", {success: cb("before")}]);</script>')
    emu.wait_calls(1)
    emu.js('() => window.oldQueue.push(["track", "Stale", {success: cb("stale")}])')
    emu.page.wait_for_timeout(100)
    assert [c["tag"] for c in emu.calls()] == ["before"], f"calls: {emu.calls()!r}"
    assert [r["command"][1] for r in emu.records()] == ["Before"], f"records: {emu.records()!r}"


# -------------------------------------------------------------------------------------------------
# B6. Serial queue, shift(), _action


def test_queued_commands_run_in_order(emu):
    emu.open("""<script>
      _dcq.push(["track", "First", {success: cb("track First")}]);
      _dcq.push(["identify", {email: "ada@example.com", success: cb("identify"), failure: cb("identify failed")}]);
      _dcq.push(["subscribe", {campaign_id: "1234567", fields: {email: "ada@example.com"}, success: cb("subscribe")}]);
      _dcq.push(["track", "Last", {success: cb("track Last")}]);
    </script>""", options={"configDelay": 30})
    calls = emu.wait_calls(4)
    assert [c["tag"] for c in calls] == ["track First", "identify", "subscribe", "track Last"], f"calls: {calls!r}"
    records = emu.records()
    assert [(r["seq"], r["command"][0]) for r in records] == [
        (1, "track"), (2, "identify"), (3, "subscribe"), (4, "track")], f"records: {records!r}"


def test_commands_run_one_after_another(emu):
    latency = 60
    emu.open(options={"latency": latency})
    emu.js("""() => {
      window.snapshots = [];
      function at(tag) {
        return function () {
          snapshots.push({tag: tag, t: performance.now(),
                          answers: dripEmulator.received.map(function (r) { return r.answer; })});
        };
      }
      window.pushedAt = performance.now();
      _dcq.push(["track", "A", {success: at("A")}]);
      _dcq.push(["track", "B", {success: at("B")}]);
      _dcq.push(["track", "C", {success: at("C")}]);
    }""")
    emu.page.wait_for_function("() => window.snapshots.length === 3")
    snaps = emu.js("() => window.snapshots")
    pushed_at = emu.js("() => window.pushedAt")
    assert [s["answers"] for s in snaps] == [
        ["success", "pending", "pending"],
        ["success", "success", "pending"],
        ["success", "success", "success"],
    ], f"answers seen by each callback: {snaps!r}"
    times = [pushed_at] + [s["t"] for s in snaps]
    gaps = [round(b - a, 1) for a, b in zip(times, times[1:])]
    assert all(g >= latency - 1 for g in gaps), f"gaps between answers {gaps} ms, latency {latency} ms"


def test_command_arrays_are_consumed_with_shift(emu):
    emu.open()
    emu.js("""() => {
      window.cmds = [
        ["track", "Viewed", {}],
        ["identify", {email: "ada@example.com"}],
        ["subscribe", {campaign_id: "1234567", fields: {email: "ada@example.com"}}],
        ["nonsense", 1, 2],
      ];
      cmds.forEach(function (c) { _dcq.push(c); });
    }""")
    emu.wait_answered(4)
    left = emu.js("() => window.cmds")
    assert left == [[], [], [], [1, 2]], f"command arrays after processing: {left!r}"


def test_track_adds_action_to_the_properties_it_is_given(emu):
    emu.open()
    emu.js("""() => {
      window.props = {revenue: 5, success: cb("s")};
      _dcq.push(["track", "Completed Order", window.props]);
    }""")
    emu.wait_calls(1)
    props = emu.js("() => ({keys: Object.keys(window.props), action: window.props._action})")
    assert props == {"keys": ["revenue", "success", "_action"], "action": "Completed Order"}, \
        f"the caller's properties object after track: {props!r}"


# -------------------------------------------------------------------------------------------------
# B8. identify


def test_identify_failure_calls_back_with_no_argument(emu):
    emu.open("""<script>
      _dcq.push(["identify", {first_name: "Ada", success: cb("success 1"), failure: cb("failure 1")}]);
      _dcq.push(["identify", {email: "not an e-mail", success: cb("success 2"), failure: cb("failure 2")}]);
    </script>""")
    calls = emu.wait_calls(2)
    assert [(c["tag"], c["argc"]) for c in calls] == [("failure 1", 0), ("failure 2", 0)], f"calls: {calls!r}"
    records = emu.records()
    assert [(r["answer"], r["response"]) for r in records] == [("failure", None), ("failure", None)], records
    assert emu.cookie() is None, f"a failed identify set the visitor cookie: {emu.cookie()!r}"


def test_identify_success_stores_visitor_cookie_and_calls_back_after_latency(emu):
    latency = 40
    emu.open(options={"latency": latency})
    synchronous = emu.js("""() => {
      window.pushedAt = performance.now();
      _dcq.push(["identify", {email: "ada@example.com", success: cb("success"), failure: cb("failure")}]);
      return window.calls.length;
    }""")
    assert synchronous == 0, "identify answered synchronously"
    calls = emu.wait_calls(1)
    cookie = emu.cookie()
    assert cookie is not None, "no visitor cookie after a successful identify"
    match = re.fullmatch(r"vid=([0-9a-f]{32})", cookie["value"])
    assert match, f"cookie value {cookie['value']!r}"
    assert cookie["path"] == "/", cookie
    vid = match.group(1)
    assert [(c["tag"], c["args"]) for c in calls] == [
        ("success", [{"success": True, "visitor_uuid": vid, "anonymous": False}])], f"calls: {calls!r}"
    waited = calls[0]["t"] - emu.js("() => window.pushedAt")
    assert waited >= latency - 1, f"answered after {waited} ms, latency {latency} ms"
    record = emu.records()[0]
    assert record["answer"] == "success" and record["response"] == calls[0]["args"][0], record


@pytest.mark.parametrize("value", ["vid=0123456789abcdef0123456789abcdef",
                                   "vid%253D0123456789abcdef0123456789abcdef%253Bpageviews%253D3"],
                         ids=["plain", "drip-encoded"])
def test_identify_without_email_for_known_visitor_succeeds_anonymously(emu, site, value):
    emu.page.context.add_cookies([{"name": COOKIE, "value": value, "url": site.url}])
    emu.open('<script>_dcq.push(["identify", {first_name: "Ada", success: cb("s"), failure: cb("f")}]);'
             '_dcq.push(["identify", {email: "ada@example.com", success: cb("s2"), failure: cb("f2")}]);</script>')
    calls = emu.wait_calls(2)
    vid = "0123456789abcdef0123456789abcdef"
    assert [(c["tag"], c["args"]) for c in calls] == [
        ("s", [{"success": True, "visitor_uuid": vid, "anonymous": True}]),
        ("s2", [{"success": True, "visitor_uuid": vid, "anonymous": False}]),
    ], f"calls: {calls!r}"


# -------------------------------------------------------------------------------------------------
# B9. track


def test_track_value_outside_integer_cents_fails_with_invalid_value(emu):
    emu.open()
    emu.js("""() => {
      var bad = [9.99, -1, 2147483648, "999", NaN, Infinity, null, true, {}];
      bad.forEach(function (v, i) {
        _dcq.push(["track", "Paid", {value: v, success: cb("success " + i), failure: cb("failure " + i)}]);
      });
    }""")
    calls = emu.wait_calls(9)
    expected_response = {"success": False, "errors": [
        {"code": "invalid_value", "message": "value must be an integer number of cents from 0 to 2147483647"}]}
    assert [(c["tag"], c["args"]) for c in calls] == [
        (f"failure {i}", [expected_response]) for i in range(9)], f"calls: {calls!r}"


def test_track_value_accepts_integer_cents_from_0_to_2147483647(emu):
    emu.open()
    emu.js("""() => {
      [0, 1, 1999, 2147483647, undefined].forEach(function (v, i) {
        _dcq.push(["track", "Paid", {value: v, success: cb("success " + i), failure: cb("failure " + i)}]);
      });
      _dcq.push(["track", "No value", {occurred_at: "2024-05-01T12:00:00.000Z", success: cb("success 5"),
                                       failure: cb("failure 5")}]);
    }""")
    calls = emu.wait_calls(6)
    assert [(c["tag"], c["args"]) for c in calls] == [
        (f"success {i}", [{"success": True}]) for i in range(6)], f"calls: {calls!r}"


def test_track_without_action_fails_with_missing_action(emu):
    emu.open()
    emu.js("""() => {
      window.trackProps = [];
      ["", "   ", undefined, 42].forEach(function (action, i) {
        var p = {success: cb("success " + i), failure: cb("failure " + i)};
        trackProps.push(p);
        _dcq.push(["track", action, p]);
      });
    }""")
    calls = emu.wait_calls(4)
    expected = [{"success": False, "errors": [{"code": "missing_action", "message": "An action name is required"}]}]
    assert [(c["tag"], c["args"]) for c in calls] == [(f"failure {i}", expected) for i in range(4)], calls
    actions = emu.js("() => trackProps.map(function (p) { return '_action' in p; })")
    assert actions == [False] * 4, "a failed track wrote _action"


def test_track_success_carries_visitor_uuid_once_the_visitor_is_known(emu):
    emu.open("""<script>
      _dcq.push(["track", "Anonymous", {success: cb("before")}]);
      _dcq.push(["identify", {email: "ada@example.com", success: cb("identify")}]);
      _dcq.push(["track", "Known", {success: cb("after")}]);
    </script>""")
    calls = emu.wait_calls(3)
    vid = calls[1]["args"][0]["visitor_uuid"]
    assert [(c["tag"], c["args"]) for c in calls] == [
        ("before", [{"success": True}]),
        ("identify", [{"success": True, "visitor_uuid": vid, "anonymous": False}]),
        ("after", [{"success": True, "visitor_uuid": vid}]),
    ], f"calls: {calls!r}"


# -------------------------------------------------------------------------------------------------
# B10, B11. subscribe, unknown commands


def test_subscribe_to_known_campaign_succeeds_and_without_email_fails(emu):
    emu.open("""<script>
      _dcq.push(["subscribe", {campaign_id: "1234567", fields: {email: "ada@example.com", first_name: "Ada"},
                               double_optin: false, success: cb("success 1"), failure: cb("failure 1")}]);
      _dcq.push(["subscribe", {campaign_id: 1234567, fields: {email: "ada@example.com"},
                               success: cb("success 2"), failure: cb("failure 2")}]);
      _dcq.push(["subscribe", {campaign_id: "1234567", fields: {first_name: "Ada"},
                               success: cb("success 3"), failure: cb("failure 3")}]);
    </script>""")
    calls = emu.wait_calls(3)
    assert [(c["tag"], c["args"]) for c in calls] == [
        ("success 1", [{"success": True, "campaign_id": "1234567", "email": "ada@example.com",
                        "double_optin": False}]),
        ("success 2", [{"success": True, "campaign_id": "1234567", "email": "ada@example.com"}]),
        ("failure 3", [{"success": False, "errors": [
            {"code": "missing_email", "message": "fields.email must be an e-mail address"}]}]),
    ], f"calls: {calls!r}"


def test_unknown_campaign_subscribe_never_calls_back(emu):
    emu.open("""<script>
      _dcq.push(["subscribe", {campaign_id: "999", fields: {email: "ada@example.com"},
                               success: cb("subscribe success"), failure: cb("subscribe failure")}]);
      _dcq.push(["track", "After", {success: cb("track")}]);
    </script>""")
    emu.wait_calls(1)
    emu.page.wait_for_timeout(150)  # many times the latency: a callback would have come by now
    calls = emu.calls()
    assert [c["tag"] for c in calls] == ["track"], f"calls: {calls!r}"
    records = emu.records()
    assert [(r["answer"], r["response"]) for r in records] == [("none", None), ("success", {"success": True})], \
        f"records: {records!r}"
    reports = emu.reports(2)
    assert [(r["seq"], r["answer"]) for r in reports] == [(1, "none"), (2, "success")], f"collector: {reports!r}"


def test_unknown_command_is_answered_none_without_callback_and_reported(emu):
    emu.open("""<script>
      _dcq.push(["launchRockets", {success: cb("rockets success"), failure: cb("rockets failure")}]);
      _dcq.push(["track", "After", {success: cb("track")}]);
    </script>""")
    emu.wait_calls(1)
    emu.page.wait_for_timeout(100)
    assert [c["tag"] for c in emu.calls()] == ["track"], f"calls: {emu.calls()!r}"
    reports = emu.reports(2)
    assert [(r["command"], r["answer"], r["response"]) for r in reports][0] == (
        ["launchRockets", {"success": "[function]", "failure": "[function]"}], "none", None), f"collector: {reports!r}"


def test_unsubscribe_and_forms_answer_success(emu):
    emu.open("""<script>
      _dcq.push(["unsubscribe", {email: "ada@example.com", campaign_id: 5, success: cb("unsubscribe")}]);
      _dcq.push(["showForm", {id: "123", success: cb("showForm")}]);
      _dcq.push(["hideForm", {id: "123", success: cb("hideForm")}]);
      _dcq.push(["unsubscribe", {success: cb("unknown success"), failure: cb("unknown failure")}]);
    </script>""")
    calls = emu.wait_calls(4)
    assert [(c["tag"], c["args"]) for c in calls] == [
        ("unsubscribe", [{"success": True, "campaign_id": "5"}]),
        ("showForm", [{"success": True}]),
        ("hideForm", [{"success": True}]),
        ("unknown failure", [{"success": False, "errors": [
            {"code": "unknown_subscriber", "message": "No e-mail and no known visitor"}]}]),
    ], f"calls: {calls!r}"


def test_dc_methods_called_directly_run_like_queued_commands(emu):
    emu.open("""<script>
      _dcq.push(["track", "Queued", {success: cb("queued")}]);
    </script>""", options={"configDelay": 300}, wait_configured=False)
    emu.page.wait_for_function("() => window.atScriptLoad.length === 1")
    # Before the configuration: the direct call waits behind what is already queued.
    early = emu.js('() => { _dc.track("Direct early", {success: cb("direct early")}); '
                   'return {configured: dripEmulator.configured, calls: window.calls.length}; }')
    assert early == {"configured": False, "calls": 0}, f"the direct call was not made early: {early!r}"
    emu.wait_calls(2)
    emu.js('() => _dc.identify({email: "ada@example.com", success: cb("direct identify")})')
    calls = emu.wait_calls(3)
    assert [c["tag"] for c in calls] == ["queued", "direct early", "direct identify"], f"calls: {calls!r}"
    assert [r["command"][0:2] for r in emu.records()] == [
        ["track", "Queued"], ["track", "Direct early"], ["identify", {"email": "ada@example.com",
                                                                     "success": "[function]"}]]


# -------------------------------------------------------------------------------------------------
# B12. Instrumentation and the collector


def test_received_record_is_a_copy_made_before_mutation_with_functions_marked(emu):
    emu.open()
    emu.js("""() => {
      var props = {price: 9.99, nested: {list: [1, "two", {three: 3}]}, when: new Date(0),
                   missing: undefined, nan: NaN, success: cb("s"), failure: cb("f")};
      _dcq.push(["track", "Viewed", props]);
    }""")
    records = emu.wait_answered(1)
    assert records == [{
        "seq": 1,
        "account": ACCOUNT,
        "command": ["track", "Viewed", {"price": 9.99, "nested": {"list": [1, "two", {"three": 3}]},
                                        "when": "[Date 1970-01-01T00:00:00.000Z]", "missing": "[undefined]",
                                        "nan": "[NaN]", "success": "[function]", "failure": "[function]"}],
        "answer": "success",
        "response": {"success": True},
    }], f"records: {records!r}"


def test_commands_reach_the_collector_in_order(emu):
    emu.open(options={"latency": 0})
    emu.js("""() => {
      for (var i = 0; i < 25; i++) {
        if (i % 5 === 4) { _dcq.push(["subscribe", {campaign_id: "nope", fields: {email: "a@example.com"}}]); }
        else { _dcq.push(["track", "Event " + i, {i: i}]); }
      }
    }""")
    records = emu.wait_answered(25)
    reports = emu.reports(25)
    assert [r["seq"] for r in reports] == list(range(1, 26)), f"collector order: {[r['seq'] for r in reports]}"
    ns = [r["n"] for r in reports]
    assert ns == sorted(ns), f"arrival indexes {ns}"
    page_id = emu.page_id()
    for record, report in zip(records, reports):
        expected = dict(record, page=page_id, url=emu.url, n=report["n"])
        assert report == expected, f"report {report!r} != record {expected!r}"
    by_account = collector_for(emu.site.app).reports(account=ACCOUNT)
    assert [r["seq"] for r in by_account if r["page"] == page_id] == list(range(1, 26))


def test_multibyte_and_oversized_commands_are_all_reported(emu):
    # 12 commands of ~24 KB of UTF-8 each (8,000 characters of 3 bytes), then one of 70,000 characters:
    # batches are sized in bytes, and a command too big for the collector is reported with a note.
    emu.open(options={"latency": 0})
    emu.js("""() => {
      for (var i = 0; i < 12; i++) _dcq.push(["track", "E" + i, {s: "€".repeat(8000)}]);
      _dcq.push(["track", "Huge", {s: "x".repeat(70000)}]);
    }""")
    emu.wait_answered(13)
    reports = emu.reports(13)
    assert [r["seq"] for r in reports] == list(range(1, 14)), f"reported: {[r['seq'] for r in reports]}"
    assert all(r["command"][2]["s"] == "€" * 8000 for r in reports[:12]), "a multibyte command was changed"
    huge = reports[12]["command"]
    assert huge[0] == "track" and huge[1].startswith("(not reported: ") and "over the collector's limit" in huge[1], huge


def closed_port() -> int:
    """A local TCP port that nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("where", ["refused", "404"])
def test_unreachable_collector_is_swallowed(emu, site, where):
    collector = f"http://127.0.0.1:{closed_port()}/refused" if where == "refused" else "/emulator/no-such-collector"
    emu.open('<script>_dcq.push(["track", "One", {success: cb("one")}]);'
             '_dcq.push(["track", "Two", {success: cb("two")}]);</script>',
             options={"collector": collector})
    calls = emu.wait_calls(2)
    emu.page.wait_for_timeout(100)  # the failed POSTs settle
    assert [c["tag"] for c in calls] == ["one", "two"], f"calls: {calls!r}"
    assert emu.page_errors == [], f"errors thrown into the page: {emu.page_errors!r}"
    expected = collector if where == "refused" else site.url + collector
    assert emu.collector_posts == [expected] * 2, emu.collector_posts


def test_callback_exception_does_not_stop_the_queue(emu):
    emu.open("""<script>
      _dcq.push(["track", "Throws", {success: function () { throw new Error("boom"); }}]);
      _dcq.push(["identify", {failure: function () { throw new Error("boom"); }}]);
      _dcq.push(["track", "After", {success: cb("after")}]);
    </script>""")
    calls = emu.wait_calls(1)
    assert [c["tag"] for c in calls] == ["after"], f"calls: {calls!r}"
    assert emu.page_errors == [], f"errors thrown into the page: {emu.page_errors!r}"
    errors = [text for kind, text in emu.console if kind == "error" and "[drip emulator]" in text]
    assert errors == ["[drip emulator] a success callback threw: boom",
                      "[drip emulator] a failure callback threw: boom"], f"console: {emu.console!r}"


# -------------------------------------------------------------------------------------------------
# B13. Never throws into the page


def test_hostile_commands_never_throw_into_the_page(emu):
    emu.open()
    emu.js("""() => {
      var cyclic = {name: "loop"}; cyclic.self = cyclic;
      var trap = {};
      Object.defineProperty(trap, "email", {enumerable: true, get: function () { throw new Error("getter"); }});
      var proxy = new Proxy({}, {get: function () { throw new Error("proxy"); },
                                 ownKeys: function () { throw new Error("proxy"); }});
      _dcq.push(null, undefined, "track", 42, [], [null], [{}], ["track"], ["identify", 5], ["identify"],
                ["track", "Cyclic", cyclic], ["identify", trap], ["track", "Proxy", proxy], proxy,
                Object.freeze(["track", "Frozen", {}]), ["subscribe", null], ["subscribe", {campaign_id: "1234567"}],
                ["track", "Frozen props", Object.freeze({a: 1})], ["track", "Odd", "properties"],
                ["track", {toString: null}, {}], ["__proto__", {}], ["track", "Sym", {s: Symbol("x")}]);
      _dcq.push(["track", "Still works", {success: cb("still works")}]);
    }""")
    calls = emu.wait_calls(1)
    assert [c["tag"] for c in calls] == ["still works"], f"calls: {calls!r}"
    assert emu.page_errors == [], f"errors thrown into the page: {emu.page_errors!r}"
    records = emu.records()
    assert len(records) == 23 and all(r["answer"] != "pending" for r in records), f"records: {records!r}"
    cyclic = records[10]["command"]
    assert cyclic == ["track", "Cyclic", {"name": "loop", "self": "[cycle]"}], cyclic
    assert records[11]["command"] == ["identify", {"email": "[unreadable]"}], records[11]
    assert records[21]["command"] == ["track", "Sym", {"s": "[symbol]"}], records[21]


# -------------------------------------------------------------------------------------------------
# The served route (app config) in the browser


def test_served_emulator_uses_the_app_config(emu, site, monkeypatch):
    monkeypatch.setitem(site.app.config, "DRIP_EMULATOR_CONFIG_DELAY_MS", 12)
    monkeypatch.setitem(site.app.config, "DRIP_EMULATOR_LATENCY_MS", 3)
    monkeypatch.setitem(site.app.config, "DRIP_EMULATOR_CAMPAIGNS", ["7654321"])
    served_here = drips_snippet(ACCOUNT).replace("//tag.getdrip.com/", "/emulator/")  # the site's own route
    emu.open('<script>_dcq.push(["subscribe", {campaign_id: "7654321", fields: {email: "ada@example.com"}, '
             'success: cb("s")}]);</script>', snippet=served_here)
    assert emu.script_requests == [], "the route to tag.getdrip.com was used"
    config = emu.js("() => window.dripEmulator.config")
    assert config == {"configDelay": 12, "latency": 3, "campaigns": ["7654321"],
                      "collector": "/emulator/events"}, f"config: {config!r}"
    calls = emu.wait_calls(1)
    assert calls[0]["args"] == [{"success": True, "campaign_id": "7654321", "email": "ada@example.com"}], calls
    reports = emu.reports(1)
    assert [(r["account"], r["answer"]) for r in reports] == [(ACCOUNT, "success")], f"collector: {reports!r}"


# -------------------------------------------------------------------------------------------------
# The script route and emulator_script (no browser)


@pytest.fixture
def client():
    from flask import Flask

    app = Flask("emulator-script-tests")
    app.register_blueprint(bp)
    return app.test_client()


@pytest.mark.parametrize("account", ["abc", "12a", "1" * 21, "\u0661\u0662\u0663", "12.3", "-1", "%20"])
def test_script_route_rejects_accounts_that_are_not_1_to_20_ascii_digits(client, account):
    response = client.get(f"/emulator/{account}.js")
    assert response.status_code == 404, f"/emulator/{account}.js answered {response.status_code}"


def test_script_route_serves_config_prelude_then_track_js(client):
    client.application.config.update(DRIP_EMULATOR_CAMPAIGNS=["1", "22"], DRIP_EMULATOR_LATENCY_MS=9)
    for account in ["1", "83702741", "1" * 20]:
        response = client.get(f"/emulator/{account}.js")
        assert response.status_code == 200, account
        assert response.mimetype == "application/javascript", response.mimetype
        text = response.get_data(as_text=True)
        first, rest = text.split("\n", 1)
        assert first == ('window.dripEmulatorDefaults = {"campaigns":["1","22"],"collector":"/emulator/events",'
                         '"configDelay":50,"latency":9};'), first
        assert rest.startswith("/*\n * driptag Drip emulator"), rest[:80]
        assert text == emulator_script(campaigns=["1", "22"], latency_ms=9)


def test_prelude_places_values_only_through_script_json():
    hostile = "</script><script>alert('x')</script>\u2028&"
    text = emulator_script(campaigns=[hostile], collector="/c?a=1&b=<2>")
    first = text.split("\n", 1)[0]
    expected = {"campaigns": [hostile], "collector": "/c?a=1&b=<2>", "configDelay": 50, "latency": 5}
    assert first == f"window.dripEmulatorDefaults = {script_json(expected)};"
    assert "<" not in first and "'" not in first and "\u2028" not in first, first


@pytest.mark.parametrize("kwargs", [{"config_delay_ms": -1}, {"latency_ms": float("nan")}, {"latency_ms": True},
                                    {"config_delay_ms": "50"}, {"campaigns": [None]}, {"collector": 5}])
def test_emulator_script_rejects_bad_settings(kwargs):
    with pytest.raises(ValueError):
        emulator_script(**kwargs)


def test_emulator_script_accepts_a_single_campaign_and_no_collector():
    first = emulator_script(campaigns="1234567", collector=None).split("\n", 1)[0]
    assert first == ('window.dripEmulatorDefaults = {"campaigns":["1234567"],"collector":null,'
                     '"configDelay":50,"latency":5};'), first
