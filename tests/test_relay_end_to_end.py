"""The relay end to end: Segment's own Python library sends, the relay stores and delivers, and the Drip API
emulator receives the exact REST requests. Also each of Drip's answers as the emulator gives it, backlogs
in batches, quotas, remembered e-mails, status and dead letters, and the API token kept secret."""

from __future__ import annotations

import datetime
import json
import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest
from segment.analytics import Client

from relay_support import ACCOUNT, CAMPAIGN, TOKEN, WRITE_KEY, RelayProcess, drip_api, relay_in_process, source, \
    wait_for, write_config

PLUS_TWO = datetime.timezone(datetime.timedelta(hours=2))


def segment_client(relay) -> tuple[Client, list]:
    errors: list = []
    client = Client(WRITE_KEY, host=relay.url, sync_mode=True, max_retries=0,
                    on_error=lambda error, batch: errors.append(error))
    return client, errors


def post(relay, path: str, body: dict, write_key: str = WRITE_KEY) -> httpx.Response:
    return httpx.post(relay.url + path, json=body, auth=(write_key, ""), timeout=10)


def test_analytics_python_identify_and_track_reach_drip_as_rest_requests(tmp_path):
    with drip_api() as drip, relay_in_process(tmp_path, drip, source(campaignId=CAMPAIGN)) as relay:
        client, errors = segment_client(relay)
        client.identify("u1", {"email": "ann@example.com", "firstName": "Ann", "some trait": "yes"})
        client.track("u1", "Order Completed", {"revenue": 19.99, "sku": "B-1"},
                     timestamp=datetime.datetime(2026, 12, 1, 12, 30, tzinfo=PLUS_TWO))
        client.flush()
        assert errors == [], f"the Segment client reported errors: {errors}"
        wait_for(lambda: drip.records("events"), "the event reached Drip")
        subscriber = {"email": "ann@example.com", "user_id": "u1", "first_name": "Ann",
                      "custom_fields": {"some_trait": "yes", "id": "u1"}}
        assert drip.records("subscribers") == [subscriber]
        wait_for(lambda: drip.records("campaign_subscriptions"), "the campaign subscription reached Drip")
        assert drip.records("campaign_subscriptions") == [
            {"email": "ann@example.com", "user_id": "u1", "custom_fields": {"some_trait": "yes", "id": "u1"}}]
        assert drip.records("events") == [{"email": "ann@example.com", "action": "Order Completed",
                                           "properties": {"sku": "B-1", "value": 1999},
                                           "occurred_at": "2026-12-01T10:30:00.000Z"}]
        paths = [(r["path"], r["status"]) for r in drip.api_requests()]
        upsert = paths.index(("/emulator/api/v2/83702741/subscribers", 200))
        campaign = paths.index((f"/emulator/api/v2/83702741/campaigns/{CAMPAIGN}/subscribers", 200))
        assert upsert < campaign, f"the campaign subscription must follow the upsert: {paths}"
        assert all(r["auth"] for r in drip.api_requests()), "every request carried the account's token"


def test_a_server_side_track_without_email_reaches_drip_once_the_user_was_identified(tmp_path):
    with drip_api() as drip, relay_in_process(tmp_path, drip) as relay:
        client, errors = segment_client(relay)
        client.track("u9", "Before identify")  # nobody knows u9's e-mail yet: skipped
        client.identify("u9", {"email": "bo@example.com"})
        client.track("u9", "Signed Up", {"plan": "pro"})
        client.flush()
        assert errors == []
        events = wait_for(lambda: drip.records("events"), "the later track reached Drip")
        assert [(e["email"], e["action"], e["properties"]) for e in events] == \
            [("bo@example.com", "Signed Up", {"plan": "pro"})]


def test_a_message_id_sent_twice_is_delivered_once(tmp_path):
    message = {"type": "track", "userId": "u1", "event": "Paid", "messageId": "same-id",
               "properties": {"email": "ann@example.com"}}
    with drip_api() as drip, relay_in_process(tmp_path, drip) as relay:
        assert post(relay, "/v1/track", message).json() == {"success": True}
        assert post(relay, "/v1/batch", {"batch": [message, message]}).json() == {"success": True}
        wait_for(lambda: relay.spool.pending == 0 and drip.records("events"), "the event was delivered")
        assert [e["action"] for e in drip.records("events")] == ["Paid"]


def events(count: int, people: int = 1000, start: int = 0) -> list[dict]:
    return [{"type": "track", "userId": f"u{n % people}", "event": f"Event {n}", "messageId": f"m{n}",
             "properties": {"email": f"p{n % people}@example.com", "n": n}} for n in range(start, start + count)]


def test_a_backlog_of_3000_events_goes_in_batches(tmp_path):
    with drip_api() as drip:
        drip.state.inject("503", count=1)  # the first request fails, so the backlog builds up behind it
        with relay_in_process(tmp_path, drip) as relay:
            for first in range(0, 3000, 500):
                assert post(relay, "/v1/batch", {"batch": events(500, start=first)}).status_code == 200
            wait_for(lambda: len(drip.records("events")) == 3000, "all 3,000 events reached Drip", timeout=30)
            delivered = sorted(e["properties"]["n"] for e in drip.records("events"))
            assert delivered == list(range(3000)), "every event exactly once"
            batches = [r for r in drip.api_requests() if r["path"].endswith("/events/batches")]
            assert len(drip.api_requests()) <= 10, f"{len(drip.api_requests())} requests for 3,000 events"
            assert max(len(r["body"]["batches"][0]["events"]) for r in batches) == 1000


def test_quotas_are_never_exceeded_and_a_backlog_still_drains(tmp_path):
    limits = {"single": 10, "batch": 2, "windowSeconds": 3}
    with drip_api(DRIP_API_SINGLE_PER_HOUR=10, DRIP_API_BATCH_PER_HOUR=2, DRIP_API_WINDOW_SECONDS=3) as drip, \
            relay_in_process(tmp_path, drip, source(rateLimits=limits)) as relay:
        for first in range(0, 2500, 500):
            assert post(relay, "/v1/batch", {"batch": events(500, people=2500, start=first)}).status_code == 200
        wait_for(lambda: len(drip.records("events")) == 2500, "all 2,500 events reached Drip", timeout=40)
        statuses = [r["status"] for r in drip.api_requests()]
        assert 429 not in statuses, f"the emulator's quota answered 429: {statuses}"


def test_each_of_drips_answers_ends_delivered_or_in_the_dead_letters(tmp_path, monkeypatch):
    # Seven failures in a row double the back-off six times: from 1 s that is half a minute of waiting, from
    # 0.1 s a few seconds, for the same decisions.
    monkeypatch.setattr("driptag.relay.delivery.BACKOFF_FIRST", 0.1)
    with drip_api() as drip, relay_in_process(tmp_path, drip) as relay:
        faults = ("500", "502", "503", "429", "concurrency", "drop", "reset")
        for n, fault in enumerate(faults):
            drip.state.inject(fault, count=1, seconds=1)
            assert post(relay, "/v1/track", events(1, start=n)[0]).status_code == 200
        wait_for(lambda: relay.spool.pending == 0, "every event delivered", timeout=60)
        assert sorted(e["properties"]["n"] for e in drip.records("events")) == list(range(len(faults)))
        assert [r["fault"] for r in drip.api_requests()][:len(faults)] == list(faults)


def test_429_without_retry_after_pauses_that_class_for_the_hour_and_the_other_class_carries_on(tmp_path):
    with drip_api() as drip, relay_in_process(tmp_path, drip) as relay:
        drip.state.inject("429-no-retry-after", count=1)
        assert post(relay, "/v1/track", events(1)[0]).status_code == 200
        wait_for(lambda: drip.records("events"), "the event was delivered")
        assert relay.spool.paused_until(ACCOUNT, "single") > time.time() + 3500, "single requests wait for the hour"
        assert [(r["path"].rsplit("/", 1)[-1], r["status"]) for r in drip.api_requests()] == \
            [("events", 429), ("batches", 201)]


def test_a_timeout_is_retried(tmp_path):
    with drip_api() as drip, relay_in_process(tmp_path, drip) as relay:
        drip.state.inject("timeout", count=1, seconds=30)  # held far longer than the client waits
        relay.delivery.senders[WRITE_KEY].client = _short_timeout_client(drip.url)
        assert post(relay, "/v1/track", events(1)[0]).status_code == 200
        wait_for(lambda: drip.records("events"), "the event was delivered after the timeout", timeout=20)
        assert drip.state.faults() == [], "the first request met the held answer"
        timeouts = relay.metrics.registry.get_sample_value("driptag_relay_drip_responses_total", {"status": "timeout"})
        assert timeouts == 1


def _short_timeout_client(url: str):
    from driptag.relay.drip_client import DripClient
    return DripClient(url, read_timeout=0.5)


def test_422_for_a_single_record_is_a_dead_letter_with_drips_error(tmp_path):
    with drip_api() as drip, relay_in_process(tmp_path, drip) as relay:
        message = {"type": "track", "userId": "u1", "event": "Paid", "properties": {"email": "ann@example.com"}}
        drip.state.inject("422", count=1)
        assert post(relay, "/v1/track", message).status_code == 200
        wait_for(lambda: relay.spool.pending == 0, "the record left the spool")
        (letter,) = relay.spool.reader().execute("SELECT kind, status, error FROM dead_letters").fetchall()
        assert letter[:2] == ("event", 422) and letter[2].startswith("422: "), letter


def test_a_batch_drip_refuses_is_retried_as_single_requests(tmp_path):
    good = events(30, people=30)
    bad = dict(good[7], properties={"email": "p7@example.com", "n": 7, "value": -5})  # Drip refuses value < 0
    with drip_api() as drip:
        drip.state.inject("503", count=1)
        with relay_in_process(tmp_path, drip) as relay:
            assert post(relay, "/v1/batch", {"batch": good[:7] + [bad] + good[8:]}).status_code == 200
            wait_for(lambda: relay.spool.pending == 0, "every record delivered or dead", timeout=30)
            assert sorted(e["properties"]["n"] for e in drip.records("events")) == [n for n in range(30) if n != 7]
            (letter,) = relay.spool.reader().execute("SELECT status FROM dead_letters").fetchall()
            assert letter == (422,)


def test_401_pauses_until_the_configuration_has_a_new_token_and_nothing_is_lost(tmp_path):
    with drip_api() as drip:
        config = write_config(tmp_path / "relay.json", source(apiToken="wrong0token0of0twenty0x"))
        relay = RelayProcess(config, tmp_path / "spool.sqlite3", drip.url).wait_serving()
        try:
            assert post(relay, "/v1/track", events(1)[0]).status_code == 200
            relay.wait_for_line("rejected the API token")
            status = json.loads(subprocess.run([sys.executable, "-m", "driptag", "relay", "status", "--json",
                                                "--spool", str(tmp_path / "spool.sqlite3")],
                                               capture_output=True, text=True, check=True).stdout)
            assert status["sources"][0]["paused"] == "credentials rejected"
            assert status["pending"] == 1
            write_config(config, source())
            wait_for(lambda: drip.records("events"), "the event was delivered with the corrected token", timeout=20)
            assert relay.signal(signal.SIGTERM) == 0
        finally:
            if relay.proc.poll() is None:
                relay.kill()
        assert "wrong0token0of0twenty0x" not in relay.stderr and TOKEN not in relay.stderr
        assert "HTTP Request:" not in relay.stderr, f"the log has a line per Drip request: {relay.stderr}"


def test_sigterm_drains_and_exits_0_and_a_restart_continues(tmp_path):
    with drip_api() as drip:
        config = write_config(tmp_path / "relay.json", source())
        spool = tmp_path / "spool.sqlite3"
        drip.state.inject("503", count=1_000)  # Drip is down: everything waits in the spool
        relay = RelayProcess(config, spool, drip.url).wait_serving()
        assert post(relay, "/v1/batch", {"batch": events(50)}).status_code == 200
        started = time.monotonic()
        assert relay.signal(signal.SIGTERM) == 0
        assert time.monotonic() - started < 10
        drip.state.clear_faults()
        again = RelayProcess(config, spool, drip.url).wait_serving()
        try:
            wait_for(lambda: len(drip.records("events")) == 50, "the restarted relay delivered the 50 events")
        finally:
            assert again.signal(signal.SIGINT) == 0


def test_a_second_relay_on_the_same_spool_refuses_with_one_line(tmp_path):
    with drip_api() as drip:
        config = write_config(tmp_path / "relay.json", source())
        first = RelayProcess(config, tmp_path / "spool.sqlite3", drip.url).wait_serving()
        try:
            second = subprocess.run([sys.executable, "-m", "driptag", "relay", "serve", "--config", str(config),
                                     "--spool", str(tmp_path / "spool.sqlite3"), "--port", "0",
                                     "--drip-api", drip.url], capture_output=True, text=True, timeout=20)
            assert (second.returncode, second.stderr) == (2, f"driptag: another relay is already serving the spool "
                                                             f"{tmp_path / 'spool.sqlite3'} (one relay per spool: "
                                                             "two would send everything twice)\n")
        finally:
            assert first.signal(signal.SIGTERM) == 0


def test_status_and_dead_letters_show_no_token(tmp_path):
    with drip_api() as drip, relay_in_process(tmp_path, drip) as relay:
        drip.state.inject("422", count=1)
        post(relay, "/v1/track", events(1)[0])
        post(relay, "/v1/track", {"type": "track", "userId": "nobody", "event": "X"})  # no e-mail: skipped
        wait_for(lambda: relay.spool.pending == 0, "the record left the spool")
        spool = str(tmp_path / "relay.sqlite3")
        run = lambda *args: subprocess.run([sys.executable, "-m", "driptag", "relay", *args, "--spool", spool],
                                           capture_output=True, text=True, timeout=20)
        text = run("status")
        assert text.returncode == 0, text.stderr
        assert f"source {ACCOUNT} (write key …-key)\n" in text.stdout
        assert "skipped: no email 1" in text.stdout and "dead letters: 1" in text.stdout
        letters = run("dead-letters", "--json")
        (letter,) = json.loads(letters.stdout)
        assert (letter["kind"], letter["status"], letter["email"]) == ("event", 422, "p0@example.com")
        for output in (text.stdout, text.stderr, letters.stdout, letters.stderr):
            assert TOKEN not in output and WRITE_KEY not in output
        retried = run("dead-letters", "--retry")
        assert retried.stdout == "1 dead letter(s) queued again\n"
        wait_for(lambda: len(drip.records("events")) == 1, "the retried dead letter was delivered", timeout=20)


def test_drip_api_must_be_https_or_loopback(tmp_path):
    config = write_config(tmp_path / "relay.json", source())
    result = subprocess.run([sys.executable, "-m", "driptag", "relay", "serve", "--config", str(config),
                             "--drip-api", "http://api.getdrip.com"], capture_output=True, text=True, timeout=20)
    assert (result.returncode, result.stderr) == (
        2, "driptag: --drip-api: 'http://api.getdrip.com': http:// is only for a loopback address (the emulator); "
           "use https://\n")


@pytest.mark.parametrize("content, line", [
    ('{"sources": [{"writeKey": "k", "account": "83702741", "apiToken": "${NOT_SET_ANYWHERE}"}]}',
     "relay.json: sources[0].apiToken: the environment variable NOT_SET_ANYWHERE is not set"),
    ("{", "relay.json: not valid JSON ("),
])
def test_a_bad_configuration_is_one_line_and_exit_2(tmp_path, content, line):
    (tmp_path / "relay.json").write_text(content, encoding="utf-8")
    result = subprocess.run([sys.executable, "-m", "driptag", "relay", "serve", "--config", "relay.json"],
                            capture_output=True, text=True, timeout=20, cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.startswith(f"driptag: {line}"), result.stderr
    assert result.stderr.count("\n") == 1


def test_a_busy_port_is_one_line_and_the_spool_is_free_again(tmp_path):
    config = write_config(tmp_path / "relay.json", source())
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        serve = [sys.executable, "-m", "driptag", "relay", "serve", "--config", str(config), "--spool",
                 str(tmp_path / "spool.sqlite3"), "--drip-api", "http://127.0.0.1:9"]
        result = subprocess.run([*serve, "--port", str(port)], capture_output=True, text=True, timeout=20)
    assert (result.returncode, result.stderr) == (1, f"driptag: cannot listen on 127.0.0.1:{port}: "
                                                     "Address already in use\n")
    relay = RelayProcess(config, tmp_path / "spool.sqlite3", "http://127.0.0.1:9").wait_serving()
    assert relay.signal(signal.SIGTERM) == 0, "the failed start released the spool's lock"


def test_a_host_that_does_not_resolve_is_one_line_and_creates_no_spool(tmp_path):
    config = write_config(tmp_path / "relay.json", source())
    result = subprocess.run([sys.executable, "-m", "driptag", "relay", "serve", "--config", str(config), "--spool",
                             str(tmp_path / "spool.sqlite3"), "--host", "no-such-host.invalid", "--port", "8088"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 1 and result.stderr.startswith(
        "driptag: cannot listen on no-such-host.invalid:8088: "), result.stderr
    assert result.stderr.count("\n") == 1 and "unexpected" not in result.stderr, result.stderr
    assert not (tmp_path / "spool.sqlite3").exists()


def test_a_reload_adds_and_removes_sources_keeps_an_invalid_file_out_and_delivers_what_was_accepted(tmp_path):
    from driptag.relay.service import Relay

    with drip_api() as drip:
        config = write_config(tmp_path / "relay.json", source())
        relay = Relay(config, tmp_path / "relay.sqlite3", drip.url)
        host, port = relay.start("127.0.0.1", 0)
        relay.url = f"http://{host}:{port}"
        try:
            drip.state.inject("503", count=1)  # the first request fails: what the first source accepts waits
            assert post(relay, "/v1/track", events(1)[0]).status_code == 200

            config.write_text("{not json", encoding="utf-8")
            assert relay.reload() is False, "an invalid file must not replace the running configuration"
            assert post(relay, "/v1/track", events(1, start=1)[0]).status_code == 200

            write_config(config, source(writeKey="second-write-key"))  # the first source removed, another added
            assert relay.reload() is True
            assert relay.spool.pending >= 1, "the first source's records should still be waiting"
            assert post(relay, "/v1/track", events(1, start=2)[0]).status_code == 401, "a removed write key"
            assert post(relay, "/v1/track", events(1, start=3)[0], write_key="second-write-key").status_code == 200

            wait_for(lambda: len(drip.records("events")) == 3, "what both sources accepted reached Drip")
            assert sorted(e["properties"]["n"] for e in drip.records("events")) == [0, 1, 3]
        finally:
            relay.stop()


def test_sighup_reloads_the_configuration_even_when_the_file_looks_unchanged(tmp_path):
    with drip_api() as drip:
        config = write_config(tmp_path / "relay.json", source(writeKey="first-key"))
        relay = RelayProcess(config, tmp_path / "spool.sqlite3", drip.url).wait_serving()
        try:
            # Same size and modification time: only the signal can make the relay read it again. (Written
            # beside it, then renamed over it, so the relay never sees a moment where the file changed.)
            before = config.stat()
            replacement = write_config(tmp_path / "relay.json.new", source(writeKey="other-key"))
            os.utime(replacement, ns=(before.st_atime_ns, before.st_mtime_ns))
            os.replace(replacement, config)
            assert (config.stat().st_size, config.stat().st_mtime_ns) == (before.st_size, before.st_mtime_ns)
            assert post(relay, "/v1/track", events(1)[0], write_key="other-key").status_code == 401
            relay.proc.send_signal(signal.SIGHUP)
            relay.wait_for_line("configuration reloaded: 1 source")
            assert post(relay, "/v1/track", events(1)[0], write_key="other-key").status_code == 200
            assert post(relay, "/v1/track", events(1, start=1)[0], write_key="first-key").status_code == 401
            wait_for(lambda: drip.records("events"), "the event sent with the reloaded write key reached Drip")
            assert relay.signal(signal.SIGTERM) == 0
        finally:
            if relay.proc.poll() is None:
                relay.kill()
