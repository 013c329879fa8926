"""relay.json: sources checked like the loader's settings, ${ENV} references, secrets never shown."""

from __future__ import annotations

import json

import pytest

from driptag.messages import show
from driptag.relay.config import ConfigError, RateLimits, load_config, mask, parse_config

TOKEN = "abcdefghij0123456789XYZW"


def problems(data, environ=None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(data, "relay.json", environ or {})
    return caught.value.problems


def test_a_source_is_read_with_its_settings():
    config = parse_config({"sources": [{"writeKey": "wk1", "account": 83702741, "apiToken": TOKEN,
                                        "campaignId": "1234567", "keyStyle": "snake"}]}, "relay.json", {})
    (source,) = config.sources
    assert (source.write_key, source.account, source.api_token, source.campaign_id, source.key_style) == \
        ("wk1", "83702741", TOKEN, "1234567", "snake")
    assert source.rate_limits == RateLimits(3600, 50, 3600.0)
    assert config.max_pending == 1_000_000
    assert config.source_for("wk1") is source and config.source_for("other") is None


def test_env_references_are_replaced_from_the_environment():
    config = parse_config({"sources": [{"writeKey": "wk", "account": "83702741", "apiToken": "${DRIP_TOKEN}"}]},
                          "relay.json", {"DRIP_TOKEN": TOKEN})
    assert config.sources[0].api_token == TOKEN


def test_a_missing_environment_variable_is_named():
    assert problems({"sources": [{"writeKey": "wk", "account": "83702741", "apiToken": "${DRIP_TOKEN}"}]}) == [
        "relay.json: sources[0].apiToken: the environment variable DRIP_TOKEN is not set"]


def test_the_api_token_is_required_and_never_shown():
    lines = problems({"sources": [{"writeKey": "wk", "account": "83702741", "apiToken": "short-secret!"}]})
    assert lines == ["relay.json: sources[0].apiToken: a value of 13 characters is not a Drip API token: "
                     "20 to 128 letters and digits"]
    assert "short-secret" not in " ".join(lines)


def test_every_problem_of_every_source_is_one_line():
    lines = problems({"sources": [{"writeKey": "wk", "account": "12", "apiToken": TOKEN, "keyStyle": "camel"},
                                  {"account": "83702741", "apiToken": TOKEN, "colour": "red"}]})
    assert lines == [
        "relay.json: sources[0].account: '12' is not a Drip account ID: 7 to 9 digits, like 83702741",
        "relay.json: sources[0].keyStyle: 'camel' is not allowed: one of segment, snake",
        "relay.json: sources[1]: unknown key 'colour'; the keys are account, apiToken, campaignId, keyStyle, "
        "rateLimits, writeKey",
        "relay.json: sources[1].writeKey: is required: 1 to 200 printable ASCII characters without spaces or "
        "colons (it is the user name of HTTP Basic auth)",
    ]


@pytest.mark.parametrize("write_key", ["back:end", "back end", "", "é", "k" * 201, 42])
def test_a_write_key_basic_auth_cannot_carry_is_refused(write_key):
    assert problems({"sources": [{"writeKey": write_key, "account": "83702741", "apiToken": TOKEN}]}) == [
        f"relay.json: sources[0].writeKey: {show(write_key)} is not allowed: 1 to 200 printable ASCII characters "
        "without spaces or colons (it is the user name of HTTP Basic auth)"]


def test_write_keys_are_unique():
    source = {"writeKey": "same", "account": "83702741", "apiToken": TOKEN}
    assert problems({"sources": [source, dict(source, account="1234567")]}) == [
        "relay.json: sources[1].writeKey: the same write key as sources[0]; each source needs its own"]


@pytest.mark.parametrize("data", [[], {}, {"sources": []}, {"sources": "x"}, "text", None])
def test_a_file_without_sources_says_what_it_expects(data):
    (line,) = problems(data)
    assert line.startswith('relay.json: expected an object with a non-empty "sources" list')


def test_rate_limits_can_be_scaled_down_for_tests():
    config = parse_config({"sources": [{"writeKey": "wk", "account": "83702741", "apiToken": TOKEN,
                                        "rateLimits": {"single": 20, "batch": 2, "windowSeconds": 10}}]},
                          "relay.json", {})
    assert config.sources[0].rate_limits == RateLimits(20, 2, 10)


def test_rate_limits_above_drips_are_refused():
    lines = problems({"sources": [{"writeKey": "wk", "account": "83702741", "apiToken": TOKEN,
                                   "rateLimits": {"single": 5000, "batch": 0}}]})
    assert lines == ["relay.json: sources[0].rateLimits.single: 5000 is not a whole number from 1 to 3600",
                     "relay.json: sources[0].rateLimits.batch: 0 is not a whole number from 1 to 50"]


def test_a_fraction_of_a_request_or_a_window_under_a_second_is_refused_and_an_unknown_key_named():
    lines = problems({"sources": [{"writeKey": "wk", "account": "83702741", "apiToken": TOKEN,
                                   "rateLimits": {"single": 0.5, "batch": "2", "windowSeconds": 0.5,
                                                  "perHour": 10}}]})
    assert lines == [
        "relay.json: sources[0].rateLimits: unknown key 'perHour'; the keys are batch, single, windowSeconds",
        "relay.json: sources[0].rateLimits.single: 0.5 is not a whole number from 1 to 3600",
        "relay.json: sources[0].rateLimits.batch: '2' is not a whole number from 1 to 50",
        "relay.json: sources[0].rateLimits.windowSeconds: 0.5 is not a number of seconds from 1 to 3600"]


def test_a_window_may_be_a_fraction_of_a_second_past_one():
    config = parse_config({"sources": [{"writeKey": "wk", "account": "83702741", "apiToken": TOKEN,
                                        "rateLimits": {"windowSeconds": 2.5}}]}, "relay.json", {})
    assert config.sources[0].rate_limits == RateLimits(window_seconds=2.5)


def test_load_config_reads_a_file_with_a_bom_and_names_bad_json(tmp_path):
    good = tmp_path / "relay.json"
    good.write_text("\ufeff" + json.dumps({"sources": [{"writeKey": "wk", "account": "83702741", "apiToken": TOKEN}]}),
                    encoding="utf-8")
    assert load_config(good, {}).sources[0].account == "83702741"
    bad = tmp_path / "bad.json"
    bad.write_text("{", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(bad, {})
    assert caught.value.problems[0].startswith(f"{bad}: not valid JSON (")
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(deep, {})
    assert caught.value.problems == [f"{deep}: nested too deeply to be a relay configuration"]


def test_mask_shows_at_most_the_last_four_characters():
    assert mask(TOKEN) == "…XYZW"
    assert mask("short") == "…"
