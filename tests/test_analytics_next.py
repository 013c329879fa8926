"""driptag with Segment's real Analytics.js 2.0 (the loader registers its destination plugin there instead of
installing its own facade), and with Segment's real classic snippet stub.

Analytics.js 2.0 is `@segment/analytics-next` from the npm registry, pinned with a lock file in
tests/analytics_next/ and bundled for the browser by `make test` (an IIFE that sets window.AnalyticsBrowser).
It is served from the test site and loaded fully offline: `cdnSettings` given (no settings request), metrics
off, and the Segment.io destination off, so the only network traffic is to 127.0.0.1, plus Drip's host,
which the `drip` fixture routes to the emulator.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import pytest

from driptag import Settings, render
from conftest import DripPage

ACCOUNT = "83702741"
CAMPAIGN = "1234567"  # known to the emulator (conftest.TEST_CAMPAIGN)
SETTINGS = Settings(account=ACCOUNT, campaign_id=CAMPAIGN)
BUNDLE = Path(__file__).parent / "analytics_next" / "dist" / "analytics-next.js"

# Analytics.js 2.0, loaded with nothing leaving the machine (see tests/analytics_next/README.md).
LOAD_OFFLINE = ("AnalyticsBrowser.load({writeKey: 'test', cdnSettings: {integrations: {}, metrics: {sampleRate: 0}}},"
                " {integrations: {'Segment.io': false}})")

# The same calls, made through whatever window.analytics is. Analytics.js 2.0 returns a promise per call
# (resolved once the event went through its plugins); the facade returns itself, and awaiting it is harmless.
# Analytics.js 2.0 keeps the user's traits between identify calls of the same userId: both identify calls
# give the same traits, so that the merged traits equal the given ones.
CALLS = """async () => {
  const a = window.analytics;
  await a.identify('user-42', {email: 'ann@example.com', firstName: 'Ann', tags: 'customer, vip'});
  await a.track('Signed Up', {revenue: '19.99', plan: 'pro', occurred_at: '2024-05-01T10:00:00Z'});
  await a.track('Order Completed', {total: 42.5, order_id: 'A-1'});
  await a.identify('user-42', {email: 'ann@example.com', firstName: 'Ann', tags: 'customer, vip'},
                   {integrations: {Drip: {campaignId: '9', doubleOptin: false}}});
  await a.track('Not for Drip', {a: 1}, {integrations: {Drip: false}});
  await a.track('Not for anyone', {a: 2}, {integrations: {All: false}});
  await a.track('Only for Drip', {a: 3}, {integrations: {All: false, Drip: true}});
  await a.track('Last', {});
}"""
ANN = {"email": "ann@example.com", "firstName": "Ann", "tags": ["customer", "vip"], "id": "user-42",
       "user_id": "user-42"}
EXPECTED = [
    ["identify", ANN],
    ["subscribe", {"campaign_id": CAMPAIGN, "fields": ANN}],
    ["track", "Signed Up", {"plan": "pro", "value": 1999, "occurred_at": "2024-05-01T10:00:00.000Z"}],
    ["track", "Order Completed", {"total": 42.5, "order_id": "A-1", "value": 4250}],
    ["identify", ANN],
    ["subscribe", {"campaign_id": "9", "fields": ANN, "double_optin": False}],
    ["track", "Only for Drip", {"a": 3}],
    ["track", "Last", {}],
]


@pytest.fixture(scope="module")
def bundle_url(site) -> str:
    if not BUNDLE.is_file():
        pytest.fail(f"{BUNDLE} is missing: run make test (it builds the Analytics.js 2.0 bundle with npm)",
                    pytrace=False)
    return site.add(BUNDLE.read_text(encoding="utf-8"), "js")


@pytest.fixture
def requests(drip) -> list[str]:
    """Every URL the page requested."""
    seen: list[str] = []
    drip.page.on("request", lambda request: seen.append(request.url))
    return seen


def assert_offline(requests: list[str]) -> None:
    """Nothing left the machine: 127.0.0.1, or Drip's host (routed to the emulator by the fixture)."""
    elsewhere = [url for url in requests
                 if urlsplit(url).hostname != "127.0.0.1" and url != f"https://tag.getdrip.com/{ACCOUNT}.js"]
    assert elsewhere == [], f"requests left the machine: {elsewhere}"


def ajs_head(bundle_url: str, before_loader: str = "") -> str:
    """Analytics.js 2.0 on window.analytics, its load() started but not finished when the loader runs next."""
    return (f'<script src="{bundle_url}"></script>'
            f"<script>window.analytics = {LOAD_OFFLINE};"
            # Loading is asynchronous: at this point the instance does not exist yet.
            f"window.loadedBeforeLoader = !!analytics.instance; {before_loader}</script>")


def drip_plugins() -> str:
    """A page function: the names of Analytics.js 2.0's plugins once it has loaded, and how many are Drip."""
    return "async () => { const [instance] = await window.analytics; " \
           "return instance.queue.plugins.filter(p => p.name === 'Drip').length; }"


def test_calls_through_analytics_next_push_the_same_commands_as_the_facade(drip, context, site, bundle_url, requests):
    facade = DripPage(context.new_page(), site).open(SETTINGS, spy=True, hold=True)
    facade.run(CALLS)
    facade.page.wait_for_timeout(100)
    assert facade.run("() => typeof analytics.register") == "undefined", "the facade page has no Analytics.js 2.0"
    assert facade.pushed() == EXPECTED

    drip.open(SETTINGS, fmt="html", head=ajs_head(bundle_url), spy=True, hold=True)
    assert drip.run("() => window.loadedBeforeLoader") is False
    drip.run(CALLS)
    drip.page.wait_for_timeout(100)
    assert drip.pushed() == facade.pushed()
    assert drip.run(drip_plugins()) == 1
    assert drip.warnings() == [] and drip.page_errors == []
    assert_offline(requests)


# A destination plugin that records the order in which Analytics.js 2.0 hands it events. Analytics.js 2.0
# does not always deliver the calls buffered before it loaded in the order they were made (a call made in a
# later <script> may go first); whatever order it delivers in, Drip must get the events in that same order.
RECORDER = """window.delivered = [];
  analytics.register({name: 'Recorder', type: 'destination', version: '1', isLoaded: () => true,
    load: () => Promise.resolve(), identify: ctx => { delivered.push(ctx.event.userId); return ctx; },
    track: ctx => { delivered.push(ctx.event.event); return ctx; }});"""


def test_loader_run_before_analytics_next_has_loaded_gets_calls_made_before_and_after_it(drip, bundle_url, requests):
    early = RECORDER + "analytics.identify('user-42', {email: 'ann@example.com'}); analytics.track('Early', {revenue: 5});"
    drip.open(SETTINGS, fmt="html", head=ajs_head(bundle_url, before_loader=early),
              after="<script>analytics.track('Right after the loader');</script>")
    assert drip.run("() => window.loadedBeforeLoader") is False
    assert drip.run(drip_plugins()) == 1
    drip.run("() => analytics.track('Once loaded', {total: '$3.10'})")
    ann = {"email": "ann@example.com", "id": "user-42", "user_id": "user-42"}
    commands = {
        "user-42": [["identify", ann], ["subscribe", {"campaign_id": CAMPAIGN, "fields": ann}]],
        "Early": [["track", "Early", {"value": 500}]],
        "Right after the loader": [["track", "Right after the loader", {}]],
        "Once loaded": [["track", "Once loaded", {"total": "$3.10"}]],
    }
    received = drip.received(5)
    delivered = drip.run("() => delivered")
    assert sorted(delivered) == sorted(commands), delivered
    assert received == [command for event in delivered for command in commands[event]]
    assert drip.run("() => driptag.status") == "ready"
    assert drip.warnings() == [] and drip.page_errors == []
    assert_offline(requests)


def test_loader_run_after_analytics_next_has_loaded_registers_its_plugin(drip, site, bundle_url, requests):
    loader = site.add(render(SETTINGS, "js"), "js")
    drip.page.goto(site.add(f'<!doctype html><meta charset=utf-8><script src="{bundle_url}"></script>'
                            f"<script>window.analytics = {LOAD_OFFLINE};</script>"))
    drip.run("""async src => {
        await window.analytics;
        await new Promise((resolve, reject) => { const script = document.createElement('script');
            script.src = src; script.onload = resolve; script.onerror = reject; document.head.appendChild(script); });
    }""", loader)
    assert drip.run(drip_plugins()) == 1
    drip.run("() => analytics.track('After load', {revenue: '1.50'}, {integrations: {Drip: true}})")
    assert drip.received(1) == [["track", "After load", {"value": 150}]]
    assert drip.warnings() == [] and drip.page_errors == []
    assert_offline(requests)


def test_plugin_is_registered_once_when_the_snippet_is_included_twice(drip, bundle_url, requests):
    snippet = render(SETTINGS, "html")
    drip.open(SETTINGS, fmt="html", head=ajs_head(bundle_url), after=snippet, spy=True, hold=True)
    assert drip.run(drip_plugins()) == 1
    drip.run("() => analytics.track('Once')")
    drip.page.wait_for_timeout(100)
    assert drip.pushed() == [["track", "Once", {}]]
    assert drip.page_errors == []
    assert_offline(requests)


# Segment's classic analytics.js snippet (4.1.0), as Segment published it, minus the two calls it ends
# with, analytics.load("YOUR_WRITE_KEY") and analytics.page(): a stub with no write key, that never loads
# Segment. Its methods push [method, ...args] into the array and return it.
CLASSIC_SNIPPET = (
    '!function(){var analytics=window.analytics=window.analytics||[];if(!analytics.initialize)if(analytics.invoked)'
    'window.console&&console.error&&console.error("Segment snippet included twice.");else{analytics.invoked=!0;'
    'analytics.methods=["trackSubmit","trackClick","trackLink","trackForm","pageview","identify","reset","group",'
    '"track","ready","alias","debug","page","once","off","on"];analytics.factory=function(t){return function(){'
    'var e=Array.prototype.slice.call(arguments);e.unshift(t);analytics.push(e);return analytics}};for(var t=0;'
    't<analytics.methods.length;t++){var e=analytics.methods[t];analytics[e]=analytics.factory(e)}'
    'analytics.load=function(t,e){var n=document.createElement("script");n.type="text/javascript";n.async=!0;'
    'n.src="https://cdn.segment.com/analytics.js/v1/"+t+"/analytics.min.js";var a=document.getElementsByTagName('
    '"script")[0];a.parentNode.insertBefore(n,a);analytics._loadOptions=e};analytics.SNIPPET_VERSION="4.1.0";\n'
    '}}();'
)
SNIPPET_END = "\n}}();"


def test_classic_snippet_stub_calls_arrive_in_order_and_a_kept_stub_still_reaches_drip(drip, requests):
    queued = """
      analytics.page();
      analytics.identify('user-42', {email: 'ann@example.com'}, {integrations: {Drip: {campaignId: false}}});
      analytics.trackLink(document.body, 'Clicked');        // not a Drip call: dropped quietly
      analytics.track('Queued', {revenue: '2.50'});
      analytics.track('Not for Drip', {}, {integrations: {Drip: false}});
      analytics.identify({email: 'bob@example.com'});
      window.keptStub = analytics;"""
    drip.open(SETTINGS, fmt="html", head=f"<script>{CLASSIC_SNIPPET}{queued}</script>",
              after="<script>keptStub.track('Through the kept stub'); keptStub.track('Chained').track('Chained again'); "
                    "keptStub.factory('track')('Through its factory');</script>")
    drip.run("() => { keptStub.identify('carl@example.com'); analytics.track('Through the facade'); }")
    ann = {"email": "ann@example.com", "id": "user-42", "user_id": "user-42"}
    bob = {"email": "bob@example.com"}
    carl = {"email": "carl@example.com", "id": "carl@example.com", "user_id": "carl@example.com"}
    assert drip.received(11) == [
        ["identify", ann],
        ["track", "Queued", {"value": 250}],
        ["identify", bob],
        ["subscribe", {"campaign_id": CAMPAIGN, "fields": bob}],
        ["track", "Through the kept stub", {}],
        ["track", "Chained", {}],
        ["track", "Chained again", {}],
        ["track", "Through its factory", {}],
        ["identify", carl],
        ["subscribe", {"campaign_id": CAMPAIGN, "fields": carl}],
        ["track", "Through the facade", {}],
    ]
    assert drip.run("() => [Array.isArray(window.analytics), window.analytics === keptStub]") == [False, False]
    assert drip.track_js_requests == [f"https://tag.getdrip.com/{ACCOUNT}.js"]
    assert drip.warnings() == [] and drip.page_errors == []
    assert_offline(requests)


def test_classic_snippet_included_after_the_loader_leaves_analytics_working(drip, requests):
    # A tag manager often adds Segment's snippet late. It then finds the facade on window.analytics (no
    # `initialize`, no `invoked`), turns it into a stub whose methods call analytics.push(...), and runs its
    # own analytics.page(): the facade must survive that (no error thrown into the page; calls reach Drip).
    drip.open(SETTINGS, fmt="html",
              after=f"<script>{CLASSIC_SNIPPET.replace(SNIPPET_END, 'analytics.page();' + SNIPPET_END)}</script>"
                    "<script>analytics.track('After the snippet');</script>")
    assert drip.page_errors == [], "Segment's snippet after the loader broke window.analytics"
    assert drip.received(1) == [["track", "After the snippet", {}]]
    assert_offline(requests)
