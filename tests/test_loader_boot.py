"""The generated loader's life on a page, against the Drip emulator: boot, the public objects, callbacks,
consent and the Analytics.js 2.0 plugin."""

import time

import pytest

from driptag import Settings, render
from pages import drips_snippet

ACCOUNT = "83702741"
TRACK_JS = f"https://tag.getdrip.com/{ACCOUNT}.js"
# Drip's snippet as on an https page, where its '//' URL is the one the html form's preload link asks for.
DRIPS_OWN_SNIPPET = drips_snippet(ACCOUNT).replace(f"'//tag.getdrip.com/{ACCOUNT}.js'", repr(TRACK_JS))


def wait_status(drip, status):
    try:
        drip.page.wait_for_function("s => window.driptag && driptag.status === s", arg=status, timeout=5000)
    except Exception:
        raise AssertionError(f"status stayed {drip.run('() => window.driptag && driptag.status')!r}, "
                             f"expected {status!r}") from None


# Boot


def test_loader_requests_track_js_once_for_the_account(drip):
    drip.open()
    wait_status(drip, "ready")
    assert drip.track_js_requests == [TRACK_JS], drip.track_js_requests
    assert drip.run("() => [...document.querySelectorAll('script[src*=\"tag.getdrip.com\"]')].map(s => s.async)") == [True]
    assert drip.run("() => window._dcs.account") == ACCOUNT


# Records, when a script element for Drip's host is inserted, whether window.driptag exists yet.
RECORD_INSERTION = """<script>
window.__insertions = [];
var append = Node.prototype.appendChild;
Node.prototype.appendChild = function (node) {
  if (node.src && node.src.indexOf("tag.getdrip.com") !== -1) window.__insertions.push(typeof window.driptag);
  return append.apply(this, arguments);
};
</script>"""


@pytest.mark.parametrize("fmt", ["js", "html"])
def test_track_js_is_requested_before_the_api_is_built(drip, fmt):
    drip.open(fmt=fmt, head=RECORD_INSERTION)
    wait_status(drip, "ready")
    assert drip.run("() => window.__insertions") == ["undefined"], \
        "track.js was not inserted once, before window.driptag was built"


def test_identify_and_track_reach_drip_after_it_replaced_the_queue(drip):
    drip.open()
    wait_status(drip, "ready")
    drip.page.wait_for_function("() => !Array.isArray(window._dcq)")
    drip.run("() => { analytics.identify('a@b.co'); analytics.track('Bought', {revenue: '9.99'}); }")
    assert drip.received(2) == [
        ["identify", {"email": "a@b.co", "id": "a@b.co", "user_id": "a@b.co"}],
        ["track", "Bought", {"value": 999}],
    ]


def test_calls_before_track_js_loads_are_delivered_in_order(drip):
    drip.open(after="<script>analytics.track('first'); driptag.track('second'); analytics.identify({email: 'a@b.co'});</script>",
              fmt="html")
    assert drip.received(3) == [["track", "first", {}], ["track", "second", {}], ["identify", {"email": "a@b.co"}]]


def test_existing_queue_and_settings_are_kept(drip):
    drip.open(head="<script>window._dcq = [['track', 'queued early', {}]]; window._dcs = {keep: 1};</script>")
    assert drip.received(1) == [["track", "queued early", {}]]
    assert drip.run("() => window._dcs") == {"keep": 1, "account": ACCOUNT}


def test_snippet_included_twice_loads_once_and_sends_once(drip):
    tag = render(Settings(account=ACCOUNT), "html")
    drip.open(fmt="html", after=tag + "<script>analytics.track('once');</script>")
    assert drip.received(1) == [["track", "once", {}]]
    drip.page.wait_for_timeout(200)
    assert drip.received() == [["track", "once", {}]]
    assert drip.track_js_requests == [TRACK_JS]


@pytest.mark.parametrize("preload", [False, True])
def test_loader_for_another_account_warns_and_does_nothing(drip, preload):
    other = render(Settings(account="1111111", preload=preload), "html")
    drip.open(fmt="html", after=other)
    wait_status(drip, "ready")
    # With its preload link, the browser fetches the other account's track.js before any script runs
    # (README); the loader never adds it to the page, so it never runs.
    other_requests = ["https://tag.getdrip.com/1111111.js"] if preload else []
    assert sorted(drip.track_js_requests) == sorted([TRACK_JS, *other_requests]), drip.track_js_requests
    assert drip.run("() => Array.from(document.scripts, s => s.src).filter(Boolean)") == [TRACK_JS]
    assert drip.run("() => [driptag.account, _dcs.account]") == [ACCOUNT, ACCOUNT]
    assert drip.warnings() == [f"[driptag] account {ACCOUNT} is already on this page; 1111111 ignored"]


def test_drips_own_snippet_on_the_page_is_adopted(drip):
    drip.open(head=DRIPS_OWN_SNIPPET, after="<script>analytics.track('x');</script>", fmt="html")
    wait_status(drip, "ready")
    assert drip.received(1) == [["track", "x", {}]]
    assert drip.track_js_requests == [TRACK_JS], "the loader injected a second copy of track.js"


def test_nonce_of_the_running_script_is_given_to_track_js(drip):
    drip.open(fmt="html", nonce="cmFuZG9tLW5vbmNl")
    assert drip.run("() => document.querySelector('script[src*=\"tag.getdrip.com\"]').nonce") == "cmFuZG9tLW5vbmNl"


@pytest.mark.parametrize("fault", ["abort", "404"])
def test_status_is_failed_when_track_js_cannot_load(drip, fault):
    drip.page.unroute("**/tag.getdrip.com/**")
    drip.page.route("**/tag.getdrip.com/**",
                    lambda route: route.abort("blockedbyclient") if fault == "abort" else route.fulfill(status=404))
    drip.open()
    wait_status(drip, "failed")
    assert drip.page_errors == []


def test_status_is_failed_when_track_js_throws_while_running(drip):
    drip.page.unroute("**/tag.getdrip.com/**")
    drip.page.route("**/tag.getdrip.com/**", lambda route: route.fulfill(
        body="throw new Error('broken track.js')", content_type="application/javascript"))
    drip.open()
    wait_status(drip, "failed")


def test_status_is_read_only(drip):
    drip.open()
    wait_status(drip, "ready")
    assert drip.run("() => { driptag.status = 'failed'; return driptag.status; }") == "ready", \
        "an assignment changed driptag.status"


def test_ready_runs_each_function_once_when_drip_is_ready(drip):
    drip.open(after="<script>window.calls = []; driptag.ready(function () { calls.push(driptag.status); });</script>",
              fmt="html")
    wait_status(drip, "ready")
    drip.run("() => driptag.ready(function () { calls.push('late'); })")
    drip.page.wait_for_function("() => calls.length === 2")
    drip.page.wait_for_timeout(100)
    assert drip.run("() => calls") == ["ready", "late"]


def test_public_entry_points_never_throw_into_the_page(drip):
    drip.open(spy=True, hold=True)
    result = drip.run("""() => {
        var evil = {}; Object.defineProperty(evil, 'email', {enumerable: true, get: function () { throw new Error('x'); }});
        var returned = [driptag.identify(evil), analytics.track('e', evil), driptag.ready(42), driptag.consent('yes')];
        return returned.map(function (r) { return r === driptag ? 'driptag' : r === analytics ? 'analytics' : typeof r; });
    }""")
    assert result == ["driptag", "analytics", "driptag", "driptag"]
    assert drip.pushed() == []
    assert drip.warnings() == ["[driptag] identify: dropped, an error occurred",
                               "[driptag] track: dropped, an error occurred",
                               "[driptag] ready: pass a function", "[driptag] consent: pass true or false"]


# Public objects


def test_facade_has_the_analytics_js_method_set_and_chains(drip):
    drip.open()
    assert drip.run("""() => ['identify', 'track', 'page', 'screen', 'group', 'alias', 'ready', 'reset', 'debug',
        'on', 'once', 'off', 'load'].every(m => analytics[m]() === analytics)""")
    assert drip.run("() => Object.keys(driptag).sort()") == sorted(
        ["version", "account", "status", "identify", "track", "page", "ready", "consent", "debug", "plugin"])


def test_callback_of_a_method_that_does_nothing_runs_at_once(drip):
    drip.open()
    assert drip.run("""() => new Promise(done => {
        var count = 0; analytics.page('Home', {}, function () { count++; });
        analytics.group('g', function () { count++; });
        setTimeout(() => done(count), 50); })""") == 2


def test_classic_stub_calls_are_replayed_in_order_and_the_stub_keeps_working(drip):
    stub = """<script>
      var analytics = window.analytics = [];
      analytics.methods = ['identify', 'track', 'page'];
      analytics.factory = function (m) { return function () { var a = [].slice.call(arguments); a.unshift(m);
        analytics.push(a); return analytics; }; };
      analytics.methods.forEach(function (m) { analytics[m] = analytics.factory(m); });
      analytics.page(); analytics.track('early', {a: 1}); analytics.identify('a@b.co');
      window.keptStub = analytics;
    </script>"""
    drip.open(head=stub)
    drip.run("() => { keptStub.track('through the old stub'); keptStub.push(['track', 'pushed']); }")
    assert drip.received(4) == [["track", "early", {"a": 1}],
                                ["identify", {"email": "a@b.co", "id": "a@b.co", "user_id": "a@b.co"}],
                                ["track", "through the old stub", {}], ["track", "pushed", {}]]
    assert drip.run("() => !Array.isArray(window.analytics) && typeof analytics.track") == "function"


def test_segment_stub_with_write_key_gets_the_plugin_registered(drip):
    drip.open(head="<script>window.analytics = []; analytics._writeKey = 'wk';</script>")
    assert drip.run("() => [Array.isArray(analytics), analytics.length, analytics[0][0], analytics[0][1] === driptag.plugin]") \
        == [True, 1, "register", True]


def test_segment_stub_after_load_without_write_key_gets_the_plugin_registered(drip):
    # Segment's snippet 4.1.0: analytics.load(KEY) sets _loadOptions (not _writeKey) and fetches Analytics.js.
    drip.open(head="<script>window.analytics = []; analytics._loadOptions = undefined;</script>")
    assert drip.run("() => [Array.isArray(analytics), analytics.length, analytics[0][0], analytics[0][1] === driptag.plugin]") \
        == [True, 1, "register", True]


def test_analytics_next_instance_gets_the_plugin_registered(drip):
    drip.open(head="<script>window.registered = []; window.analytics = {register: function (p) { registered.push(p); return Promise.resolve(); }};</script>")
    assert drip.run("() => registered.length === 1 && registered[0] === driptag.plugin && analytics.track === undefined")


def test_another_librarys_object_is_left_alone_with_a_warning(drip):
    drip.open(head="<script>window.analytics = {VERSION: '3.0.0', initialize: function () {}};</script>")
    assert drip.run("() => analytics.VERSION") == "3.0.0"
    assert drip.warnings() == ["[driptag] window.analytics belongs to another library; use window.driptag"]
    drip.run("() => driptag.track('still works')")
    assert drip.received(1) == [["track", "still works", {}]]


def test_global_name_setting_moves_the_facade(drip):
    drip.open(Settings(account=ACCOUNT, global_name="dripAnalytics"))
    assert drip.run("() => [typeof window.analytics, typeof dripAnalytics.track]") == ["undefined", "function"]


# Callbacks


def test_callback_runs_once_when_drip_answers(drip):
    drip.open(Settings(account=ACCOUNT, callback_timeout_ms=5000))
    drip.run("() => { window.answers = 0; analytics.track('x', {}, {}, function () { answers++; }); }")
    drip.page.wait_for_function("() => answers === 1", timeout=3000)  # well before the 5 s timeout
    drip.received(1)
    drip.page.wait_for_timeout(100)
    assert drip.run("() => answers") == 1


def test_callback_runs_once_after_the_timeout_when_drip_never_answers(drip):
    drip.page.unroute("**/tag.getdrip.com/**")
    drip.page.route("**/tag.getdrip.com/**", lambda route: route.abort())
    drip.open(Settings(account=ACCOUNT, callback_timeout_ms=100))
    drip.run("() => { window.answers = 0; analytics.identify({email: 'a@b.co'}, function () { answers++; }); "
             "analytics.identify({name: 'no email'}, function () { answers++; }); "
             "analytics.track('x', {}, {integrations: {Drip: false}}, function () { answers++; }); }")
    drip.page.wait_for_function("() => answers === 3")
    drip.page.wait_for_timeout(150)
    assert drip.run("() => answers") == 3


def test_callback_runs_once_when_drip_answers_with_failure(drip):
    drip.open(Settings(account=ACCOUNT, callback_timeout_ms=5000))
    drip.run("() => { window.answers = 0; analytics.track('x', {value: 1.5}, function () { answers++; }); }")
    drip.page.wait_for_function("() => answers === 1", timeout=3000)
    assert drip.run("() => dripEmulator.received[0].answer") == "failure"


def test_a_throwing_callback_does_not_escape(drip):
    drip.open(Settings(account=ACCOUNT, callback_timeout_ms=0))
    drip.run("() => analytics.track('x', function () { throw new Error('caller bug'); })")
    drip.page.wait_for_timeout(100)
    assert drip.page_errors == []
    assert "[driptag] a callback threw" in drip.warnings()


# Consent


def test_consent_required_loads_nothing_and_holds_calls_until_granted(drip):
    drip.open(Settings(account=ACCOUNT, consent="required"),
              after="<script>analytics.track('one'); analytics.track('two');</script>", fmt="html")
    drip.page.wait_for_timeout(100)
    assert drip.track_js_requests == [] and drip.run("() => driptag.status") == "waiting-consent"
    drip.run("() => { driptag.consent(true); analytics.track('three'); }")
    assert drip.received(3) == [["track", "one", {}], ["track", "two", {}], ["track", "three", {}]]
    assert drip.track_js_requests == [TRACK_JS]


def test_consent_refused_drops_held_calls_and_a_later_grant_still_works(drip):
    drip.open(Settings(account=ACCOUNT, consent="required"))
    drip.run("() => { analytics.track('dropped'); driptag.consent(false); analytics.track('also dropped'); }")
    assert drip.run("() => driptag.status") == "denied"
    drip.run("() => { driptag.consent(true); analytics.track('kept'); }")
    wait_status(drip, "ready")
    assert drip.received(1) == [["track", "kept", {}]]
    drip.page.wait_for_timeout(100)
    assert drip.received() == [["track", "kept", {}]]


def test_at_most_1000_calls_wait_for_consent(drip):
    drip.open(Settings(account=ACCOUNT, consent="required"))
    drip.run("() => { for (var i = 0; i < 1005; i++) analytics.track('e' + i); driptag.consent(true); }")
    received = drip.received(1000, timeout=15000)
    assert [command[1] for command in received] == [f"e{i}" for i in range(5, 1005)]
    assert drip.warnings() == ["[driptag] over 1000 calls wait for consent; oldest dropped"]


def test_consent_false_in_auto_mode_stops_bridging_and_true_restores_status(drip):
    drip.open()
    wait_status(drip, "ready")
    drip.run("() => { driptag.consent(false); analytics.track('not sent'); }")
    assert drip.run("() => driptag.status") == "denied"
    drip.run("() => { driptag.consent(true); analytics.track('sent'); }")
    assert drip.run("() => driptag.status") == "ready"
    assert drip.received(1) == [["track", "sent", {}]]


# Analytics.js 2.0 plugin


def test_plugin_maps_events_like_the_facade_and_ignores_the_ajs_timestamp(drip):
    drip.open(Settings(account=ACCOUNT, campaign_id="1234567"), spy=True, hold=True)
    result = drip.run("""() => {
        var p = driptag.plugin;
        var ctx = {event: {type: 'track', event: 'Order Completed', properties: {total: '$5.50'},
                           integrations: {}, timestamp: new Date(0)}};
        var same = p.track(ctx) === ctx;
        p.identify({event: {type: 'identify', userId: 'u1', traits: {email: 'a@b.co'},
                            integrations: {Drip: {campaignId: '9'}}, timestamp: new Date(0)}});
        analytics.track('Order Completed', {total: '$5.50'});
        analytics.identify('u1', {email: 'a@b.co'}, {integrations: {Drip: {campaignId: '9'}}});
        return [same, p.name, p.type, p.version === driptag.version, p.isLoaded()];
    }""")
    assert result == [True, "Drip", "destination", True, True]
    pushed = drip.pushed()
    assert pushed[:3] == pushed[3:], f"plugin pushed {pushed[:3]}, facade pushed {pushed[3:]}"
    assert pushed[0] == ["track", "Order Completed", {"total": "$5.50", "value": 550}]


def test_debug_logs_every_bridged_call(drip):
    drip.open(Settings(account=ACCOUNT, debug=True))
    drip.run("() => analytics.track('seen')")
    assert drip.console == [("debug", "[driptag] [track, seen, Object]")], drip.console


def test_debug_can_be_switched_on_and_off_at_run_time(drip):
    drip.open()
    drip.run("() => { analytics.track('quiet'); driptag.debug(true); analytics.track('logged'); "
             "analytics.debug(false); analytics.track('quiet again'); }")
    assert drip.console == [("debug", "[driptag] [track, logged, Object]")], drip.console


def test_the_html_forms_preload_link_and_the_loaders_script_make_one_request(drip):
    # The html form starts with <link rel="preload">: the browser fetches track.js while it reads the page;
    # the loader's own <script> then uses that response instead of a second request.
    assert render(Settings(account=ACCOUNT), "html").startswith(
        f'<link rel="preload" as="script" href="{TRACK_JS}"><script>')
    drip.open(fmt="html", after="<script>analytics.track('preloaded');</script>")
    wait_status(drip, "ready")
    assert drip.received(1) == [["track", "preloaded", {}]]
    assert drip.track_js_requests == [TRACK_JS], drip.track_js_requests
    assert drip.run("() => Array.from(document.scripts, s => s.src).filter(Boolean)") == [TRACK_JS]
    assert initiators(drip) == ["link"], "track.js was not fetched by the preload link"


def test_the_loaders_script_joins_a_preload_still_in_flight(drip):
    # A slow track.js: the loader inserts its <script> while the link's request is still unanswered.
    def slow(route):
        time.sleep(0.5)
        drip._serve_track_js(route)
    drip.page.unroute("**/tag.getdrip.com/**")
    drip.page.route("**/tag.getdrip.com/**", slow)
    drip.open(fmt="html", wait="domcontentloaded", after=f"""<script>window.inFlight = [
        performance.getEntriesByName("{TRACK_JS}").length, document.querySelectorAll('script[src="{TRACK_JS}"]').length];
        analytics.track('slow');</script>""")
    assert drip.run("() => inFlight") == [0, 1], "track.js had answered before the loader inserted its <script>"
    wait_status(drip, "ready")
    assert drip.received(1) == [["track", "slow", {}]]
    assert drip.track_js_requests == [TRACK_JS], drip.track_js_requests
    assert initiators(drip) == ["link"]


def test_html_without_preload_has_the_loaders_script_fetch_track_js(drip):
    drip.open(Settings(account=ACCOUNT, preload=False), fmt="html")
    wait_status(drip, "ready")
    assert drip.track_js_requests == [TRACK_JS], drip.track_js_requests
    assert initiators(drip) == ["script"]


def initiators(drip) -> list[str]:
    """Who fetched track.js, from its Resource Timing entries: "link" (a preload) or "script"."""
    return drip.run("url => performance.getEntriesByName(url).map(e => e.initiatorType)", TRACK_JS)


def test_a_preload_link_before_the_external_form_makes_one_request(drip):
    # The README's tip for the js form.
    drip.open(head=f'<link rel="preload" as="script" href="{TRACK_JS}">')
    wait_status(drip, "ready")
    drip.run("() => analytics.track('preloaded')")
    assert drip.received(1) == [["track", "preloaded", {}]]
    assert drip.track_js_requests == [TRACK_JS], drip.track_js_requests
