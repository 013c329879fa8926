"""One table of mapping cases, both modes: tests/mapping_cases.json.

The same Segment call goes through the loader in Chromium (the exact commands pushed to Drip's queue
`_dcq`) and through the relay's mapping (the exact Drip REST requests), so the two modes cannot drift
apart. The table's "about" says what a case holds. In short:

    {"name": "...", "settings": {"keyStyle": ..., "campaignId": ...},        # settings optional
     "call": {"type": "identify", "userId": ..., "traits": {...}, ...},       # one Segment message
     "remembered": {"userId": {id: email}, "anonymousId": {id: email}},      # optional, cloud only
     "device": [["identify", {...}], ...],                                   # optional
     "cloud": [{"path": "/v2/{account}/subscribers", "body": {...}}, ...]    # or {"skipped": reason}
                                                                             # or {"invalid": error}
     "remembers": [["userId", id, email], ...]}                              # optional, checked if present

Other test modules read it with `load_table()` (the relay's integration tests send the same calls
through the real server and compare what the Drip API emulator received with "cloud").
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from conftest import DripPage
from driptag import Settings
from driptag.relay.mapping import InvalidMessage, map_message, drip_requests

TABLE_PATH = Path(__file__).with_name("mapping_cases.json")
CASE_KEYS = {"name", "settings", "call", "remembered", "device", "cloud", "remembers"}
SETTING_KEYS = {"keyStyle", "campaignId"}


def load_table() -> dict[str, Any]:
    """The table: {"about": [...], "account": "...", "cases": [...]}."""
    return json.loads(TABLE_PATH.read_text(encoding="utf-8"))


TABLE = load_table()
ACCOUNT: str = TABLE["account"]
CASES: list[dict[str, Any]] = TABLE["cases"]


def strict(value: Any) -> Any:
    """A value to compare exactly: Python's == takes True for 1 and 0 for False; here they differ.
    Numbers compare by value (JavaScript has one number type: 2 and 2.0 are the same)."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return (type(value).__name__, value)
    if isinstance(value, (int, float)):
        return ("number", float(value))
    if isinstance(value, dict):
        return ("object", {key: strict(item) for key, item in value.items()})
    if isinstance(value, (list, tuple)):
        return ("array", [strict(item) for item in value])
    raise TypeError(f"not JSON data: {value!r}")


def cases_with(mode: str) -> list:
    return [pytest.param(case, id=case["name"]) for case in CASES if mode in case]


def settings_of(case: dict[str, Any]) -> tuple[str, str | None]:
    settings = case.get("settings", {})
    return settings.get("keyStyle", "segment"), settings.get("campaignId")


def test_table_cases_are_well_formed():
    names = [case.get("name") for case in CASES]
    assert len(set(names)) == len(names), f"case names repeat: {sorted(n for n in names if names.count(n) > 1)}"
    for case in CASES:
        name = case.get("name")
        assert isinstance(name, str) and name, f"a case without a name: {case!r}"
        assert set(case) <= CASE_KEYS, f"{name}: unknown keys {sorted(set(case) - CASE_KEYS)}"
        assert set(case.get("settings", {})) <= SETTING_KEYS, f"{name}: unknown settings {case['settings']}"
        assert isinstance(case.get("call"), dict) and "type" in case["call"], f"{name}: no call with a type"
        assert "device" in case or "cloud" in case, f"{name}: expects nothing in either mode"
        assert "remembered" not in case or "device" not in case, f"{name}: remembered e-mails exist in cloud mode only"
        cloud = case.get("cloud", [])
        assert isinstance(cloud, list) or (isinstance(cloud, dict) and len(cloud) == 1
                                           and set(cloud) <= {"skipped", "invalid"}), f"{name}: bad cloud {cloud!r}"


# The relay: map_message, no server


def cloud_result(case: dict[str, Any]) -> tuple[Any, list[list[str]] | None]:
    """What the relay makes of the case's call: (requests or {"skipped"|"invalid": ...}, remembered triples)."""
    key_style, campaign_id = settings_of(case)
    remembered = case.get("remembered", {})

    def recall(kind: str, ident: str) -> str | None:
        return remembered.get(kind, {}).get(ident)

    try:
        mapped = map_message(case["call"], key_style=key_style, campaign_id=campaign_id, recall=recall)
    except InvalidMessage as error:
        return {"invalid": str(error)}, None
    remember = [list(triple) for triple in mapped.remember]
    if mapped.skipped is not None:
        assert mapped.records == (), f"skipped ({mapped.skipped}) and yet records: {mapped.records}"
        return {"skipped": mapped.skipped}, remember
    for record in mapped.records:
        assert record.email == record.record["email"], f"record for {record.email} carries {record.record['email']}"
        assert (record.campaign_id is not None) == (record.kind == "campaign"), f"campaign_id on a {record.kind} record"
    return drip_requests(ACCOUNT, mapped.records), remember


@pytest.mark.parametrize("case", cases_with("cloud"))
def test_relay_mapping(case):
    requests, remember = cloud_result(case)
    assert strict(requests) == strict(case["cloud"]), \
        f"{case['name']}: the relay would send {requests!r}, expected {case['cloud']!r}"
    if "remembers" in case:
        assert strict(remember) == strict(case["remembers"]), \
            f"{case['name']}: the relay remembers {remember!r}, expected {case['remembers']!r}"


# The loader, in Chromium: one page per combination of settings, every case of it run there

RUN_CALLS = """cases => cases.map(c => {
  const before = window.__pushed.length, options = {};
  for (const key of ["integrations", "timestamp", "context"]) if (key in c) options[key] = c[key];
  if (c.type === "identify") {
    if ("userId" in c) analytics.identify(c.userId, c.traits || {}, options);
    else analytics.identify(c.traits || {}, options);
  } else if (c.type === "track") {
    analytics.track(c.event, c.properties || {}, options);
  } else {
    analytics[c.type](c.properties || c.traits || {}, options);
  }
  return window.__pushed.slice(before);
})"""


@pytest.fixture(scope="module")
def loader_pushes(browser, site):
    """{case name: the commands the loader pushed for its call}, filled a settings group at a time."""
    context = browser.new_context()
    results: dict[str, list] = {}

    def pushed_for(case: dict[str, Any]) -> list:
        if case["name"] not in results:
            key_style, campaign_id = settings_of(case)
            group = [c for c in CASES if "device" in c and settings_of(c) == (key_style, campaign_id)]
            drip = DripPage(context.new_page(), site)
            drip.open(Settings(account=ACCOUNT, key_style=key_style, campaign_id=campaign_id), spy=True, hold=True)
            pushed = drip.run(RUN_CALLS, [c["call"] for c in group])
            assert drip.page_errors == [], f"errors in the page: {drip.page_errors}"
            results.update(zip((c["name"] for c in group), pushed))
        return results[case["name"]]

    yield pushed_for
    context.close()


@pytest.mark.parametrize("case", cases_with("device"))
def test_loader_mapping(case, loader_pushes):
    pushed = loader_pushes(case)
    assert strict(pushed) == strict(case["device"]), \
        f"{case['name']}: the loader pushed {pushed!r}, expected {case['device']!r}"
