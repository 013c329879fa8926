"""Reliability: the generated loader on a hostile web, against the Drip emulator.

1. track.js blocked, 404, 500, hanging, or throwing while it runs;
2. the snippet included twice (js, html, both) and re-run by an SPA;
3. Drip's own snippet before or after ours;
4. Content-Security-Policy: nonce + 'strict-dynamic', the manifest's csp_hash, and policies that block track.js;
5. consent: no request at all before consent, held calls flushed in order, denial, re-grant.

Already covered elsewhere and not repeated here: the html snippet included twice
(test_loader_boot.test_snippet_included_twice_loads_once_and_sends_once), the nonce handed to track.js
(test_nonce_of_the_running_script_is_given_to_track_js), the 1,000-call consent cap
(test_at_most_1000_calls_wait_for_consent), consent(false) then consent(true) without reload
(test_consent_refused_drops_held_calls_and_a_later_grant_still_works) and consent() in auto mode.
"""

from __future__ import annotations

import re

import pytest

from driptag import Settings, build_manifest, render
from conftest import TEST_CAMPAIGN
from pages import drips_snippet, page_html

ACCOUNT = "83702741"
TRACK_JS = f"https://tag.getdrip.com/{ACCOUNT}.js"
NONCE = "cmVsaWFiaWxpdHktbm9uY2U"
SETTINGS = Settings(account=ACCOUNT, callback_timeout_ms=200)

# Faults injected, by name: how the route for track.js answers (counted in the figures of docs/reliability.md).
FAULTS = {
    "blocked": lambda route: route.abort("blockedbyclient"),
    "404": lambda route: route.fulfill(status=404, body="Not Found", content_type="text/plain"),
    "500": lambda route: route.fulfill(status=500, body="window.ran500 = true;",
                                       content_type="application/javascript"),
    "throws": lambda route: route.fulfill(body="window._dc = {}; throw new Error('broken track.js');",
                                          content_type="application/javascript"),
}
DRIP_WARNING = re.compile(r"^\[driptag\] .*track\.js")

# The page's own scripts around the loader: they must all run whatever happens to track.js.
PAGE_BEFORE = "<script>window.pageRan = ['before'];</script>"
PAGE_AFTER = """<script>
  pageRan.push('after');
  window.callbacks = []; window.readyRan = 0;
  function cb(name) { return function () { callbacks.push(name); }; }
  driptag.ready(function () { readyRan++; });
  analytics.identify('u1', {email: 'a@b.co'}, cb('identify'));
  analytics.track('Bought', {revenue: '9.99'}, cb('track'));
  analytics.track('Hidden', {}, {integrations: {Drip: false}}, cb('track off'));
  analytics.identify('no-email', cb('identify without email'));
  analytics.page('Home', cb('page'));
  document.addEventListener('DOMContentLoaded', function () { pageRan.push('DOMContentLoaded'); });
  window.addEventListener('load', function () { setTimeout(function () { pageRan.push('timer'); }, 0); });
</script>"""
PAGE_BODY = "<script>pageRan.push('body');</script>"
CALLBACKS = ["identify", "identify without email", "page", "track", "track off"]
PAGE_RAN = ["before", "after", "body", "DOMContentLoaded", "timer"]


def route_track_js(drip, handler) -> None:
    """Answer requests for track.js with `handler` (recording each request)."""
    def recorded(route):
        drip.track_js_requests.append(route.request.url)
        handler(route)
    drip.page.unroute("**/tag.getdrip.com/**")
    drip.page.route("**/tag.getdrip.com/**", recorded)


def status_of(drip) -> str | None:
    return drip.run("() => window.driptag && driptag.status")


def wait_status(drip, status: str) -> None:
    try:
        drip.page.wait_for_function("s => window.driptag && driptag.status === s", arg=status, timeout=5000)
    except Exception:
        raise AssertionError(f"driptag.status stayed {status_of(drip)!r}, expected {status!r}") from None


def wait_for(drip, condition: str, what: str, arg=None, timeout: float = 5000) -> None:
    try:
        drip.page.wait_for_function(condition, arg=arg, timeout=timeout)
    except Exception:
        raise AssertionError(f"{what}: never happened") from None


def goto(drip, html: str, wait: str = "load") -> str:
    url = drip.site.add_page(html)
    drip.page.goto(url, wait_until=wait)
    return url


def driptag_warnings(drip) -> list[str]:
    return [text for text in drip.warnings() if text.startswith("[driptag]")]


def emulator_commands(drip) -> list:
    return drip.run("() => window.dripEmulator ? dripEmulator.received.map(r => r.command) : []")


def wait_received(drip, count: int, timeout: float = 5000) -> list:
    wait_for(drip, "n => window.dripEmulator && dripEmulator.received.length >= n",
             f"the emulator receiving {count} commands (it has {len(emulator_commands(drip))})", count, timeout)
    return emulator_commands(drip)


# ---------------------------------------------------------------------------------------------------
# 1. track.js blocked, 404, 500, throwing, hanging


def fault_page(drip, fault: str) -> None:
    route_track_js(drip, FAULTS[fault])
    goto(drip, page_html(PAGE_BEFORE + render(SETTINGS, "html") + PAGE_AFTER, PAGE_BODY))


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_track_js_fault_leaves_the_page_running_status_failed_callbacks_run_and_one_warning(drip, fault):
    fault_page(drip, fault)
    wait_status(drip, "failed")
    wait_for(drip, "n => window.callbacks.length >= n", "every callback running after the timeout",
             len(CALLBACKS))
    wait_for(drip, "() => pageRan.indexOf('timer') !== -1", "the page's timer after load")
    drip.page.wait_for_timeout(250)  # longer than the callback timeout: nothing may run twice
    assert drip.run("() => pageRan") == PAGE_RAN, "the page's own scripts did not all run"
    assert sorted(drip.run("() => callbacks")) == CALLBACKS, "each callback must run exactly once"
    assert drip.run("() => readyRan") == 0, "driptag.ready() ran although track.js failed"
    expected_errors = ["broken track.js"] if fault == "throws" else []
    assert drip.page_errors == expected_errors, f"uncaught errors on the page: {drip.page_errors}"
    warnings = driptag_warnings(drip)
    assert len(warnings) == 1 and DRIP_WARNING.match(warnings[0]), (
        f"expected one '[driptag] …track.js…' warning about the failure, got {warnings}")
    assert drip.track_js_requests == [TRACK_JS], drip.track_js_requests
    assert drip.run("() => window.ran500") is None, "the body of a 500 answer ran"


def test_track_js_hanging_keeps_status_loading_and_callbacks_still_run(drip):
    hung = []
    route_track_js(drip, hung.append)  # never fulfilled while the test runs: a 30-second hang and more
    goto(drip, page_html(PAGE_BEFORE + render(SETTINGS, "html") + PAGE_AFTER, PAGE_BODY), wait="domcontentloaded")
    wait_for(drip, "n => window.callbacks.length >= n", "every callback running after the timeout",
             len(CALLBACKS))
    wait_for(drip, "() => pageRan.indexOf('DOMContentLoaded') !== -1", "the page's DOMContentLoaded handler")
    drip.page.wait_for_timeout(250)
    assert len(hung) == 1, f"track.js was requested {len(hung)} times"
    assert status_of(drip) == "loading"
    assert drip.run("() => pageRan.slice(0, 4)") == PAGE_RAN[:4], "the page's own scripts did not all run"
    assert sorted(drip.run("() => callbacks")) == CALLBACKS, "each callback must run exactly once"
    assert drip.run("() => readyRan") == 0
    assert drip.page_errors == [], f"uncaught errors on the page: {drip.page_errors}"
    warnings = driptag_warnings(drip)
    assert len(warnings) == 1 and DRIP_WARNING.match(warnings[0]), (
        f"expected one '[driptag] …track.js…' warning while track.js hangs, got {warnings}")


def test_track_js_blocked_for_the_js_form_gives_failed_and_no_exception(drip):
    route_track_js(drip, FAULTS["blocked"])
    drip.open(SETTINGS)
    wait_status(drip, "failed")
    result = drip.run("""() => new Promise(done => {
        var answers = 0;
        analytics.track('x', function () { answers++; });
        driptag.identify({email: 'a@b.co'}, function () { answers++; });
        setTimeout(() => done(answers), 400);
    })""")
    assert result == 2, f"{result} of 2 callbacks ran"
    assert drip.page_errors == []
    assert len(driptag_warnings(drip)) == 1, driptag_warnings(drip)


def test_adopted_track_js_of_drips_snippet_that_already_failed_gives_failed(drip):
    """Drip's snippet ran first and its track.js was blocked before our (async) loader ran."""
    route_track_js(drip, FAULTS["blocked"])
    src = drip.site.add(render(SETTINGS, "js"), "js")
    html = page_html(DRIPS_OWN_SNIPPET + "<script>window.addEventListener('load', function () {"
                     f"  setTimeout(function () {{ var s = document.createElement('script'); s.src = {src!r};"
                     "    document.head.appendChild(s); }, 50); });</script>")
    goto(drip, html)
    wait_for(drip, "() => window.driptag", "the loader running")
    drip.page.wait_for_timeout(200)
    assert status_of(drip) == "failed", (
        f"status {status_of(drip)!r}: the loader adopted a track.js that had already failed and waits forever")
    assert drip.track_js_requests == ["http://tag.getdrip.com/83702741.js"], drip.track_js_requests


# ---------------------------------------------------------------------------------------------------
# 2. Included twice, js and html together, re-run by an SPA


def test_js_form_included_twice_loads_track_js_once_and_sends_each_call_once(drip):
    src = drip.site.add(render(SETTINGS, "js"), "js")
    goto(drip, page_html(f'<script async src="{src}"></script><script async src="{src}"></script>'))
    wait_for(drip, "() => window.driptag", "the loader running")
    wait_status(drip, "ready")
    drip.run("() => { analytics.track('once'); driptag.identify({email: 'a@b.co'}); }")
    commands = wait_received(drip, 2)
    drip.page.wait_for_timeout(150)
    assert emulator_commands(drip) == [["track", "once", {}], ["identify", {"email": "a@b.co"}]] == commands
    assert drip.track_js_requests == [TRACK_JS]
    assert drip.run("() => document.querySelectorAll('script[src*=\"tag.getdrip.com\"]').length") == 1
    assert driptag_warnings(drip) == []


@pytest.mark.parametrize("order", ["js then html", "html then js"])
def test_js_and_html_forms_together_load_track_js_once_and_send_each_call_once(drip, order):
    src = drip.site.add(render(SETTINGS, "js"), "js")
    js_tag, html_tag = f'<script src="{src}"></script>', render(SETTINGS, "html")
    call = "<script>analytics.track('between');</script>"
    first, second = (js_tag, html_tag) if order == "js then html" else (html_tag, js_tag)
    goto(drip, page_html(first + call + second + "<script>analytics.track('after both');</script>"))
    commands = wait_received(drip, 2)
    drip.page.wait_for_timeout(150)
    assert emulator_commands(drip) == [["track", "between", {}], ["track", "after both", {}]] == commands
    assert drip.track_js_requests == [TRACK_JS]
    assert drip.run("() => driptag.status") == "ready"
    assert driptag_warnings(drip) == []


def test_spa_running_the_loader_again_changes_nothing(drip):
    src = drip.site.add(render(SETTINGS, "js"), "js")
    drip.open(SETTINGS, fmt="html", after="<script>analytics.track('first view');</script>")
    wait_status(drip, "ready")
    wait_for(drip, "() => !Array.isArray(window._dcq)", "track.js taking over Drip's queue")
    before = drip.run("() => { window.keep = {driptag: driptag, analytics: analytics, queue: _dcq}; return 1; }")
    # A router re-inserts the head's scripts on navigation: the inline form, then the external form.
    drip.run("""([code, src]) => new Promise(done => {
        history.pushState({}, '', '/pages/next-view');
        var inline = document.createElement('script'); inline.text = code; document.head.appendChild(inline);
        var external = document.createElement('script'); external.src = src; external.onload = done;
        document.head.appendChild(external);
    })""", [re.sub(r"^<script>|</script>$", "", render(SETTINGS, "html")), src])
    drip.run("() => analytics.track('second view')")
    commands = wait_received(drip, 2)
    drip.page.wait_for_timeout(150)
    assert before == 1
    assert emulator_commands(drip) == [["track", "first view", {}], ["track", "second view", {}]] == commands
    same = drip.run("() => [keep.driptag === driptag, keep.analytics === analytics, keep.queue === _dcq]")
    assert same == [True, True, True], "a re-run replaced driptag, the facade or Drip's queue"
    assert drip.track_js_requests == [TRACK_JS]
    assert driptag_warnings(drip) == []


# ---------------------------------------------------------------------------------------------------
# 3. Drip's own snippet on the page, before or after ours (Drip's published snippet, protocol-relative)

DRIPS_SRC = f"'//tag.getdrip.com/{ACCOUNT}.js'"  # the URL as Drip's documented snippet writes it
DRIP_SNIPPET_TRACK_JS = f"http://tag.getdrip.com/{ACCOUNT}.js"  # '//' on an http page


def drips_snippet_with_a_call(src: str | None = None) -> str:
    """Drip's documented snippet (loading track.js from `src` when given), then page code that pushes a
    command to Drip's queue."""
    snippet = drips_snippet(ACCOUNT)
    if src is not None:
        assert DRIPS_SRC in snippet, f"Drip's snippet in pages.py no longer loads {DRIPS_SRC}: {snippet}"
        snippet = snippet.replace(DRIPS_SRC, repr(src))
    return snippet + "<script>_dcq.push(['track', 'from Drip snippet page code', {}]);</script>"


DRIPS_OWN_SNIPPET = drips_snippet_with_a_call()


@pytest.mark.parametrize("fmt, src", [
    ("html", TRACK_JS),  # what Drip's '//' gives on an https page: the URL the preload link fetched
    ("html without preload", f"//tag.getdrip.com/{ACCOUNT}.js"),
    ("js", f"//tag.getdrip.com/{ACCOUNT}.js"),
])
def test_drips_snippet_before_ours_one_track_js_request_and_each_command_once(drip, fmt, src):
    loader = (render(SETTINGS, "html") if fmt == "html"
              else render(SETTINGS.replace(preload=False), "html") if fmt == "html without preload"
              else f'<script src="{drip.site.add(render(SETTINGS, "js"), "js")}"></script>')
    goto(drip, page_html(drips_snippet_with_a_call(src) + loader + "<script>analytics.track('ours');"
                         "analytics.identify({email: 'a@b.co'});</script>"))
    commands = wait_received(drip, 3)
    drip.page.wait_for_timeout(150)
    assert emulator_commands(drip) == [["track", "from Drip snippet page code", {}], ["track", "ours", {}],
                                       ["identify", {"email": "a@b.co"}]] == commands
    assert drip.track_js_requests == [src if src.startswith("https:") else DRIP_SNIPPET_TRACK_JS], \
        f"the loader added a second track.js: {drip.track_js_requests}"
    assert drip.run("() => document.querySelectorAll('script[src*=\"tag.getdrip.com\"]').length") == 1
    wait_status(drip, "ready")
    assert driptag_warnings(drip) == []


def test_drips_protocol_relative_snippet_on_an_http_page_is_a_second_url_for_the_preload_link(drip):
    # On an http page Drip's '//' snippet asks for http://…, the html form's preload link for https://…
    # (README: remove Drip's snippet). The loader still adopts Drip's element and adds none of its own.
    goto(drip, page_html(DRIPS_OWN_SNIPPET + render(SETTINGS, "html") + "<script>analytics.track('ours');</script>"))
    assert wait_received(drip, 2) == [["track", "from Drip snippet page code", {}], ["track", "ours", {}]]
    assert sorted(drip.track_js_requests) == [DRIP_SNIPPET_TRACK_JS, TRACK_JS], drip.track_js_requests
    assert drip.run("() => document.querySelectorAll('script[src*=\"tag.getdrip.com\"]').length") == 1


def test_drips_snippet_before_ours_with_track_js_already_running_is_adopted(drip):
    goto(drip, page_html(DRIPS_OWN_SNIPPET))
    wait_for(drip, "() => window._dc && !Array.isArray(window._dcq)", "Drip's track.js configured")
    src = drip.site.add(render(SETTINGS, "js"), "js")
    drip.run("""src => new Promise(done => { var s = document.createElement('script'); s.src = src;
        s.onload = done; document.head.appendChild(s); })""", src)
    assert status_of(drip) == "ready"
    drip.run("() => { analytics.track('ours'); analytics.track('ours again'); }")
    commands = wait_received(drip, 3)
    drip.page.wait_for_timeout(150)
    assert emulator_commands(drip) == [["track", "from Drip snippet page code", {}], ["track", "ours", {}],
                                       ["track", "ours again", {}]] == commands
    assert drip.track_js_requests == [DRIP_SNIPPET_TRACK_JS]


def test_drips_snippet_after_ours_each_command_runs_once(drip):
    """Drip's snippet after ours injects a second track.js unconditionally (driptag cannot prevent that
    request without patching the page's DOM methods, so the README says to remove Drip's snippet); its
    second copy must do nothing."""
    goto(drip, page_html(render(SETTINGS, "html") + "<script>analytics.track('ours');</script>"
                         + DRIPS_OWN_SNIPPET + "<script>analytics.identify({email: 'a@b.co'});</script>"))
    wait_for(drip, "() => document.querySelectorAll('script[src*=\"tag.getdrip.com\"]').length === 2",
             "Drip's snippet adding its script")
    commands = wait_received(drip, 3)
    drip.page.wait_for_timeout(200)
    assert emulator_commands(drip) == [["track", "ours", {}], ["track", "from Drip snippet page code", {}],
                                       ["identify", {"email": "a@b.co"}]] == commands
    assert sorted(drip.track_js_requests) == sorted([TRACK_JS, DRIP_SNIPPET_TRACK_JS]), drip.track_js_requests
    assert drip.run("() => driptag.status") == "ready"
    assert drip.page_errors == []


# ---------------------------------------------------------------------------------------------------
# 4. Content-Security-Policy


def csp_page(drip, policy: str, head: str) -> None:
    """Serve a page on the test site's origin with `policy` as its Content-Security-Policy header."""
    url = f"{drip.site.url}/csp/{len(drip.track_js_requests)}-{abs(hash(policy + head))}"
    html = page_html(head + "<script nonce=\"" + NONCE + "\">window.pageRan = true;</script>")
    drip.page.route(url, lambda route: route.fulfill(
        body=html, content_type="text/html", headers={"Content-Security-Policy": policy}))
    drip.page.goto(url)


def csp_violations(drip) -> list[str]:
    return [text for kind, text in drip.console if kind == "error" and "Content Security Policy" in text]


@pytest.mark.parametrize("fmt", ["html", "js"])
@pytest.mark.parametrize("policy", [f"script-src 'nonce-{NONCE}' 'strict-dynamic'", f"script-src 'nonce-{NONCE}'"])
def test_csp_with_a_nonce_lets_the_loader_and_track_js_run(drip, fmt, policy):
    loader = (render(SETTINGS, "html", nonce=NONCE) if fmt == "html"
              else f'<script async src="{drip.site.add(render(SETTINGS, "js"), "js")}" nonce="{NONCE}"></script>')
    csp_page(drip, policy, loader)
    wait_for(drip, "() => window.driptag", "the loader running under the CSP")
    wait_status(drip, "ready")
    drip.run("() => analytics.track('under CSP')")
    assert wait_received(drip, 1) == [["track", "under CSP", {}]]
    assert drip.track_js_requests == [TRACK_JS]
    assert drip.page_errors == [] and csp_violations(drip) == [], (drip.page_errors, csp_violations(drip))


def test_csp_hash_from_the_manifest_lets_the_inline_loader_run_with_strict_dynamic(drip):
    settings = SETTINGS.replace(preload=False)  # README: a hash-based policy blocks the preload link
    csp_hash = build_manifest(settings, "html")["csp_hash"]
    csp_page(drip, f"script-src {csp_hash} 'nonce-{NONCE}' 'strict-dynamic'", render(settings, "html"))
    wait_status(drip, "ready")
    assert drip.track_js_requests == [TRACK_JS]
    assert csp_violations(drip) == [], csp_violations(drip)


def test_csp_hash_with_strict_dynamic_blocks_only_the_preload_link_of_the_default_html(drip):
    csp_hash = build_manifest(SETTINGS, "html")["csp_hash"]
    assert csp_hash == build_manifest(SETTINGS.replace(preload=False), "html")["csp_hash"]
    csp_page(drip, f"script-src {csp_hash} 'nonce-{NONCE}' 'strict-dynamic'", render(SETTINGS, "html"))
    wait_status(drip, "ready")
    drip.run("() => analytics.track('under CSP')")
    assert wait_received(drip, 1) == [["track", "under CSP", {}]]
    assert drip.track_js_requests == [TRACK_JS], "the loader's own <script> did not load track.js"
    violations = csp_violations(drip)
    assert len(violations) == 1 and f"'{TRACK_JS}'" in violations[0], violations
    assert drip.page_errors == [], drip.page_errors


@pytest.mark.parametrize("case", ["js form, script-src 'self'", "html form, its hash only"])
def test_csp_that_blocks_track_js_gives_failed_and_no_exception(drip, case):
    if case.startswith("js"):
        policy = f"script-src 'self' 'nonce-{NONCE}'"
        loader = f'<script src="{drip.site.add(render(SETTINGS, "js"), "js")}"></script>'
    else:
        settings = SETTINGS.replace(preload=False)  # as the README says for hash-based policies
        policy = f"script-src {build_manifest(settings, 'html')['csp_hash']} 'nonce-{NONCE}'"
        loader = render(settings, "html")
    csp_page(drip, policy, loader)
    wait_for(drip, "() => window.driptag", "the loader running under the CSP")
    wait_status(drip, "failed")
    answered = drip.run("""() => new Promise(done => {
        var answers = 0; analytics.track('x', function () { answers++; });
        setTimeout(() => done(answers), 400); })""")
    assert answered == 1, "the callback did not run once"
    assert drip.track_js_requests == [], "track.js was fetched although the CSP blocks it"
    assert drip.page_errors == [], drip.page_errors
    assert len(csp_violations(drip)) == 1, drip.console
    assert drip.run("() => window.pageRan") is True


# ---------------------------------------------------------------------------------------------------
# 5. Consent


def test_consent_required_makes_no_request_and_sets_nothing_before_consent_then_flushes_in_order(drip):
    requests: list[str] = []
    drip.page.on("request", lambda request: requests.append(request.url))
    settings = Settings(account=ACCOUNT, campaign_id=TEST_CAMPAIGN, consent="required", callback_timeout_ms=5000)
    drip.open(settings, fmt="html", after="""<script>
        window.callbacks = [];
        analytics.track('first', {revenue: 1.5});
        analytics.identify('u1', {email: 'a@b.co'}, function () { callbacks.push('identify'); });
        driptag.track('second', {}, {}, function () { callbacks.push('second'); });
        analytics.page('Home');
        analytics.track('off', {}, {integrations: {Drip: false}});
    </script>""")
    drip.page.wait_for_timeout(150)
    page_url = drip.page.url
    assert requests == [page_url], f"requests before consent: {requests}"
    state = drip.run("() => [driptag.status, typeof window._dc, document.cookie, _dcq.length, "
                     "document.querySelectorAll('script[src]').length, callbacks.length]")
    assert state == ["waiting-consent", "undefined", "", 0, 0, 0], f"before consent: {state}"
    drip.run("() => { driptag.consent(true); driptag.consent(true); analytics.track('third'); }")
    identify = {"email": "a@b.co", "id": "u1", "user_id": "u1"}
    expected = [["track", "first", {"value": 150}],
                ["identify", {**identify, "success": "[function]", "failure": "[function]"}],
                ["subscribe", {"campaign_id": TEST_CAMPAIGN, "fields": identify}],
                ["track", "second", {"success": "[function]", "failure": "[function]"}],
                ["track", "third", {}]]
    assert wait_received(drip, 5) == expected
    wait_for(drip, "() => callbacks.length === 2", "both held callbacks answered by Drip")
    drip.page.wait_for_timeout(150)
    assert emulator_commands(drip) == expected
    assert drip.run("() => callbacks") == ["identify", "second"]
    assert drip.track_js_requests == [TRACK_JS], "consent(true) twice requested track.js twice"
    assert driptag_warnings(drip) == []


def test_consent_refused_drops_held_calls_and_sends_nothing_until_granted(drip):
    requests: list[str] = []
    drip.page.on("request", lambda request: requests.append(request.url))
    drip.open(Settings(account=ACCOUNT, consent="required", callback_timeout_ms=100), fmt="html",
              after="<script>window.answers = 0; for (var i = 0; i < 10; i++) "
                    "analytics.track('held ' + i, function () { answers++; });</script>")
    drip.run("() => { driptag.consent(false); analytics.track('while denied'); }")
    wait_for(drip, "() => answers === 10", "the callbacks of the dropped calls running")
    drip.page.wait_for_timeout(100)
    assert requests == [drip.page.url], f"requests after a denial: {requests}"
    assert drip.run("() => [driptag.status, _dcq.length]") == ["denied", 0]
    drip.run("() => { driptag.consent(true); analytics.track('granted'); }")
    assert wait_received(drip, 1) == [["track", "granted", {}]]
    drip.page.wait_for_timeout(150)
    assert emulator_commands(drip) == [["track", "granted", {}]], "a dropped call was sent"
    assert drip.run("() => [driptag.status, answers]") == ["ready", 10]
