"""Reliability: order and integrity of what the generated loader hands to Drip.

1. 1,000 mixed calls spread over every phase of a page's life reach the emulator exactly once, in order:
   (a) before the loader, in Segment's classic snippet stub; (b) after the loader ran, while track.js is
   still on its way; (c) after track.js defined `_dc`, before it swapped `_dcq` for its own object;
   (d) after the swap.
2. The caller's objects are never changed: deep-compared (values, keys, property descriptors, prototypes,
   frozenness, identities) before the calls and after Drip's track.js (the emulator) consumed and mutated
   everything it was given.

test_loader_mapping.test_inputs_are_never_mutated already compares JSON copies with Drip held; this file
adds the deep comparison after the emulator ran, and non-JSON inputs.
"""

from __future__ import annotations

from driptag import Settings
from driptag.emulators import trackjs as emulator
from conftest import TEST_CAMPAIGN

ACCOUNT = "83702741"
TRACK_JS = f"https://tag.getdrip.com/{ACCOUNT}.js"
CALLS = 1000
PHASES = {"a: classic stub, before the loader": (0, 250),
          "b: loader ran, track.js not yet there": (250, 500),
          "c: _dc defined, _dcq not yet swapped": (500, 750),
          "d: after the swap": (750, 1000)}

# One call per index, of five kinds; the same on every phase (driptag.track once driptag exists).
CALLS_JS = """
window.callsMade = 0;
window.runCalls = function (from, to) {
  for (var i = from; i < to; i++) {
    var k = i % 5;
    if (k === 0) analytics.identify('u' + i, {email: 'u' + i + '@example.com', n: i});
    else if (k === 1) analytics.track('Event ' + i, {n: i, revenue: (i / 100).toFixed(2)});
    else if (k === 2) (window.driptag || analytics).track('Event ' + i, {n: i, nested: {list: [i, String(i)]}});
    else if (k === 3) analytics.page('Page ' + i);
    else analytics.identify({email: 'v' + i + '@example.com'}, {integrations: {Drip: {campaignId: null}}});
    callsMade++;
  }
};
"""

CLASSIC_STUB = """
var analytics = window.analytics = [];
analytics.methods = ['identify', 'track', 'page'];
analytics.factory = function (m) { return function () { var a = [].slice.call(arguments); a.unshift(m);
  analytics.push(a); return analytics; }; };
for (var m = 0; m < analytics.methods.length; m++) analytics[analytics.methods[m]] = analytics.factory(analytics.methods[m]);
"""

# Phase (c): track.js assigns window._dc before it schedules the queue swap; calls are made right there,
# and again from a timer set at that moment (it fires before the swap's longer timer).
DC_HOOK = """
(function () {
  var dc;
  window.phaseC = {};
  Object.defineProperty(window, '_dc', {configurable: true, enumerable: true,
    get: function () { return dc; },
    set: function (value) {
      dc = value;
      phaseC.sync = Array.isArray(window._dcq);
      runCalls(500, 625);
      setTimeout(function () { phaseC.timer = Array.isArray(window._dcq); runCalls(625, 750); }, 0);
    }});
})();
"""


def expected_commands(i: int) -> list:
    kind = i % 5
    if kind == 0:
        identify = {"email": f"u{i}@example.com", "n": i, "id": f"u{i}", "user_id": f"u{i}"}
        return [["identify", identify], ["subscribe", {"campaign_id": TEST_CAMPAIGN, "fields": identify}]]
    if kind == 1:
        return [["track", f"Event {i}", {"n": i, "value": i}]]
    if kind == 2:
        return [["track", f"Event {i}", {"n": i, "nested": {"list": [i, str(i)]}}]]
    if kind == 3:
        return []  # page: accepted, and Drip takes no such call
    return [["identify", {"email": f"v{i}@example.com"}]]


def wait_for(drip, condition: str, what: str, arg=None, timeout: float = 10000) -> None:
    try:
        drip.page.wait_for_function(condition, arg=arg, timeout=timeout)
    except Exception:
        raise AssertionError(f"{what}: never happened") from None


def received(drip) -> list:
    return drip.run("() => window.dripEmulator ? dripEmulator.received.map(r => r.command) : []")


def first_difference(got: list, wanted: list) -> str:
    for index, (a, b) in enumerate(zip(got, wanted)):
        if a != b:
            return f"command {index}: got {a!r}, expected {b!r}"
    return f"got {len(got)} commands, expected {len(wanted)}"


def test_1000_calls_over_every_phase_reach_drip_exactly_once_in_order(drip):
    settings = Settings(account=ACCOUNT, campaign_id=TEST_CAMPAIGN)
    held = []
    drip.page.unroute("**/tag.getdrip.com/**")
    drip.page.route("**/tag.getdrip.com/**", lambda route: (drip.track_js_requests.append(route.request.url),
                                                             held.append(route)))
    drip.page.add_init_script(DC_HOOK)
    head = f"<script>{CALLS_JS}{CLASSIC_STUB}runCalls(0, 250);</script>"
    after = "<script>runCalls(250, 375);</script>"
    drip.open(settings, fmt="html", head=head, after=after, wait="domcontentloaded")

    # (b) more calls while track.js is held back by the route.
    wait_for(drip, "() => window.callsMade === 375", "the page's first 375 calls")
    state = drip.run("() => { runCalls(375, 500); return [typeof window._dc, Array.isArray(window._dcq), driptag.status]; }")
    assert state == ["undefined", True, "loading"], f"phase (b) was not before track.js: {state}"
    assert len(held) == 1, f"track.js was requested {len(held)} times"
    held[0].fulfill(body=emulator.emulator_script(campaigns=[TEST_CAMPAIGN], config_delay_ms=100, latency_ms=0),
                    content_type="application/javascript")

    # (c) runs inside track.js's assignment of _dc; (d) after the swap, in two batches.
    wait_for(drip, "() => window.callsMade === 750", "the calls made while _dc was new")
    assert drip.run("() => [phaseC.sync, phaseC.timer]") == [True, True], "phase (c) calls were not before the swap"
    wait_for(drip, "() => !Array.isArray(window._dcq)", "track.js swapping _dcq")
    drip.run("() => runCalls(750, 875)")
    wait_for(drip, "() => dripEmulator.received.some(r => r.answer !== 'pending')", "Drip answering a command")
    drip.run("() => runCalls(875, 1000)")

    wanted = [command for i in range(CALLS) for command in expected_commands(i)]
    assert len(wanted) == 1000
    wait_for(drip, "n => dripEmulator.received.length >= n", f"the emulator receiving {len(wanted)} commands",
             len(wanted))
    drip.page.wait_for_timeout(200)  # a duplicate would arrive in this time
    got = received(drip)
    assert got == wanted, first_difference(got, wanted)
    assert drip.run("() => callsMade") == CALLS
    assert drip.track_js_requests == [TRACK_JS]
    assert drip.page_errors == [] and [w for w in drip.warnings() if "[driptag]" in w] == []


# ---------------------------------------------------------------------------------------------------
# 2. Caller objects are never mutated

# A structural snapshot of everything reachable from a value: own keys (strings and Symbols, enumerable
# or not) with their descriptors, prototypes, frozen/sealed/extensible flags, Date times, array lengths,
# non-JSON primitives, and the path of the first place each object was seen (so shared and cyclic
# references are compared too). `objects` lists every reachable object in walk order, for identity.
SNAPSHOT_JS = """
window.snapshot = function (root) {
  var seen = new Map(), objects = [];
  function name(key) { return typeof key === 'symbol' ? '@@' + String(key.description) : key; }
  function proto(v) {
    var p = Object.getPrototypeOf(v);
    return p === null ? 'null' : p === Object.prototype ? 'Object' : p === Array.prototype ? 'Array'
      : p === Date.prototype ? 'Date' : p === Function.prototype ? 'Function' : 'other:' + Object.keys(p).join(',');
  }
  function walk(v, path) {
    var t = typeof v;
    if (t === 'undefined') return {undefined: true};
    if (t === 'symbol') return {symbol: String(v.description)};
    if (t === 'bigint') return {bigint: String(v)};
    if (t === 'number' && (!isFinite(v) || Object.is(v, -0))) return {number: Object.is(v, -0) ? '-0' : String(v)};
    if (v === null || (t !== 'object' && t !== 'function')) return v;
    if (seen.has(v)) return {ref: seen.get(v)};
    seen.set(v, path); objects.push(v);
    var node = {proto: proto(v), frozen: Object.isFrozen(v), sealed: Object.isSealed(v),
                extensible: Object.isExtensible(v), keys: []};
    if (v instanceof Date) node.time = String(v.getTime());
    Reflect.ownKeys(v).forEach(function (key) {
      var d = Object.getOwnPropertyDescriptor(v, key);
      node.keys.push([name(key), d.enumerable, d.configurable, 'value' in d
        ? [d.writable, walk(d.value, path + '.' + name(key))]
        : ['accessor', walk(d.get, path + '.get ' + name(key)), walk(d.set, path + '.set ' + name(key))]]);
    });
    return node;
  }
  return {shape: JSON.stringify(walk(root, '$')), objects: objects};
};
"""

CALLER_OBJECTS_JS = """
function Money(amount) { this.amount = amount; }
Money.prototype.currency = 'EUR';
var shared = {tag: 'shared'};
var secret = Symbol('secret');
var traits = {email: 'ann@example.com', 'first Name': 'Ann', tags: 'a, b ,c', removeTags: 'x', newEmail: 'n@example.com',
  euConsent: 'GRANTED', euConsentMessage: 'ok', birthday: new Date(Date.UTC(1990, 4, 6)), invalid: new Date(NaN),
  address: {city: 'Oslo', lines: ['1', '2'], shared: shared}, again: shared, gone: undefined,
  fn: function () {}, money: new Money(5), list: [1, , 3], big: BigInt(7), nan: NaN, negZero: -0};
traits[secret] = 'symbol-keyed';
Object.defineProperty(traits, 'hidden', {value: 'not enumerable', enumerable: false});
Object.defineProperty(traits, 'computed', {get: function () { return 'got'; }, enumerable: true});
traits.self = traits;
var properties = Object.freeze({revenue: '$19.99', total: 30, 'Order ID': 'A-1', occurred_at: new Date(Date.UTC(2024, 0, 1)),
  items: Object.freeze([Object.freeze({sku: 'S1', price: 9.99}), {sku: 'S2', tags: ['t']}]), shared: shared});
var orderProperties = {total: '$5.50', products: [{id: 1}, {id: 2}]};
var options = {integrations: {Drip: {campaignId: 1234567, doubleOptin: true}, Other: false},
  timestamp: new Date(Date.UTC(2024, 1, 2)), context: {ip: '0.0.0.0'}};
var trackOptions = {timestamp: '2024-03-04T05:06:07Z', integrations: {All: true}};
var callback = function () { window.answered = (window.answered || 0) + 1; };
var ctx = {event: {type: 'track', event: 'Plugin Event', properties: {plan: 'pro', nested: {n: 1}},
  integrations: {}, timestamp: new Date(0)}};
window.callerObjects = {traits: traits, properties: properties, orderProperties: orderProperties, options: options,
  trackOptions: trackOptions, callback: callback, ctx: ctx, shared: shared, Money: Money};
window.before = snapshot(window.callerObjects);
"""

MAKE_CALLS_JS = """
var o = callerObjects;
analytics.identify('u-1', o.traits, o.options, o.callback);
analytics.track('Order Completed', o.properties, o.trackOptions, o.callback);
analytics.track('Order Completed', o.orderProperties, o.callback);
driptag.identify({email: 'b@example.com', profile: o.traits.address}, o.options);
driptag.plugin.track(o.ctx);
analytics.track('Shared', {first: o.shared, second: o.shared}, o.callback);
"""


def test_caller_objects_are_never_changed_even_after_drip_mutated_what_it_was_given(drip):
    settings = Settings(account=ACCOUNT, campaign_id=TEST_CAMPAIGN, callback_timeout_ms=5000)
    # Keep a reference to what the loader hands over while _dcq is an array, so that what the emulator
    # later does to it (shift, _action) can be seen.
    drip.page.add_init_script("""window.handedOver = []; window._dcq = [];
        window._dcq.push = function () { for (var i = 0; i < arguments.length; i++)
          handedOver.push({command: arguments[i], items: arguments[i].slice()});
          return Array.prototype.push.apply(this, arguments); };""")
    drip.open(settings, fmt="html", head=f"<script>{SNAPSHOT_JS}</script>",
              after=f"<script>{CALLER_OBJECTS_JS}{MAKE_CALLS_JS}</script>")
    commands = 8  # identify+subscribe, track, track, identify+subscribe, track (plugin), track
    wait_for(drip, "n => window.dripEmulator && dripEmulator.received.length === n && "
                   "dripEmulator.received.every(r => r.answer !== 'pending')", "Drip answering all 8 commands",
             commands)
    wait_for(drip, "() => window.answered === 4", "the four callbacks")
    # The emulator did mutate what it was given: command arrays consumed, _action written into properties.
    mutated = drip.run("""() => [handedOver.length, handedOver.every(h => h.command.length === 0),
        handedOver.filter(h => h.items[0] === 'track').map(h => h.items[2]._action)]""")
    assert mutated == [commands, True, ["Order Completed", "Order Completed", "Plugin Event", "Shared"]], \
        f"the emulator did not consume and mutate its commands as Drip does: {mutated}"
    after = drip.run("""() => { var now = snapshot(callerObjects);
        var same = now.objects.length === before.objects.length && now.objects.every((o, i) => o === before.objects[i]);
        return {same: same, count: now.objects.length, shape: now.shape, before: before.shape}; }""")
    assert after["shape"] == after["before"], "a caller object changed:\nbefore " + after["before"][:3000] + \
        "\nafter  " + after["shape"][:3000]
    assert after["same"], "a nested caller object was replaced by another object"
    assert after["count"] == 40, f"the snapshot reached {after['count']} objects"
    # Control: the snapshot does see a deep change, a new key, a changed descriptor and a replaced object.
    controls = drip.run("""() => {
        function changed(make, change) { var v = make(), s = snapshot(v); change(v); var t = snapshot(v);
          return t.shape !== s.shape || t.objects.some((o, i) => o !== s.objects[i]); }
        var make = () => ({a: {b: [1, {c: new Date(0)}]}});
        return [changed(make, v => { v.a.b[1].c.setTime(1); }), changed(make, v => { v.a.b._action = 'x'; }),
                changed(make, v => { Object.freeze(v.a); }), changed(make, v => { v.a.b[1] = {c: new Date(0)}; }),
                changed(make, v => {})];
    }""")
    assert controls == [True, True, True, True, False], f"the snapshot misses changes: {controls}"
    assert drip.run("() => callerObjects.traits.self === callerObjects.traits && Object.isFrozen(callerObjects.properties)")
    assert drip.page_errors == []
