"""What the generated loader pushes to Drip's queue for each call: track, identify (and subscribe), the
integrations options, arguments and callbacks, and the plain data Drip is given.

Every test loads the generated script in Chromium, holds Drip's configuration so that _dcq stays an
array, makes calls and compares the exact commands pushed (a JSON copy taken at push time).
"""

import pytest

from driptag import Settings

ACCOUNT = "83702741"


@pytest.fixture
def pushes(drip):
    """Load the default loader; return a function that runs calls and gives the commands they pushed."""
    opened = {}

    def run(calls: str, settings: Settings | None = None) -> list:
        if not opened:
            drip.open(settings, spy=True, hold=True)
            opened["yes"] = True
        before = len(drip.pushed())
        drip.run(f"() => {{ {calls} }}")
        return drip.pushed()[before:]

    return run


def expect(actual, wanted, what):
    assert actual == wanted, f"{what}: the loader pushed {actual!r}, expected {wanted!r}"


# track


def test_track_with_event_only_pushes_empty_properties(pushes):
    expect(pushes("analytics.track('event')"), [["track", "event", {}]], "track('event')")


def test_track_passes_properties_through(pushes):
    expect(pushes("analytics.track('Signed Up', {plan: 'pro', seats: 3, nested: {a: [1, 2]}})"),
           [["track", "Signed Up", {"plan": "pro", "seats": 3, "nested": {"a": [1, 2]}}]], "track with properties")


def test_revenue_string_becomes_cents(pushes):
    expect(pushes("analytics.track('Bought', {revenue: '9.99'})"), [["track", "Bought", {"value": 999}]],
           "revenue '9.99'")


def test_revenue_number_is_rounded_to_whole_cents(pushes):
    expect(pushes("analytics.track('Bought', {revenue: 19.99})"), [["track", "Bought", {"value": 1999}]],
           "revenue 19.99 (19.99 * 100 is 1998.9999999999998 in floating point)")


def test_revenue_cents_are_math_round_of_revenue_times_100(pushes):
    # The value is Math.round(revenue * 100) cents. 0.29 * 100 is 28.999999999999996 (not truncated to 28);
    # 1.005 * 100 is 100.49999999999999, which rounds to 100, as Segment's integration computes it.
    expect(pushes("analytics.track('A', {revenue: '0.29'}); analytics.track('B', {revenue: 1.005})"),
           [["track", "A", {"value": 29}], ["track", "B", {"value": 100}]], "revenue 0.29 and 1.005")


def test_revenue_with_dollar_sign_is_parsed(pushes):
    expect(pushes("analytics.track('Bought', {revenue: '$1,5'})"), [["track", "Bought", {"value": 100}]],
           "revenue '$1,5' (parseFloat stops at the comma)")


def test_order_completed_uses_total_when_revenue_is_absent(pushes):
    expect(pushes("analytics.track('Order Completed', {total: 30, tax: 2})"),
           [["track", "Order Completed", {"total": 30, "tax": 2, "value": 3000}]], "Order Completed with total")


def test_total_is_not_revenue_for_other_events(pushes):
    expect(pushes("analytics.track('Cart Viewed', {total: 30})"), [["track", "Cart Viewed", {"total": 30}]],
           "total on another event")


def test_unparseable_revenue_is_no_revenue(pushes):
    expect(pushes("analytics.track('Bought', {revenue: 'free'})"),
           [["track", "Bought", {"revenue": "free"}]], "revenue 'free'")


def test_zero_revenue_sets_no_value(pushes):
    expect(pushes("analytics.track('Bought', {revenue: 0})"), [["track", "Bought", {"revenue": 0}]], "revenue 0")


def test_revenue_beyond_drips_range_leaves_value_out_with_a_warning(pushes, drip):
    expect(pushes("analytics.track('Bought', {revenue: 99999999}); analytics.track('Refund', {revenue: -5})"),
           [["track", "Bought", {"revenue": 99999999}], ["track", "Refund", {"revenue": -5}]], "out-of-range revenue")
    assert sum(w == "[driptag] track: revenue out of range; no value sent" for w in drip.warnings()) == 2, drip.warnings()


def test_spaces_in_property_keys_become_underscores(pushes):
    expect(pushes("analytics.track('event', {'ahoy mate there': 1, 'tab\\there': 2, nested: {'a b': 3}})"),
           [["track", "event", {"ahoy_mate_there": 1, "tab_here": 2, "nested": {"a b": 3}}]], "segment key style")


def test_snake_key_style_makes_lower_snake_case(pushes):
    settings = Settings(account=ACCOUNT, key_style="snake")
    expect(pushes("analytics.track('event', {firstName: 1, 'Order ID': 2, URLPath: 3, '--x--': 4, '%%': 5,"
                  " nested: {innerKey: 6}})", settings),
           [["track", "event", {"first_name": 1, "order_id": 2, "url_path": 3, "x": 4, "%%": 5,
                                "nested": {"innerKey": 6}}]], "snake key style")


def test_later_key_wins_when_two_format_alike(pushes):
    expect(pushes("analytics.track('event', {'a b': 1, a_b: 2})"), [["track", "event", {"a_b": 2}]],
           "colliding keys")


def test_occurred_at_from_options_timestamp(pushes):
    expect(pushes("analytics.track('event', {}, {timestamp: new Date(Date.UTC(2024, 0, 2, 3, 4, 5))})"),
           [["track", "event", {"occurred_at": "2024-01-02T03:04:05.000Z"}]], "options.timestamp")


def test_occurred_at_property_wins_and_is_normalised(pushes):
    expect(pushes("analytics.track('event', {occurred_at: '2024-01-02T03:04:05+01:00'}, {timestamp: new Date(0)})"),
           [["track", "event", {"occurred_at": "2024-01-02T02:04:05.000Z"}]], "properties.occurred_at")


def test_invalid_occurred_at_is_dropped_with_a_warning(pushes, drip):
    expect(pushes("analytics.track('event', {occurred_at: 'yesterday'})"), [["track", "event", {}]],
           "occurred_at 'yesterday'")
    assert drip.warnings() == ["[driptag] track: bad occurred_at; left out"], drip.warnings()


def test_track_without_event_name_is_dropped_with_a_warning(pushes, drip):
    expect(pushes("analytics.track(''); analytics.track(); analytics.track({event: 'x'})"), [], "track without name")
    assert drip.warnings() == ["[driptag] track: no event name; dropped"] * 3, drip.warnings()


# integrations options


@pytest.mark.parametrize("options, sent", [
    ("{integrations: {Drip: false}}", False),
    ("{integrations: {All: false}}", False),
    ("{integrations: {All: false, Drip: true}}", True),
    ("{integrations: {All: false, Drip: {}}}", True),
    ("{integrations: {Drip: true}}", True),
    ("{Drip: false}", False),
    ("{All: false}", False),
    ("{All: false, Drip: true}", True),
    ("{integrations: {Other: false}}", True),
])
def test_integrations_option_decides_whether_drip_gets_the_call(pushes, options, sent):
    got = pushes(f"analytics.track('event', {{}}, {options})")
    expect(got, [["track", "event", {}]] if sent else [], f"options {options}")


# identify


def test_identify_without_email_pushes_nothing(pushes):
    expect(pushes("analytics.identify('user-1', {name: 'Ann'})"), [], "identify without email")


def test_identify_without_email_warns_only_in_debug_mode(drip):
    drip.open(spy=True, hold=True)
    drip.run("() => { analytics.identify('user-1'); driptag.debug(true); analytics.identify('user-1'); }")
    assert drip.pushed() == []
    assert drip.warnings() == ["[driptag] identify: no email; not sent"], drip.warnings()


def test_identify_with_email_trait_sends_id_and_user_id(pushes):
    expect(pushes("analytics.identify('user-1', {email: 'ann@example.com', name: 'Ann'})"),
           [["identify", {"email": "ann@example.com", "name": "Ann", "id": "user-1", "user_id": "user-1"}]],
           "identify with email")


def test_identify_with_traits_only(pushes):
    expect(pushes("analytics.identify({email: 'ann@example.com'})"),
           [["identify", {"email": "ann@example.com"}]], "identify(traits)")


def test_email_shaped_user_id_becomes_the_email(pushes):
    expect(pushes("analytics.identify('ann@example.com')"),
           [["identify", {"email": "ann@example.com", "id": "ann@example.com", "user_id": "ann@example.com"}]],
           "identify(email-shaped userId)")


def test_numeric_user_id_becomes_a_string(pushes):
    expect(pushes("analytics.identify(42, {email: 'a@b.co'})"),
           [["identify", {"email": "a@b.co", "id": "42", "user_id": "42"}]], "numeric userId")


def test_traits_keep_their_own_id_and_user_id(pushes):
    expect(pushes("analytics.identify('u', {email: 'a@b.co', id: 'mine', user_id: 'also-mine'})"),
           [["identify", {"email": "a@b.co", "id": "mine", "user_id": "also-mine"}]], "traits with id")


def test_reserved_traits_take_drips_spelling(pushes):
    expect(pushes("analytics.identify({email: 'a@b.co', newEmail: 'n@b.co', removeTags: ' old , stale,',"
                  " tags: 'a, b', euConsent: 'GRANTED', euConsentMessage: 'ok', prospect: true})"),
           [["identify", {"email": "a@b.co", "new_email": "n@b.co", "remove_tags": ["old", "stale"],
                          "tags": ["a", "b"], "eu_consent": "granted", "eu_consent_message": "ok",
                          "prospect": True}]], "reserved traits")


def test_eu_consent_other_than_granted_or_denied_is_left_out(pushes):
    expect(pushes("analytics.identify({email: 'a@b.co', euConsent: 'maybe'})"),
           [["identify", {"email": "a@b.co"}]], "euConsent 'maybe'")


def test_dates_become_iso_strings_and_undefined_and_functions_are_dropped(pushes):
    expect(pushes("analytics.identify({email: 'a@b.co', at: new Date(Date.UTC(2020, 1, 3)), gone: undefined,"
                  " fn: function () {}, list: [1, undefined, function () {}]})"),
           [["identify", {"email": "a@b.co", "at": "2020-02-03T00:00:00.000Z", "list": [1, None, None]}]],
           "dates, undefined, functions")


def test_default_campaign_subscribes_every_identified_user(pushes):
    settings = Settings(account=ACCOUNT, campaign_id="1234567")
    identify = {"email": "a@b.co", "id": "u", "user_id": "u"}
    expect(pushes("analytics.identify('u', {email: 'a@b.co'})", settings),
           [["identify", identify], ["subscribe", {"campaign_id": "1234567", "fields": identify}]],
           "identify with the campaign_id setting")


def test_campaign_id_option_overrides_the_default_campaign(pushes):
    settings = Settings(account=ACCOUNT, campaign_id="1234567")
    expect(pushes("analytics.identify({email: 'a@b.co'}, {integrations: {Drip: {campaignId: 999, doubleOptin: false}}})",
                  settings),
           [["identify", {"email": "a@b.co"}],
            ["subscribe", {"campaign_id": "999", "fields": {"email": "a@b.co"}, "double_optin": False}]],
           "integrations.Drip.campaignId")


@pytest.mark.parametrize("value", ["false", "null"])
def test_campaign_id_false_or_null_means_no_subscribe_this_time(pushes, value):
    settings = Settings(account=ACCOUNT, campaign_id="1234567")
    expect(pushes(f"analytics.identify({{email: 'a@b.co'}}, {{integrations: {{Drip: {{campaignId: {value}}}}}}})",
                  settings),
           [["identify", {"email": "a@b.co"}]], f"campaignId {value}")


def test_campaign_option_without_default_campaign(pushes):
    expect(pushes("analytics.identify({email: 'a@b.co'}, {integrations: {Drip: {campaignId: '77'}}})"),
           [["identify", {"email": "a@b.co"}], ["subscribe", {"campaign_id": "77", "fields": {"email": "a@b.co"}}]],
           "campaignId without a default")


def test_subscribe_fields_are_a_separate_copy(drip):
    drip.open(Settings(account=ACCOUNT, campaign_id="1234567"), spy=True, hold=True)
    separate = drip.run("""() => {
        analytics.identify({email: 'a@b.co'});
        var q = window._dcq;
        return q[q.length - 1][1].fields !== q[q.length - 2][1];
    }""")
    assert separate, "subscribe.fields is the very object pushed with identify"


# arguments and callbacks


def test_callback_in_any_position_is_attached_as_success_and_failure(pushes):
    expect(pushes("analytics.track('event', function () {})"),
           [["track", "event", {"success": "[function]", "failure": "[function]"}]], "track(event, callback)")


def test_page_screen_group_alias_push_nothing(pushes):
    expect(pushes("analytics.page('Home'); analytics.screen('x'); analytics.group('g', {}); analytics.alias('a')"),
           [], "page/screen/group/alias")


def test_inputs_are_never_mutated(drip):
    drip.open(Settings(account=ACCOUNT, campaign_id="1"), spy=True, hold=True)
    unchanged = drip.run("""() => {
        var traits = {email: 'a@b.co', 'a b': 1, tags: 'x,y', newEmail: 'n@b.co'};
        var props = {revenue: '9.99', 'c d': {e: 1}};
        var options = {integrations: {Drip: {campaignId: '5'}}};
        var before = JSON.stringify([traits, props, options]);
        analytics.identify('u@b.co', traits, options);
        analytics.track('Bought', props, options);
        return JSON.stringify([traits, props, options]) === before;
    }""")
    assert unchanged, "the loader changed an object the caller passed in"


def test_cyclic_values_are_cut_with_a_warning(pushes, drip):
    expect(pushes("var a = {name: 'a'}; a.self = a; a.list = [a]; analytics.track('event', {a: a})"),
           [["track", "event", {"a": {"name": "a", "list": [None]}}]], "cyclic properties")
    assert drip.warnings() == ["[driptag] track: left out a cyclic value"], drip.warnings()


def test_prototype_keys_are_never_copied(pushes, drip):
    got = pushes("analytics.track('event', JSON.parse('{\"__proto__\": {\"polluted\": 1}, \"constructor\": 2,"
                 " \"ok\": {\"prototype\": 3, \"fine\": 4}}'))")
    expect(got, [["track", "event", {"ok": {"fine": 4}}]], "__proto__/constructor/prototype keys")
    assert drip.run("() => ({}).polluted") is None, "Object.prototype was polluted"


def test_symbols_bigints_and_nan_are_not_handed_to_drip(pushes):
    expect(pushes("analytics.track('event', {s: Symbol('x'), b: BigInt(1), n: NaN, i: Infinity, ok: 1})"),
           [["track", "event", {"ok": 1}]], "Symbol, BigInt, NaN, Infinity")
