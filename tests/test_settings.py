"""Settings: every rule of the settings table, the shape of error messages, immutability,
`Settings.from_mapping` with Segment's JSON keys, and the one declaration of each setting that the dataclass,
the messages and the README's table come from."""

from __future__ import annotations

import dataclasses
import difflib
from pathlib import Path

import pytest

from driptag import Settings, SettingsError
from driptag.loader.settings import (FORBIDDEN_GLOBALS, SETTINGS, Problem, check_each, python_names,
                                     settings_table)
from driptag.messages import one_line, show

README = Path(__file__).resolve().parent.parent / "README.md"

ACCOUNT = "83702741"
TOKEN = "bmrdc6hczyn8yss8o8td"  # the seed's example: 20 alphanumerics


def problems_of(**values) -> list[Problem]:
    """The problems Settings reports for `values` (with a valid account unless one is given)."""
    values.setdefault("account", ACCOUNT)
    with pytest.raises(SettingsError) as caught:
        Settings(**values)
    return caught.value.problems


def only_problem(**values) -> Problem:
    problems = problems_of(**values)
    assert len(problems) == 1, f"expected exactly one problem for {values!r}, got {problems!r}"
    return problems[0]


# --- account -------------------------------------------------------------------------------------

@pytest.mark.parametrize("value, expected", [
    ("83702741", "83702741"),
    ("1234567", "1234567"),
    ("123456789", "123456789"),
    ("0012345", "0012345"),
    (83702741, "83702741"),
    (1234567, "1234567"),
])
def test_account_accepts_7_to_9_ascii_digits_and_turns_ints_into_strings(value, expected):
    settings = Settings(account=value)
    assert settings.account == expected, f"account {value!r} became {settings.account!r}"
    assert isinstance(settings.account, str), f"account {value!r} stayed a {type(settings.account).__name__}"


@pytest.mark.parametrize("value", [
    "123456", "1234567890", "", "8370274a", " 83702741", "83702741 ", "83702741\n", "-8370274",
    "８３７０２７４１",  # fullwidth digits
    "٨٣٧٠٢٧٤١",  # Arabic-Indic digits
    "８３７０２７４",
    True, False, None, 8370274.0, 123456, 1234567890, -1234567, ["83702741"], b"83702741",
])
def test_account_rejects_anything_but_7_to_9_ascii_digits(value):
    problem = only_problem(account=value)
    assert problem.setting == "account", f"the problem for account={value!r} named {problem.setting!r}"
    assert problem.message.endswith("is not a Drip account ID: 7 to 9 digits, like 83702741"), \
        f"account={value!r} gave the message {problem.message!r}"


def test_account_error_message_is_exact():
    with pytest.raises(SettingsError) as caught:
        Settings(account="12345")
    assert str(caught.value) == "account: '12345' is not a Drip account ID: 7 to 9 digits, like 83702741"
    with pytest.raises(SettingsError) as caught:
        Settings(account=True)
    assert str(caught.value) == "account: True is not a Drip account ID: 7 to 9 digits, like 83702741", \
        "a bool must be rejected, not read as 1"


def test_settings_error_is_a_value_error():
    assert issubclass(SettingsError, ValueError), "SettingsError must be a ValueError"


def test_account_is_required():
    with pytest.raises(SettingsError) as caught:
        Settings.from_mapping({})
    assert str(caught.value) == "account: is required: your Drip account ID, 7 to 9 digits, like 83702741"


# --- campaign_id ---------------------------------------------------------------------------------

@pytest.mark.parametrize("value, expected", [
    ("1", "1"), ("1234567", "1234567"), ("9" * 20, "9" * 20), (1234, "1234"), (0, "0"), ("", None), (None, None),
])
def test_campaign_id_accepts_1_to_20_digits_and_empty_means_none(value, expected):
    settings = Settings(account=ACCOUNT, campaign_id=value)
    assert settings.campaign_id == expected, f"campaign_id {value!r} became {settings.campaign_id!r}"


@pytest.mark.parametrize("value", ["9" * 21, "12a", "-1", " 12", "1.5", "١٢٣", "１２３", -1, True, 1.5, ["1"]])
def test_campaign_id_rejects_anything_but_1_to_20_ascii_digits(value):
    problem = only_problem(campaign_id=value)
    assert problem.setting == "campaign_id", f"the problem for campaign_id={value!r} named {problem.setting!r}"
    assert problem.message.endswith("is not a Drip campaign ID: 1 to 20 digits, like 1234567"), \
        f"campaign_id={value!r} gave the message {problem.message!r}"


# --- api_token -----------------------------------------------------------------------------------

@pytest.mark.parametrize("value", [TOKEN, "A" * 20, "aB3" * 10, "x" * 128])
def test_api_token_accepts_20_or_more_alphanumerics(value):
    assert Settings(account=ACCOUNT, api_token=value).api_token == value


@pytest.mark.parametrize("value", ["", None])
def test_api_token_empty_means_not_set(value):
    assert Settings(account=ACCOUNT, api_token=value).api_token is None


@pytest.mark.parametrize("value, shown_as", [
    ("bmrdc6hczyn8yss8o8t", "a value of 19 characters"),
    ("bmrdc6hczyn8yss8o8td!", "a value of 21 characters"),
    ("bmrdc6hczyn8 yss8o8td", "a value of 21 characters"),
    ("bmrdc6hczyn8yss8o8td\n", "a value of 21 characters"),
    ("ｂｍｒｄｃ６ｈｃｚｙｎ８ｙｓｓ８ｏ８ｔｄ", "a value of 20 characters"),
    (12345678901234567890123, "a int value"),
    (b"bmrdc6hczyn8yss8o8t!", "a bytes value"),
    (True, "a bool value"),
])
def test_api_token_is_never_shown_in_its_error(value, shown_as):
    with pytest.raises(SettingsError) as caught:
        Settings(account=ACCOUNT, api_token=value)
    message = str(caught.value)
    assert message == f"api_token: {shown_as} is not a Drip API token: 20 to 128 letters and digits", \
        f"api_token={value!r} gave the message {message!r}"
    secret = value.decode() if isinstance(value, bytes) else str(value)
    assert secret.strip()[:12] not in message, f"the secret leaked into the error message: {message!r}"


def test_api_token_is_not_in_the_repr_of_settings():
    settings = Settings(account=ACCOUNT, api_token=TOKEN)
    assert TOKEN not in repr(settings), f"repr(settings) shows the server-side secret: {settings!r}"


# --- script_origin -------------------------------------------------------------------------------

@pytest.mark.parametrize("value, expected", [
    ("https://tag.getdrip.com", "https://tag.getdrip.com"),
    ("https://tag.getdrip.com/", "https://tag.getdrip.com"),
    ("https://cdn.example.com/drip/", "https://cdn.example.com/drip"),
    ("https://cdn.example.com:8443/a/b", "https://cdn.example.com:8443/a/b"),
    ("HTTPS://Tag.GetDrip.COM/", "https://tag.getdrip.com"),
    ("http://localhost", "http://localhost"),
    ("http://localhost:5000/", "http://localhost:5000"),
    ("http://127.0.0.1:8000", "http://127.0.0.1:8000"),
    ("https://localhost", "https://localhost"),
])
def test_script_origin_accepts_https_and_local_http_and_drops_the_trailing_slash(value, expected):
    settings = Settings(account=ACCOUNT, script_origin=value)
    assert settings.script_origin == expected, f"script_origin {value!r} became {settings.script_origin!r}"
    assert settings.script_url == f"{expected}/{ACCOUNT}.js", f"script_url is {settings.script_url!r}"


def test_script_origin_defaults_to_drips_host():
    settings = Settings(account=ACCOUNT)
    assert settings.script_origin == "https://tag.getdrip.com"
    assert settings.script_url == "https://tag.getdrip.com/83702741.js"


def test_plain_http_is_refused_for_other_hosts_with_a_message_that_says_why():
    with pytest.raises(SettingsError) as caught:
        Settings(account=ACCOUNT, script_origin="http://tag.getdrip.com")
    assert str(caught.value) == ("script_origin: 'http://tag.getdrip.com' is not allowed: http:// is only for "
                                 "localhost and 127.0.0.1; use https://")


@pytest.mark.parametrize("value", [
    "//tag.getdrip.com",  # protocol-relative
    "tag.getdrip.com",
    "https:tag.getdrip.com",
    "https:///tag.getdrip.com",
    "https://",
    "https://tag.getdrip.com?x=1",
    "https://tag.getdrip.com/?",
    "https://tag.getdrip.com/path?",
    "https://tag.getdrip.com#top",
    "https://tag.getdrip.com/#",
    "https://user@tag.getdrip.com",
    "https://user:secret@tag.getdrip.com",
    "https://@tag.getdrip.com",
    "http://localhost.evil.example",
    "http://127.0.0.1.evil.example",
    "http://[::1]:5000",
    "ftp://tag.getdrip.com",
    "javascript:alert(1)",
    "data:text/javascript,alert(1)",
    "https://tag.getdrip.com/a b",
    'https://tag.getdrip.com/"+alert(1)+"',
    "https://tag.getdrip.com/</script>",
    "https://tag.getdrip.com\\@evil.example",
    "https://tag.getdrip.com:99999",
    "https://täg.getdrip.com",
    "https://tag.getdrip.com\n",
    "https://tag.getdrip.com\u2028",
    " https://tag.getdrip.com",
    "",
    None,
    443,
])
def test_script_origin_rejects_everything_else(value):
    problem = only_problem(script_origin=value)
    assert problem.setting == "script_origin", f"the problem for {value!r} named {problem.setting!r}"
    assert "is not allowed: " in problem.message and ("https://" in problem.message), \
        f"script_origin={value!r} gave a message that does not say what is allowed: {problem.message!r}"


def test_script_origin_message_says_what_is_allowed():
    with pytest.raises(SettingsError) as caught:
        Settings(account=ACCOUNT, script_origin="//tag.getdrip.com")
    assert str(caught.value) == (
        "script_origin: '//tag.getdrip.com' is not allowed: an https:// URL without query or fragment, "
        "like https://tag.getdrip.com (http:// only for localhost or 127.0.0.1)")


# --- global_name ---------------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["analytics", "rudderanalytics", "drip", "_drip", "$drip", "a", "A1_$", "a" * 64])
def test_global_name_accepts_an_ascii_identifier(value):
    assert Settings(account=ACCOUNT, global_name=value).global_name == value


def test_global_name_defaults_to_analytics():
    assert Settings(account=ACCOUNT).global_name == "analytics"


@pytest.mark.parametrize("value", ["1abc", "my-name", "a b", "a.b", "anälytics", "ａｎａｌｙｔｉｃｓ", "", "a" * 65,
                                   "analytics\n", "x;alert(1)", None, 1])
def test_global_name_rejects_what_is_not_an_ascii_identifier(value):
    problem = only_problem(global_name=value)
    assert problem.setting == "global_name"
    assert problem.message.endswith("is not allowed: an ASCII JavaScript identifier of at most 64 characters"), \
        f"global_name={value!r} gave {problem.message!r}"


@pytest.mark.parametrize("value", ["class", "let", "await", "null", "true", "this", "yield", "function", "enum"])
def test_global_name_rejects_reserved_words(value):
    problem = only_problem(global_name=value)
    assert problem.message == (f"'{value}' is not allowed: it is a JavaScript reserved word; use another "
                               "identifier, like analytics"), f"global_name={value!r} gave {problem.message!r}"


@pytest.mark.parametrize("value", ["window", "document", "driptag", "_dc", "_dcq", "_dcs", "globalThis", "self",
                                   "undefined", "eval", "console", "location", "JSON", "Drip"])
def test_global_name_rejects_names_the_page_or_drip_relies_on(value):
    assert value in FORBIDDEN_GLOBALS
    problem = only_problem(global_name=value)
    assert problem.message == (f"'{value}' is not allowed: the page, the browser or Drip relies on that name; "
                               "use another identifier, like analytics"), f"global_name={value!r} gave {problem.message!r}"


# --- key_style, consent, callback_timeout_ms, debug, preload -----------------------------------------------

def test_defaults_of_every_optional_setting():
    settings = Settings(account=ACCOUNT)
    assert (settings.campaign_id, settings.api_token, settings.key_style, settings.consent,
            settings.callback_timeout_ms, settings.debug, settings.preload) == \
        (None, None, "segment", "auto", 300, False, True)


@pytest.mark.parametrize("value", ["segment", "snake"])
def test_key_style_accepts_segment_and_snake(value):
    assert Settings(account=ACCOUNT, key_style=value).key_style == value


@pytest.mark.parametrize("value", ["Snake", "camel", "", " snake", None, True])
def test_key_style_rejects_anything_else(value):
    problem = only_problem(key_style=value)
    assert problem.setting == "key_style"
    assert problem.message.endswith("is not allowed: one of segment, snake"), f"{value!r} gave {problem.message!r}"


@pytest.mark.parametrize("value", ["auto", "required"])
def test_consent_accepts_auto_and_required(value):
    assert Settings(account=ACCOUNT, consent=value).consent == value


@pytest.mark.parametrize("value", ["yes", "Auto", "", True, None])
def test_consent_rejects_anything_else(value):
    problem = only_problem(consent=value)
    assert problem.setting == "consent"
    assert problem.message.endswith("is not allowed: one of auto, required"), f"{value!r} gave {problem.message!r}"


@pytest.mark.parametrize("value, expected", [(0, 0), (1, 1), (300, 300), (10000, 10000), ("250", 250), ("0", 0)])
def test_callback_timeout_accepts_0_to_10000_ms(value, expected):
    settings = Settings(account=ACCOUNT, callback_timeout_ms=value)
    assert settings.callback_timeout_ms == expected, f"{value!r} became {settings.callback_timeout_ms!r}"


@pytest.mark.parametrize("value", [-1, 10001, 1.5, 300.0, True, False, None, "abc", "", "-1", "10001", "٣٠٠", "３００"])
def test_callback_timeout_rejects_anything_else(value):
    problem = only_problem(callback_timeout_ms=value)
    assert problem.setting == "callback_timeout_ms"
    assert problem.message.endswith("is not allowed: a whole number of milliseconds from 0 to 10000"), \
        f"callback_timeout_ms={value!r} gave {problem.message!r}"


@pytest.mark.parametrize("setting", ["debug", "preload"])
@pytest.mark.parametrize("value, expected", [(True, True), (False, False), ("true", True), ("false", False)])
def test_flags_accept_booleans(setting, value, expected):
    assert getattr(Settings(account=ACCOUNT, **{setting: value}), setting) is expected


@pytest.mark.parametrize("setting", ["debug", "preload"])
@pytest.mark.parametrize("value", ["yes", "on", 2, None, []])
def test_flags_reject_anything_else(setting, value):
    problem = only_problem(**{setting: value})
    assert problem.setting == setting
    assert problem.message.endswith("is not allowed: true or false"), f"{setting}={value!r} gave {problem.message!r}"


# --- the shape of error messages -----------------------------------------------------------------

HOSTILE = "1\n\x00\u2028" + "x" * 10_000_000


@pytest.mark.parametrize("setting", ["account", "campaign_id", "script_origin", "global_name", "key_style",
                                     "consent", "callback_timeout_ms", "debug", "preload"])
def test_an_offending_value_is_shown_truncated_and_escaped_on_one_line(setting):
    problem = only_problem(**{setting: HOSTILE})
    line = problem.line()
    assert line.startswith(f"{setting}: '1\\n\\x00\\u2028xxx"), f"the value is not shown escaped: {line[:120]!r}"
    assert "… (10,000,004 characters)" in line, f"the truncation does not say how long the value was: {line[:200]!r}"
    assert len(line) < 300, f"the message is {len(line):,} characters long"
    assert line.isprintable(), f"the message holds control or line-separator characters: {line!r}"


def test_a_huge_api_token_is_reported_by_length_only():
    line = only_problem(api_token=HOSTILE).line()
    assert line == "api_token: a value of 10,000,004 characters is not a Drip API token: 20 to 128 letters and digits"


def test_every_problem_is_reported_at_once_in_field_order():
    with pytest.raises(SettingsError) as caught:
        Settings(account="x", campaign_id="a", api_token="short", script_origin="ftp://x", global_name="let",
                 key_style="camel", consent="yes", callback_timeout_ms=-1, debug="maybe", preload="maybe")
    names = [problem.setting for problem in caught.value.problems]
    assert names == ["account", "campaign_id", "api_token", "script_origin", "global_name", "key_style", "consent",
                     "callback_timeout_ms", "debug", "preload"], f"reported {names}"
    assert str(caught.value) == "; ".join(problem.line() for problem in caught.value.problems)


def test_problem_lines_label_the_setting_for_python_json_and_the_command_line():
    problem = Problem("campaign_id", "'a' is not a Drip campaign ID: 1 to 20 digits, like 1234567")
    assert problem.line() == "campaign_id: 'a' is not a Drip campaign ID: 1 to 20 digits, like 1234567"
    assert problem.line("json") == "campaignId: 'a' is not a Drip campaign ID: 1 to 20 digits, like 1234567"
    assert problem.line("cli") == ("campaignId (--campaign-id): 'a' is not a Drip campaign ID: 1 to 20 digits, "
                                   "like 1234567")


# --- immutability --------------------------------------------------------------------------------

def test_settings_are_immutable():
    settings = Settings(account=ACCOUNT)
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.account = "1234567"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.api_token = TOKEN  # type: ignore[misc]
    assert settings.account == ACCOUNT


def test_replace_validates_again():
    settings = Settings(account=ACCOUNT)
    assert settings.replace(campaign_id=55).campaign_id == "55"
    with pytest.raises(SettingsError) as caught:
        settings.replace(global_name="window")
    assert [p.setting for p in caught.value.problems] == ["global_name"]


def test_equal_settings_are_equal_and_hash_alike():
    assert Settings(account=83702741) == Settings(account="83702741")
    assert hash(Settings(account=83702741, campaign_id=1)) == hash(Settings(account="83702741", campaign_id="1"))


# --- from_mapping --------------------------------------------------------------------------------

def test_from_mapping_reads_segments_json_keys():
    settings = Settings.from_mapping({
        "account": 83702741, "campaignId": "1234", "apiToken": TOKEN, "scriptOrigin": "https://cdn.example.com/",
        "globalName": "drip", "keyStyle": "snake", "consent": "required", "callbackTimeout": 500, "debug": True,
        "preload": False,
    })
    assert settings == Settings(account="83702741", campaign_id="1234", api_token=TOKEN,
                                script_origin="https://cdn.example.com", global_name="drip", key_style="snake",
                                consent="required", callback_timeout_ms=500, debug=True, preload=False), \
        f"got {settings!r}"


def test_token_is_an_alias_of_api_token():
    assert Settings.from_mapping({"account": ACCOUNT, "token": TOKEN}).api_token == TOKEN
    assert Settings.from_mapping({"account": ACCOUNT, "token": TOKEN, "apiToken": TOKEN}).api_token == TOKEN


def test_token_and_api_token_with_different_values_is_an_error():
    with pytest.raises(SettingsError) as caught:
        Settings.from_mapping({"account": ACCOUNT, "token": TOKEN, "apiToken": "A" * 20})
    assert str(caught.value) == "api_token: given twice (as apiToken and token) with different values"
    assert TOKEN not in str(caught.value)


def test_a_whole_segment_settings_object_is_accepted_and_segment_only_keys_are_noted():
    notes: list[str] = []
    settings = Settings.from_mapping({"integrations": {"Drip": {
        "account": "83702741", "campaignId": "7654321", "token": TOKEN,
        "versionSettings": {"version": "2.0.4", "componentTypes": ["browser"]},
        "bundlingStatus": "bundled", "type": "browser",
    }}}, note=notes.append)
    assert (settings.account, settings.campaign_id, settings.api_token) == ("83702741", "7654321", TOKEN)
    assert notes == ["ignoring the Segment-only setting 'versionSettings'",
                     "ignoring the Segment-only setting 'bundlingStatus'",
                     "ignoring the Segment-only setting 'type'"], f"notes were {notes}"


def test_segment_only_keys_are_ignored_without_a_note_callback():
    settings = Settings.from_mapping({"account": ACCOUNT, "versionSettings": {}, "bundlingStatus": "unbundled"})
    assert settings == Settings(account=ACCOUNT)


def test_unknown_keys_are_errors_that_name_the_key():
    with pytest.raises(SettingsError) as caught:
        Settings.from_mapping({"account": ACCOUNT, "acount": "1", "campaign_id": "5"})
    known = "account, apiToken, callbackTimeout, campaignId, consent, debug, globalName, keyStyle, preload, scriptOrigin"
    for style in ("python", "json", "cli"):  # an unknown key is named as written, whatever the style
        assert [problem.line(style) for problem in caught.value.problems] == [
            f"acount: unknown setting 'acount'; the settings are {known}",
            f"campaign_id: unknown setting 'campaign_id' (the JSON key is campaignId); the settings are {known}",
        ], f"{style}: got {caught.value.problems}"


def test_an_unknown_hostile_key_is_named_on_one_short_line():
    key = "evil\n\x00\u2028" + "k" * 1_000_000
    with pytest.raises(SettingsError) as caught:
        python_names({key: 1})
    line = caught.value.problems[0].line("json")
    assert line.startswith("evil\\n\\x00\\u2028kkk"), f"the key is not escaped: {line[:80]!r}"
    assert len(line) < 400 and line.isprintable(), f"the line is {len(line):,} characters: {line[:200]!r}"


def test_from_mapping_overrides_win_over_the_mapping():
    settings = Settings.from_mapping({"account": "1234567", "campaignId": "1"}, account="83702741")
    assert (settings.account, settings.campaign_id) == ("83702741", "1")


def test_from_mapping_reports_invalid_values_with_the_mapping_and_validation_problems():
    with pytest.raises(SettingsError) as caught:
        Settings.from_mapping({"account": "1", "callbackTimeout": 99999})
    assert [p.setting for p in caught.value.problems] == ["account", "callback_timeout_ms"]


@pytest.mark.parametrize("data", [["account", ACCOUNT], "83702741", None])
def test_a_settings_document_that_is_not_an_object_is_an_error(data):
    with pytest.raises(SettingsError) as caught:
        python_names(data)
    assert str(caught.value) == 'settings: a settings file holds one JSON object, like {"account": "83702741"}'


# --- one declaration per setting -----------------------------------------------------------------

def test_the_dataclass_fields_and_defaults_are_the_declared_settings():
    fields = dataclasses.fields(Settings)
    assert [field.name for field in fields] == [setting.name for setting in SETTINGS]
    for field, setting in zip(fields, SETTINGS):
        if setting.required:
            assert field.default is dataclasses.MISSING, f"{setting.name} has a default, but is declared required"
        else:
            assert field.default == setting.default, f"{setting.name}: field default {field.default!r}"
        assert field.repr is not setting.secret, f"{setting.name}: repr={field.repr}, secret={setting.secret}"


def test_each_setting_is_labelled_from_its_declaration():
    for setting in SETTINGS:
        problem = Problem(setting.name, "message")
        assert [problem.line(style) for style in ("python", "json", "cli")] == [
            f"{setting.name}: message", f"{setting.json_keys[0]}: message",
            f"{setting.json_keys[0]} ({setting.flag}): message"], setting.name


def test_every_json_key_and_alias_reads_as_its_setting():
    for setting in SETTINGS:
        for key in setting.json_keys:
            assert python_names({key: "x"}) == {setting.name: "x"}, f"{key} is not read as {setting.name}"


def test_check_each_checks_given_values_alone_without_requiring_an_account():
    assert check_each({"campaign_id": "12", "debug": "true"}) == []
    assert [problem.line("json") for problem in check_each({"campaign_id": "x", "key_style": "camel"})] == [
        "campaignId: 'x' is not a Drip campaign ID: 1 to 20 digits, like 1234567",
        "keyStyle: 'camel' is not allowed: one of segment, snake"]


def test_the_readme_settings_table_is_exactly_the_one_the_declarations_give():
    lines = README.read_text(encoding="utf-8").splitlines()
    starts = [index for index, line in enumerate(lines) if line.startswith("| setting (Python) |")]
    assert len(starts) == 1, f"README.md has {len(starts)} settings tables (a line starting '| setting (Python) |')"
    start = starts[0]
    end = next((index for index in range(start, len(lines)) if not lines[index].startswith("|")), len(lines))
    table = "\n".join(lines[start:end]) + "\n"
    expected = settings_table()
    assert table == expected, "README's table differs from settings_table():\n" + "".join(
        difflib.unified_diff(table.splitlines(True), expected.splitlines(True), "README.md", "settings_table()"))
    heading = next((line for line in reversed(lines[:start]) if line.startswith("#")), "")
    assert "Settings" in heading, f"the table is under the heading {heading!r}, not one about Settings"


def test_the_settings_table_has_one_row_per_setting_with_its_keys_and_flags():
    rows = settings_table().splitlines()
    assert rows[:2] == ["| setting (Python) | JSON key | flag | rule |", "|---|---|---|---|"]
    assert len(rows) == 2 + len(SETTINGS)
    assert rows[2 + [s.name for s in SETTINGS].index("api_token")].startswith(
        "| `api_token` | `apiToken` or `token` | `--api-token` | ")
    assert rows[2 + [s.name for s in SETTINGS].index("debug")].startswith("| `debug` | `debug` | `--debug` / `--no-debug` | ")


# --- values in messages --------------------------------------------------------------------------

@pytest.mark.parametrize("value, shown", [
    ("abc", "'abc'"),
    ("a\nb\x00\u2028", "'a\\nb\\x00\\u2028'"),
    ("x" * 41, "'" + "x" * 40 + "'… (41 characters)"),
    (None, "None"), (True, "True"), (12, "12"), (1.5, "1.5"),
    (["83702741"], "['83702741']"),
    (b"8370", "b'8370'"),
    ([[[[[1]]]]], "[[[...]]]"),
    (list(range(1000)), "[0, 1, 2, 3, ...]"),
    pytest.param(10 ** 5000, "an integer of 16,610 bits", id="an int beyond str()'s digit limit"),
])
def test_show_gives_a_short_printable_form_of_any_value(value, shown):
    assert show(value) == shown, f"show({value!r:.60}) gave {show(value)!r}"


def test_one_line_escapes_and_cuts():
    assert one_line("a\nb", 300) == "a\\nb"
    assert one_line("é" * 5, 3) == "ééé…"
