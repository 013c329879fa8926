"""The emulator's collector at /emulator/events, through Flask's test client and, for
chunked bodies, a real werkzeug server. Each test gets a fresh app, hence a fresh collector."""

from __future__ import annotations

import http.client
import json
import threading

import pytest
from flask import Flask, request
from werkzeug.serving import make_server

from driptag.emulators.trackjs import MAX_BODY_BYTES, MAX_REPORTS, Collector, bp, collector_for

URL = "/emulator/events"


@pytest.fixture
def app() -> Flask:
    app = Flask("collector-tests")
    app.register_blueprint(bp)

    @app.post("/other")
    def other():  # another route of the same app: the collector's limit must not apply here
        return {"bytes": len(request.get_data())}

    return app


@pytest.fixture
def client(app):
    return app.test_client()


def post(client, body, content_type="application/json", **kwargs):
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return client.post(URL, data=data, content_type=content_type, **kwargs)


def padded(size: int) -> bytes:
    """A valid one-report JSON body of exactly `size` bytes."""
    head, tail = b'{"account":"1","pad":"', b'"}'
    return head + b"x" * (size - len(head) - len(tail)) + tail


def assert_error(response, status: int, fragment: str) -> None:
    assert response.status_code == status, (
        f"expected {status}, got {response.status_code}: {response.get_data(as_text=True)[:300]!r}")
    body = response.get_json(silent=True)
    assert isinstance(body, dict) and fragment in body.get("error", ""), f"error body: {body!r}"


# -------------------------------------------------------------------------------------------------
# Storing and reading


def test_post_one_report_stores_it_as_is_with_an_arrival_index(client, app):
    report = {"seq": 1, "account": "83702741", "command": ["track", "Viewed", {"a": [1, None, True]}],
              "answer": "success", "response": {"success": True}, "page": "p1", "url": "http://x/"}
    response = post(client, report)
    assert response.status_code == 200 and response.get_json() == {"stored": 1, "n": [1]}, response.get_json()
    assert client.get(URL).get_json() == [dict(report, n=1)]
    assert collector_for(app).reports() == [dict(report, n=1)]


def test_post_a_list_stores_every_report_in_order(client):
    response = post(client, [{"seq": i, "account": "1"} for i in range(1, 6)])
    assert response.get_json() == {"stored": 5, "n": [1, 2, 3, 4, 5]}, response.get_json()
    post(client, {"seq": 6, "account": "1"})
    got = client.get(URL).get_json()
    assert [(r["seq"], r["n"]) for r in got] == [(i, i) for i in range(1, 7)], got


def test_empty_list_stores_nothing(client):
    response = post(client, [])
    assert response.status_code == 200 and response.get_json() == {"stored": 0, "n": []}
    assert client.get(URL).get_json() == []


def test_get_filters_by_account(client, app):
    post(client, [{"account": "111", "i": 1}, {"account": "222", "i": 2}, {"account": 111, "i": 3},
                  {"i": 4}, {"account": True, "i": 5}, {"account": ["111"], "i": 6}])
    assert [r["i"] for r in client.get(URL + "?account=111").get_json()] == [1, 3]
    assert [r["i"] for r in client.get(URL + "?account=222").get_json()] == [2]
    assert client.get(URL + "?account=333").get_json() == []
    assert [r["i"] for r in client.get(URL).get_json()] == [1, 2, 3, 4, 5, 6]
    assert [r["i"] for r in collector_for(app).reports(account="111")] == [1, 3]


def test_get_after_returns_only_newer_reports(client):
    post(client, [{"i": i} for i in range(5)])
    assert [r["n"] for r in client.get(URL + "?after=3").get_json()] == [4, 5]
    assert_error(client.get(URL + "?after=-1"), 400, "after")
    assert_error(client.get(URL + "?after=abc"), 400, "after")


def test_delete_clears_with_204_and_indexes_go_on(client, app):
    post(client, [{"i": 1}, {"i": 2}])
    response = client.delete(URL)
    assert response.status_code == 204 and response.get_data() == b""
    assert client.get(URL).get_json() == []
    post(client, {"i": 3})
    assert client.get(URL).get_json() == [{"i": 3, "n": 3}]
    collector_for(app).clear()
    assert len(collector_for(app)) == 0


def test_cap_keeps_the_last_10000_reports_and_drops_the_oldest(client):
    total = MAX_REPORTS + 7
    for start in range(0, total, 4000):  # each body well under 64 KiB
        response = post(client, [{"i": i} for i in range(start, min(start + 4000, total))])
        assert response.status_code == 200, response.get_json()
    got = client.get(URL).get_json()
    assert len(got) == MAX_REPORTS == 10_000
    assert (got[0], got[-1]) == ({"i": 7, "n": 8}, {"i": total - 1, "n": total}), (got[0], got[-1])


def test_reports_are_copies(app):
    collector = collector_for(app)
    collector.add([{"a": {"b": 1}}])
    collector.reports()[0]["a"]["b"] = 2
    assert collector.reports() == [{"a": {"b": 1}, "n": 1}]


def test_each_app_has_its_own_collector():
    first, second = Flask("a"), Flask("b")
    assert collector_for(first) is collector_for(first)
    assert collector_for(first) is not collector_for(second)
    assert isinstance(collector_for(first), Collector)


def test_collector_is_thread_safe():
    collector = Collector()
    indexes: list[int] = []
    lock = threading.Lock()

    def worker():
        for _ in range(200):
            got = collector.add([{"x": 1}, {"x": 2}])
            with lock:
                indexes.extend(got)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(indexes) == list(range(1, 3201))
    assert [r["n"] for r in collector.reports()] == list(range(1, 3201))


# -------------------------------------------------------------------------------------------------
# Size limit


def test_body_of_exactly_64_kib_is_accepted(client):
    response = post(client, padded(MAX_BODY_BYTES))
    assert response.status_code == 200, response.get_json()


def test_body_over_64_kib_by_content_length_is_413(client):
    assert_error(post(client, padded(MAX_BODY_BYTES + 1)), 413, "larger than 65536 bytes")
    assert client.get(URL).get_json() == []


@pytest.mark.parametrize("content_type", ["text/plain", None])
def test_body_over_64_kib_is_413_whatever_its_content_type(client, content_type):
    response = client.post(URL, data=padded(MAX_BODY_BYTES + 1), content_type=content_type)
    assert_error(response, 413, "larger than 65536 bytes")


def test_declared_content_length_over_64_kib_is_413_before_reading(client):
    for declared in (MAX_BODY_BYTES + 1, MAX_BODY_BYTES + 2, 10**12):
        response = client.post(URL, data=b"{}", content_type="application/json",
                               environ_overrides={"CONTENT_LENGTH": str(declared)})
        assert_error(response, 413, "larger than")


def test_chunked_body_over_64_kib_is_413(client):
    # What a server that de-chunks (like werkzeug's) hands over: no Content-Length, a terminated stream.
    response = client.post(URL, data=padded(MAX_BODY_BYTES + 1), content_type="application/json",
                           headers={"Transfer-Encoding": "chunked"},
                           environ_overrides={"wsgi.input_terminated": True})
    assert_error(response, 413, "larger than")
    response = client.post(URL, data=padded(MAX_BODY_BYTES * 3), content_type="application/json",
                           headers={"Transfer-Encoding": "chunked"},
                           environ_overrides={"wsgi.input_terminated": True})
    assert_error(response, 413, "larger than")
    assert client.get(URL).get_json() == []
    small = client.post(URL, data=padded(100), content_type="application/json",
                        headers={"Transfer-Encoding": "chunked"}, environ_overrides={"wsgi.input_terminated": True})
    assert small.status_code == 200, small.get_json()


@pytest.fixture
def live(app):
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_port
    server.shutdown()


def chunked_post(port: int, body: bytes) -> tuple[int, dict]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        chunks = (body[i:i + 4096] for i in range(0, len(body), 4096))
        connection.request("POST", URL, body=chunks, headers={"Content-Type": "application/json"},
                           encode_chunked=True)
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        connection.close()


def test_chunked_body_over_64_kib_is_413_on_a_real_server(live, app):
    status, body = chunked_post(live, padded(MAX_BODY_BYTES + 4096))
    assert (status, body) == (413, {"error": "the body is larger than 65536 bytes"}), (status, body)
    status, body = chunked_post(live, padded(MAX_BODY_BYTES))
    assert (status, body) == (200, {"stored": 1, "n": [1]}), (status, body)
    assert len(collector_for(app)) == 1


def test_limit_applies_to_the_collector_only(client, app):
    big = b"x" * (MAX_BODY_BYTES * 2)
    response = client.post("/other", data=big)
    assert response.status_code == 200 and response.get_json() == {"bytes": len(big)}
    assert app.config["MAX_CONTENT_LENGTH"] is None


# -------------------------------------------------------------------------------------------------
# Bad input: 400 with a JSON message, never a 500


@pytest.mark.parametrize("body", [
    b"", b"{", b"{'a': 1}", b"{\"a\": 1} trailing", b"NaN", b"{\"a\": NaN}", b"[Infinity]",
    b"\xff\xfe{}", b"{\"a\": \"\xc3\x28\"}", b"[" * 5000 + b"]" * 5000, b"{\"a\":" * 3000 + b"1" + b"}" * 3000,
    b"1" * 5000,
], ids=["empty", "truncated", "single-quotes", "trailing", "NaN", "NaN-inside", "Infinity", "bom-bytes",
        "bad-utf8", "deep-lists", "deep-objects", "huge-int"])
def test_malformed_json_is_400(client, body):
    response = post(client, body)
    assert response.status_code == 400, f"{body[:40]!r}: {response.status_code} {response.get_data()[:200]!r}"
    assert isinstance(response.get_json().get("error"), str), response.get_json()
    assert client.get(URL).get_json() == []


def test_a_number_beyond_a_doubles_range_is_400_and_what_is_served_stays_json(client):
    assert post(client, {"account": "83702741", "x": 1.5}).status_code == 200
    assert_error(post(client, b'{"account": "83702741", "x": 1e400}'), 400, "beyond a double's range")
    served = client.get(URL).get_data(as_text=True)

    def no_constant(name):
        raise AssertionError(f"GET served {name}, which is not JSON: {served[:200]}")

    assert [r["x"] for r in json.loads(served, parse_constant=no_constant)] == [1.5]


@pytest.mark.parametrize("body, fragment", [
    (b"1", "the body is a number"), (b"\"report\"", "the body is a string"),
    (b"null", "the body is null"), (b"true", "the body is a boolean"),
    (b"[1]", "item 0 is a number"), (b"[{}, [{}]]", "item 1 is an array"),
    (b"[{}, {}, null]", "item 2 is null"),
])
def test_reports_that_are_not_objects_are_400_and_nothing_is_stored(client, body, fragment):
    assert_error(post(client, body), 400, fragment)
    assert client.get(URL).get_json() == []


def test_too_deeply_nested_report_is_400_and_the_deepest_allowed_reads_back(client):
    assert_error(post(client, b"{\"a\":" * 65 + b"1" + b"}" * 65), 400, "nested more than 64")
    ok = b"{\"a\":" * 64 + b"1" + b"}" * 64
    assert post(client, ok).status_code == 200
    assert client.get(URL).status_code == 200


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "", "multipart/form-data"])
def test_wrong_content_type_is_400(client, content_type):
    response = client.post(URL, data=b"{}", headers={"Content-Type": content_type} if content_type else {})
    assert_error(response, 400, "Content-Type: application/json")


def test_json_with_charset_and_lone_surrogates_round_trip(client):
    response = client.post(URL, data=b'{"s": "\\ud800", "t": "\xc3\xa9"}',
                           headers={"Content-Type": "application/json; charset=utf-8"})
    assert response.status_code == 200, response.get_json()
    assert client.get(URL).get_json() == [{"s": "\ud800", "t": "\u00e9", "n": 1}]


def test_other_methods_are_405(client):
    assert client.put(URL, json={}).status_code == 405
    assert client.patch(URL, json={}).status_code == 405
