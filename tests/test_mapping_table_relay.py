"""The table of mapping cases through the running relay: each case's call is sent over HTTP, stored, delivered,
and the Drip API emulator must receive exactly the requests the table expects — so ingest, spool and delivery
change nothing of what the mapping makes.

Each case gets its own source and its own Drip account (83700000 + its index), so that what one case teaches
the relay (a remembered e-mail) cannot leak into another, and each account's requests are that case's alone.
A case's `remembered` e-mails are put into the relay's people table before its call is sent.
"""

from __future__ import annotations

import datetime
import json
import time
from typing import Any

import httpx

from relay_support import TOKEN, drip_api, relay_in_process, wait_for
from test_mapping_table import ACCOUNT, CASES, strict

CLOUD_CASES = [(index, case) for index, case in enumerate(CASES) if "cloud" in case]


def account_of(index: int) -> str:
    return str(83_700_000 + index)


def write_key_of(index: int) -> str:
    return f"case-{index}"


def expected_requests(index: int, case: dict[str, Any]) -> list[dict[str, Any]]:
    return json.loads(json.dumps(case["cloud"]).replace(f"/v2/{ACCOUNT}/", f"/v2/{account_of(index)}/"))


def undated(sent: list[dict[str, Any]], expected: list[dict[str, Any]], since: str) -> list[dict[str, Any]]:
    """`sent` without the acceptance time the relay gives an event the mapping left undated (Drip would
    otherwise date it on delivery); that time must be one of this test's run."""
    result = []
    for request, wanted in zip(sent, expected):
        body = json.loads(json.dumps(request["body"]))
        for event, wanted_event in zip(body.get("events", []), wanted["body"].get("events", [])):
            if "occurred_at" not in wanted_event and "occurred_at" in event:
                dated = event.pop("occurred_at")
                assert isinstance(dated, str) and dated >= since, f"not an acceptance time of this run: {dated!r}"
        result.append({**request, "body": body})
    return result + sent[len(expected):]


def test_every_cloud_case_through_the_running_relay(tmp_path):
    campaigns = {part.split("/")[4] for _, case in CLOUD_CASES if isinstance(case["cloud"], list)
                 for request in case["cloud"] for part in [request["path"]] if "/campaigns/" in part}
    sources = [{"writeKey": write_key_of(index), "account": account_of(index), "apiToken": TOKEN,
                **case.get("settings", {})} for index, case in CLOUD_CASES]
    tokens = {account_of(index): TOKEN for index, _ in CLOUD_CASES}
    since = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    with drip_api(DRIP_API_TOKENS=tokens, DRIP_API_CAMPAIGNS=sorted(campaigns | {"1234567"}),
                  DRIP_API_CONCURRENCY_CHECK=False) as drip, \
            relay_in_process(tmp_path, drip, *sources) as relay:
        for index, case in CLOUD_CASES:
            source = relay.config.source_for(write_key_of(index))
            source_id = relay.spool.source_id(source)
            for kind, known in case.get("remembered", {}).items():
                for ident, email in known.items():
                    relay.spool.run(lambda db, k=kind, i=ident, e=email: db.execute(
                        "INSERT INTO people (source_id, id_kind, ident, email, updated_at) VALUES (?, ?, ?, ?, ?)",
                        (source_id, k, i, e, time.time())))
            answer = httpx.post(f"{relay.url}/v1/batch", json={"batch": [case["call"]]},
                                auth=(write_key_of(index), ""), timeout=10)
            assert answer.json() == {"success": True}, f"{case['name']}: {answer.status_code} {answer.text}"
        wait_for(lambda: relay.spool.pending == 0, "every case's records left the spool", timeout=60)
        sent: dict[str, list[dict[str, Any]]] = {}
        for request in drip.api_requests():
            sent.setdefault(request["account"], []).append(
                {"path": request["path"].removeprefix("/emulator/api"), "body": request["body"]})
        stats = dict(((row[0], row[1]), row[2]) for row in relay.spool.reader().execute(
            "SELECT s.write_key, st.name, sum(st.n) FROM stats st JOIN sources s ON s.id = st.source_id "
            "WHERE st.name LIKE 'skipped:%' GROUP BY s.write_key, st.name"))
        failures = []
        for index, case in CLOUD_CASES:
            expected = case["cloud"]
            got = sent.get(account_of(index), [])
            if isinstance(expected, list):
                got = undated(got, expected_requests(index, case), since)
            if isinstance(expected, dict):  # nothing sent, and the reason counted
                reason = expected.get("skipped") or "invalid"
                counted = stats.get((write_key_of(index), f"skipped:{reason}"))
                if got or counted != 1:
                    failures.append(f"{case['name']}: expected {expected}, sent {got}, counted {counted}")
            elif strict(got) != strict(expected_requests(index, case)):
                failures.append(f"{case['name']}:\n  sent     {got}\n  expected {expected_requests(index, case)}")
        assert not failures, f"{len(failures)} of {len(CLOUD_CASES)} cases differ:\n" + "\n".join(failures)
