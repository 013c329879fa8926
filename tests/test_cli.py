"""The `driptag` command, called in-process through `driptag.cli.main`, plus one test of the
installed console script."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

import driptag
from driptag import Settings, build_manifest, render
from driptag import cli
from driptag.cli import API_TOKEN_WARNING

ACCOUNT = "83702741"
TOKEN = "bmrdc6hczyn8yss8o8td"
KNOWN = "account, apiToken, callbackTimeout, campaignId, consent, debug, globalName, keyStyle, preload, scriptOrigin"


def files_in(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


def assert_no_traceback(err: list[str]) -> None:
    assert not any("Traceback" in line or line.startswith("  File ") for line in err), f"a traceback: {err}"


# --- one account ---------------------------------------------------------------------------------

def test_build_writes_the_minified_js_to_stdout_and_nothing_to_stderr(run):
    status, out, err = run("build", "--account", ACCOUNT)
    assert (status, err) == (0, []), f"status {status}, stderr {err}"
    assert out == render(Settings(account=ACCOUNT), "js"), "stdout is not exactly the minified loader"


def test_no_minify_writes_the_readable_loader(run):
    status, out, err = run("build", "--account", ACCOUNT, "--no-minify")
    assert (status, err) == (0, [])
    assert out == render(Settings(account=ACCOUNT), "js", minify=False)


def test_every_setting_has_a_flag(run):
    status, out, err = run("build", "--account", ACCOUNT, "--campaign-id", "1234", "--script-origin",
                           "http://localhost:5000/", "--global", "drip", "--keys", "snake", "--consent", "required",
                           "--callback-timeout", "500", "--debug")
    assert (status, err) == (0, []), f"status {status}, stderr {err}"
    assert out == render(Settings(account=ACCOUNT, campaign_id="1234", script_origin="http://localhost:5000",
                                  global_name="drip", key_style="snake", consent="required",
                                  callback_timeout_ms=500, debug=True), "js")


def test_output_file_is_written_atomically_through_a_temporary_file_in_the_same_folder(run, tmp_path, monkeypatch):
    renames = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: renames.append((Path(src), Path(dst))) or real_replace(src, dst))
    status, out, err = run("build", "--account", ACCOUNT, "-o", "drip.js")
    assert (status, out, err) == (0, "", []), f"status {status}, stdout {out[:80]!r}, stderr {err}"
    assert (tmp_path / "drip.js").read_text(encoding="utf-8") == render(Settings(account=ACCOUNT), "js")
    assert len(renames) == 1, f"expected one rename, got {renames}"
    temporary, target = renames[0]
    assert target.name == "drip.js" and temporary.parent.resolve() == tmp_path.resolve(), \
        f"the temporary file {temporary} is not in the output's folder"
    assert temporary.name.startswith(".drip.js.") and temporary.name.endswith(".tmp"), temporary
    assert files_in(tmp_path) == ["drip.js"], f"left behind: {files_in(tmp_path)}"


def test_flags_override_the_settings_file(run, tmp_path):
    (tmp_path / "settings.json").write_text(json.dumps(
        {"account": "1234567", "campaignId": "42", "debug": True, "keyStyle": "snake"}), encoding="utf-8")
    status, out, err = run("build", "--settings", "settings.json", "--account", ACCOUNT, "--no-debug")
    assert (status, err) == (0, []), f"status {status}, stderr {err}"
    assert out == render(Settings(account=ACCOUNT, campaign_id="42", debug=False, key_style="snake"), "js"), \
        "the flags did not override the file, or the file's other values were lost"


def test_a_segment_settings_object_is_read_and_segment_only_keys_are_noted(run, tmp_path):
    (tmp_path / "segment.json").write_text(json.dumps({"integrations": {"Drip": {
        "account": ACCOUNT, "campaignId": "42", "versionSettings": {"version": "2.0.4"}}}}), encoding="utf-8")
    status, out, err = run("build", "--settings", "segment.json")
    assert status == 0
    assert err == ["driptag: note: ignoring the Segment-only setting 'versionSettings'"], f"stderr {err}"
    assert out == render(Settings(account=ACCOUNT, campaign_id="42"), "js")


def test_unknown_keys_in_the_settings_file_exit_2_with_one_line_each(run, tmp_path):
    (tmp_path / "settings.json").write_text('{"account": "83702741", "acount": 1, "campaign_id": "5"}',
                                            encoding="utf-8")
    status, out, err = run("build", "--settings", "settings.json")
    assert (status, out) == (2, ""), f"status {status}, stdout {out[:80]!r}"
    assert err == [f"driptag: settings.json: acount: unknown setting 'acount'; the settings are {KNOWN}",
                   "driptag: settings.json: campaign_id: unknown setting 'campaign_id' (the JSON key is campaignId); "
                   f"the settings are {KNOWN}"], \
        f"stderr {err}"


def test_invalid_json_exits_2_with_one_line(run, tmp_path):
    (tmp_path / "settings.json").write_text('{"account": "83702741",}', encoding="utf-8")
    status, out, err = run("build", "--settings", "settings.json")
    assert (status, out) == (2, "")
    assert err == ["driptag: --settings: settings.json is not valid JSON (Expecting property name enclosed in "
                   "double quotes: line 1 column 24 (char 23))"], f"stderr {err}"


def test_a_missing_settings_file_exits_2_with_one_line(run):
    status, out, err = run("build", "--settings", "nowhere.json")
    assert (status, out) == (2, "")
    assert err == ["driptag: --settings: cannot read nowhere.json: No such file or directory"], f"stderr {err}"


def test_invalid_settings_exit_2_with_one_line_per_problem_naming_the_setting_where_it_was_given(run, tmp_path):
    (tmp_path / "settings.json").write_text('{"account": "1", "campaignId": "x"}', encoding="utf-8")
    status, out, err = run("build", "--settings", "settings.json", "--global", "window")
    assert (status, out) == (2, "")
    assert err == [  # a value from the file: the file and its key there; a flag's: the JSON key and the flag
        "driptag: settings.json: account: '1' is not a Drip account ID: 7 to 9 digits, like 83702741",
        "driptag: settings.json: campaignId: 'x' is not a Drip campaign ID: 1 to 20 digits, like 1234567",
        "driptag: globalName (--global): 'window' is not allowed: the page, the browser or Drip relies on that "
        "name; use another identifier, like analytics",
    ], f"stderr {err}"
    assert_no_traceback(err)


def test_a_missing_account_exits_2(run):
    status, out, err = run("build")
    assert (status, out) == (2, "")
    assert err == ["driptag: account (--account): is required: your Drip account ID, 7 to 9 digits, like 83702741"]


def test_a_bad_callback_timeout_is_reported_by_the_settings_rules(run):
    status, out, err = run("build", "--account", ACCOUNT, "--callback-timeout", "٣٠٠")
    assert (status, out) == (2, "")
    assert err == ["driptag: callbackTimeout (--callback-timeout): '٣٠٠' is not allowed: a whole number of "
                   "milliseconds from 0 to 10000"], f"stderr {err}"


def test_a_nonce_with_the_js_format_is_a_usage_error(run):
    status, out, err = run("build", "--account", ACCOUNT, "--format", "js", "--nonce", "abc")
    assert (status, out) == (2, "")
    assert err == ["driptag: --nonce belongs to --format html; for js put the nonce on the page's <script src> tag "
                   "(see 'driptag build --help')"], f"stderr {err}"


def test_an_invalid_nonce_is_a_usage_error(run):
    status, out, err = run("build", "--account", ACCOUNT, "--format", "html", "--nonce", 'a"b')
    assert (status, out) == (2, "")
    assert err == ["driptag: --nonce: a CSP nonce is 1 to 512 base64 or base64url characters "
                   "(see 'driptag build --help')"], f"stderr {err}"


def test_html_with_a_nonce(run):
    status, out, err = run("build", "--account", ACCOUNT, "--format", "html", "--nonce", "abc")
    assert (status, err) == (0, [])
    assert out.startswith(f'<link rel="preload" as="script" href="https://tag.getdrip.com/{ACCOUNT}.js" nonce="abc">'
                          '<script nonce="abc">') and out.endswith("</script>"), out[:120]
    assert out == render(Settings(account=ACCOUNT), "html", nonce="abc")


@pytest.mark.parametrize("how", [["--no-preload"], ["--settings", "settings.json"]])
def test_html_without_the_preload_link_is_one_script_element(run, tmp_path, how):
    (tmp_path / "settings.json").write_text('{"account": "%s", "preload": false}' % ACCOUNT)
    status, out, err = run("build", "--account", ACCOUNT, "--format", "html", *how)
    assert (status, err) == (0, [])
    assert out == f"<script>{render(Settings(account=ACCOUNT), 'js')}</script>", out[:80]


def test_preload_flag_overrides_the_settings_file(run, tmp_path):
    (tmp_path / "settings.json").write_text('{"account": "%s", "preload": false}' % ACCOUNT)
    status, out, err = run("build", "--settings", "settings.json", "--format", "html", "--preload")
    assert (status, err) == (0, [])
    assert out == render(Settings(account=ACCOUNT), "html")


def test_preload_that_is_not_a_boolean_is_refused(run, tmp_path):
    (tmp_path / "settings.json").write_text('{"account": "%s", "preload": "yes"}' % ACCOUNT)
    status, out, err = run("build", "--settings", "settings.json", "--format", "html")
    assert (status, out, err) == (2, "", ["driptag: settings.json: preload: 'yes' is not allowed: true or false"])


@pytest.mark.parametrize("fmt, extra", [("js", []), ("html", ["--nonce", "abc"]), ("js", ["--no-minify"])])
def test_manifest_is_written_as_json(run, tmp_path, fmt, extra):
    status, out, err = run("build", "--account", ACCOUNT, "--campaign-id", "9", "--format", fmt, *extra,
                           "--manifest", "out.json", "-o", f"drip.{fmt}")
    assert (status, out, err) == (0, "", []), f"status {status}, stderr {err}"
    manifest = json.loads((tmp_path / "out.json").read_text(encoding="utf-8"))
    settings = Settings(account=ACCOUNT, campaign_id="9")
    nonce = "abc" if "--nonce" in extra else None
    assert manifest == build_manifest(settings, fmt, minify="--no-minify" not in extra, nonce=nonce), manifest
    assert manifest["bytes"] == (tmp_path / f"drip.{fmt}").stat().st_size
    assert manifest["driptag_version"] == driptag.__version__
    assert files_in(tmp_path) == sorted([f"drip.{fmt}", "out.json"])


def test_manifest_with_stdout_keeps_stdout_for_the_output_only(run, tmp_path):
    status, out, err = run("build", "--account", ACCOUNT, "--manifest", "out.json")
    assert (status, err) == (0, [])
    assert out == render(Settings(account=ACCOUNT), "js")
    assert json.loads((tmp_path / "out.json").read_text())["sha256"] == build_manifest(Settings(account=ACCOUNT))["sha256"]


def test_an_api_token_prints_one_warning_and_never_reaches_the_output(run, tmp_path):
    (tmp_path / "settings.json").write_text(json.dumps({"account": ACCOUNT, "token": TOKEN}), encoding="utf-8")
    for args in (["--account", ACCOUNT, "--api-token", TOKEN],
                 ["--settings", "settings.json", "--api-token", TOKEN, "--format", "html"],
                 ["--settings", "settings.json", "--no-minify"]):
        status, out, err = run("build", *args)
        assert status == 0, f"{args}: status {status}, stderr {err}"
        assert err == [API_TOKEN_WARNING], f"{args}: stderr was {err}"
        assert TOKEN not in out, f"{args}: the API token is in the browser output"
    assert API_TOKEN_WARNING == ("driptag: warning: the API token is a server-side secret; it is ignored and not "
                                 "written into the browser output")


def test_version(run):
    status, out, err = run("--version")
    assert (status, out, err) == (0, f"driptag {driptag.__version__}\n", [])


# --- failures leave files alone ------------------------------------------------------------------

def test_a_failed_build_leaves_an_existing_output_byte_identical_and_no_temporary_file(run, tmp_path):
    (tmp_path / "drip.js").write_bytes(b"// the previous build\n\x00\xff")
    status, out, err = run("build", "--account", "123", "-o", "drip.js", "--manifest", "out.json")
    assert (status, out) == (2, "")
    assert len(err) == 1 and err[0].startswith("driptag: account (--account): '123'"), f"stderr {err}"
    assert (tmp_path / "drip.js").read_bytes() == b"// the previous build\n\x00\xff", "the old output changed"
    assert files_in(tmp_path) == ["drip.js"], f"the folder holds {files_in(tmp_path)}"


def test_an_unexpected_error_while_rendering_exits_1_with_one_line_and_leaves_the_file(run, tmp_path, monkeypatch):
    (tmp_path / "drip.js").write_bytes(b"old")

    def broken_render(*args, **kwargs):
        raise RuntimeError("the template broke")

    monkeypatch.setattr(cli, "render", broken_render)
    status, out, err = run("build", "--account", ACCOUNT, "-o", "drip.js")
    assert (status, out) == (1, "")
    assert err == ["driptag: unexpected error: RuntimeError: the template broke"], f"stderr {err}"
    assert (tmp_path / "drip.js").read_bytes() == b"old"
    assert files_in(tmp_path) == ["drip.js"], f"the folder holds {files_in(tmp_path)}"


def test_a_manifest_that_cannot_be_written_leaves_the_output_file(run, tmp_path):
    (tmp_path / "drip.js").write_bytes(b"old")
    status, out, err = run("build", "--account", ACCOUNT, "-o", "drip.js", "--manifest", "missing/m.json")
    assert (status, out) == (1, "")
    assert err == ["driptag: missing/m.json: No such file or directory"], f"stderr {err}"
    assert (tmp_path / "drip.js").read_bytes() == b"old", "the output was replaced although the build failed"


def test_a_write_that_fails_midway_leaves_the_file_and_removes_the_temporary_file(run, tmp_path, monkeypatch):
    (tmp_path / "drip.js").write_bytes(b"old")

    def full_disk(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    status, out, err = run("build", "--account", ACCOUNT, "-o", "drip.js")
    assert (status, out) == (1, "")
    assert err == ["driptag: No space left on device"], f"stderr {err}"
    assert (tmp_path / "drip.js").read_bytes() == b"old"
    assert files_in(tmp_path) == ["drip.js"], f"a partial file was left: {files_in(tmp_path)}"


def test_an_output_folder_that_does_not_exist_is_named_in_one_line(run, tmp_path):
    status, out, err = run("build", "--account", ACCOUNT, "-o", "missing/drip.js")
    assert (status, out) == (1, "")
    assert err == ["driptag: missing/drip.js: No such file or directory"], f"stderr {err}"
    assert files_in(tmp_path) == []


# --- --batch -------------------------------------------------------------------------------------

def write_csv(folder: Path, text: str, name: str = "accounts.csv") -> None:
    (folder / name).write_text(text, encoding="utf-8")


def test_batch_writes_valid_rows_reports_invalid_rows_and_exits_2(run, tmp_path):
    write_csv(tmp_path, "account,campaignId,globalName\n"
                        "83702741,1234,\n"          # line 2: valid
                        "1234567,abc,window\n"      # line 3: two problems
                        "123456789,,drip\n"         # line 4: valid, empty campaign means not set
                        "83702741,99,\n"            # line 5: duplicate of line 2
                        ",5,\n")                    # line 6: no account
    status, out, err = run("build", "--batch", "accounts.csv", "--out-dir", "dist/")
    assert (status, out) == (2, ""), f"status {status}, stdout {out[:80]!r}"
    assert err == [
        "accounts.csv:3: campaignId: 'abc' is not a Drip campaign ID: 1 to 20 digits, like 1234567",
        "accounts.csv:3: globalName: 'window' is not allowed: the page, the browser or Drip relies on that name; "
        "use another identifier, like analytics",
        "accounts.csv:5: account: 83702741 already appears on line 2; this row was skipped",
        "accounts.csv:6: account: is required: your Drip account ID, 7 to 9 digits, like 83702741",
        "driptag: 2 written, 4 problem(s); invalid rows were skipped",
    ], f"stderr {err}"
    assert files_in(tmp_path / "dist") == ["123456789.js", "83702741.js"]
    assert (tmp_path / "dist" / "83702741.js").read_text() == render(Settings(account=ACCOUNT, campaign_id="1234"))
    assert (tmp_path / "dist" / "123456789.js").read_text() == render(Settings(account="123456789", global_name="drip"))


def test_batch_with_only_valid_rows_exits_0_silently(run, tmp_path):
    write_csv(tmp_path, "account\n83702741\n1234567\n")
    status, out, err = run("build", "--batch", "accounts.csv", "--out-dir", "dist")
    assert (status, out, err) == (0, "", []), f"status {status}, stderr {err}"
    assert files_in(tmp_path / "dist") == ["1234567.js", "83702741.js"]


def test_batch_html_with_a_nonce_writes_html_files(run, tmp_path):
    write_csv(tmp_path, "account\n83702741\n")
    status, out, err = run("build", "--batch", "accounts.csv", "--out-dir", "dist", "--format", "html",
                           "--nonce", "abc")
    assert (status, err) == (0, [])
    assert files_in(tmp_path / "dist") == ["83702741.html"]
    assert (tmp_path / "dist" / "83702741.html").read_text() == render(Settings(account=ACCOUNT), "html", nonce="abc")


def test_batch_preload_column_and_flag(run, tmp_path):
    write_csv(tmp_path, "account,preload\n83702741,\n1234567,true\n")
    status, out, err = run("build", "--batch", "accounts.csv", "--out-dir", "dist", "--format", "html",
                           "--no-preload")
    assert (status, err) == (0, []), f"stderr {err}"
    assert (tmp_path / "dist" / "83702741.html").read_text() == f"<script>{render(Settings(account=ACCOUNT))}</script>"
    assert (tmp_path / "dist" / "1234567.html").read_text().startswith(
        '<link rel="preload" as="script" href="https://tag.getdrip.com/1234567.js"><script>'), "the row did not win"


def test_batch_unknown_column_is_reported_once_on_line_1_and_nothing_is_written(run, tmp_path):
    write_csv(tmp_path, "account,campaign,bogus\n83702741,1,x\n1234567,2,y\n")
    status, out, err = run("build", "--batch", "accounts.csv", "--out-dir", "dist")
    assert (status, out) == (2, "")
    assert err == [f"accounts.csv:1: campaign: unknown setting 'campaign'; the settings are {KNOWN}",
                   f"accounts.csv:1: bogus: unknown setting 'bogus'; the settings are {KNOWN}"], f"stderr {err}"
    assert not (tmp_path / "dist").exists() or files_in(tmp_path / "dist") == [], "files were written"


def test_batch_flags_are_defaults_for_every_row(run, tmp_path):
    write_csv(tmp_path, "account,campaignId,keyStyle\n83702741,,\n1234567,777,segment\n")
    status, out, err = run("build", "--batch", "accounts.csv", "--out-dir", "dist", "--campaign-id", "55",
                           "--keys", "snake", "--no-minify")
    assert (status, err) == (0, []), f"stderr {err}"
    dist = tmp_path / "dist"
    assert (dist / "83702741.js").read_text() == render(
        Settings(account=ACCOUNT, campaign_id="55", key_style="snake"), minify=False), "the flags were not defaults"
    assert (dist / "1234567.js").read_text() == render(
        Settings(account="1234567", campaign_id="777", key_style="segment"), minify=False), "the row did not win"


def test_batch_manifest_is_a_list_of_the_written_files(run, tmp_path):
    write_csv(tmp_path, "account\n83702741\nbad\n1234567\n")
    status, out, err = run("build", "--batch", "accounts.csv", "--out-dir", "dist", "--manifest", "manifest.json")
    assert status == 2 and len(err) == 2, f"status {status}, stderr {err}"
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest == [build_manifest(Settings(account=ACCOUNT)), build_manifest(Settings(account="1234567"))], \
        f"manifest was {manifest}"


def test_an_invalid_api_token_is_reported_without_showing_it(run, tmp_path):
    status, out, err = run("build", "--account", ACCOUNT, "--api-token", "short-secret")
    assert (status, out) == (2, "")
    assert err == ["driptag: apiToken (--api-token): a value of 12 characters is not a Drip API token: "
                   "20 to 128 letters and digits"], f"stderr {err}"


def test_batch_api_token_column_warns_once_and_never_reaches_the_files(run, tmp_path):
    write_csv(tmp_path, f"account,apiToken\n83702741,{TOKEN}\n1234567,{TOKEN}\n")
    status, out, err = run("build", "--batch", "accounts.csv", "--out-dir", "dist", "--api-token", TOKEN)
    assert (status, out) == (0, "")
    assert err == [API_TOKEN_WARNING], f"stderr {err}"
    for name in files_in(tmp_path / "dist"):
        assert TOKEN not in (tmp_path / "dist" / name).read_text(), f"the token is in {name}"


def test_batch_with_an_invalid_nonce_is_a_usage_error_not_a_csv_error(run, tmp_path):
    write_csv(tmp_path, "account\n83702741\n")
    status, out, err = run("build", "--batch", "accounts.csv", "--out-dir", "dist", "--format", "html",
                           "--nonce", "a b")
    assert (status, out) == (2, "")
    assert err == ["driptag: --nonce: a CSP nonce is 1 to 512 base64 or base64url characters "
                   "(see 'driptag build --help')"], f"stderr {err}"
    assert not (tmp_path / "dist").exists()


def test_batch_rows_with_extra_cells_are_reported(run, tmp_path):
    write_csv(tmp_path, "account\n83702741,5\n1234567\n")
    status, out, err = run("build", "--batch", "accounts.csv", "--out-dir", "dist")
    assert status == 2
    assert err == ["accounts.csv:2: row: it has more cells than the header names",
                   "driptag: 1 written, 1 problem(s); invalid rows were skipped"], f"stderr {err}"


@pytest.mark.parametrize("args, message", [
    (["--batch", "accounts.csv"], "--batch and --out-dir go together"),
    (["--out-dir", "dist", "--account", ACCOUNT], "--batch and --out-dir go together"),
    (["--batch", "accounts.csv", "--out-dir", "dist", "-o", "x.js"], "--batch writes into --out-dir; -o is for one account"),
    (["--batch", "missing.csv", "--out-dir", "dist"], "--batch: missing.csv is not a file"),
])
def test_batch_usage_errors(run, tmp_path, args, message):
    write_csv(tmp_path, "account\n83702741\n")
    status, out, err = run("build", *args)
    assert (status, out) == (2, "")
    assert err == [f"driptag: {message} (see 'driptag build --help')"], f"stderr {err}"


def test_build_has_one_option_per_declared_setting_with_its_flags_and_help():
    from driptag.loader.settings import SETTINGS

    options = {param.name: param for param in cli.build.params}
    for setting in SETTINGS:
        option = options[setting.name]
        assert option.opts + option.secondary_opts == list(setting.flags), f"{setting.name}: {option.opts}"
        assert option.help.startswith(setting.help), f"{setting.name}: help {option.help!r}"
        assert option.default is None, f"{setting.name}: a default would override the settings file"


# --- edge cases: one line on stderr each ------------------------------------------------------------

def test_driptag_alone_prints_the_help_as_help_does(run):
    status, out, err = run()
    assert (status, err) == (0, []), f"status {status}, stderr {err}"
    assert out == run("--help")[1], f"driptag alone printed {out[:200]!r}"
    assert out.startswith("Usage: driptag [OPTIONS] COMMAND [ARGS]...") and "build" in out and "demo" in out, out


@pytest.mark.parametrize("port", ["99999", "65536", "-1", "http"])
def test_demo_port_outside_0_to_65535_is_a_usage_error(run, port):
    status, out, err = run("demo", "--port", port)
    assert (status, out) == (2, "")
    assert len(err) == 1 and err[0].startswith("driptag: Invalid value for '--port': ") and \
        err[0].endswith("(see 'driptag demo --help')"), f"stderr {err}"


def test_demo_on_a_port_in_use_is_one_line(run):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        status, out, err = run("demo", "--port", str(port))
    assert (status, out) == (1, ""), f"status {status}, stdout {out!r}"
    assert err == [f"driptag: cannot listen on 127.0.0.1:{port}: Address already in use"], f"stderr {err}"


def test_a_value_in_the_settings_file_is_named_by_the_file_and_the_key_as_written(run, tmp_path):
    (tmp_path / "settings.json").write_text('{"account": "83702741", "campaignId": "abc", "token": "short"}')
    status, out, err = run("build", "--settings", "settings.json")
    assert (status, out) == (2, "")
    assert err == ["driptag: settings.json: campaignId: 'abc' is not a Drip campaign ID: 1 to 20 digits, like 1234567",
                   "driptag: settings.json: token: a value of 5 characters is not a Drip API token: 20 to 128 "
                   "letters and digits"], f"stderr {err}"


def test_a_flag_that_overrides_a_bad_value_in_the_file_is_what_is_checked(run, tmp_path):
    (tmp_path / "settings.json").write_text('{"account": "83702741", "campaignId": "1"}')
    status, out, err = run("build", "--settings", "settings.json", "--campaign-id", "abc")
    assert (status, out) == (2, "")
    assert err == ["driptag: campaignId (--campaign-id): 'abc' is not a Drip campaign ID: 1 to 20 digits, "
                   "like 1234567"], f"stderr {err}"


def test_a_settings_file_with_a_utf8_byte_order_mark_is_read(run, tmp_path):
    (tmp_path / "settings.json").write_bytes(b'\xef\xbb\xbf{"account": "83702741", "campaignId": "42"}')
    status, out, err = run("build", "--settings", "settings.json")
    assert (status, err) == (0, []), f"status {status}, stderr {err}"
    assert out == render(Settings(account=ACCOUNT, campaign_id="42"), "js")


def test_a_settings_file_nested_100000_deep_is_one_line(run, tmp_path):
    (tmp_path / "settings.json").write_text('{"account": ' + "[" * 100_000 + "]" * 100_000 + "}")
    status, out, err = run("build", "--settings", "settings.json")
    assert (status, out) == (2, "")
    assert err == ["driptag: --settings: settings.json is nested too deeply to read; a settings file is one JSON "
                   "object of settings"], f"stderr {[line[:200] for line in err]}"


def test_a_settings_file_that_is_not_utf8_is_one_line(run, tmp_path):
    (tmp_path / "settings.json").write_bytes(b'{"account": "\xff"}')
    status, out, err = run("build", "--settings", "settings.json")
    assert (status, out) == (2, "")
    assert err == ["driptag: --settings: settings.json is not UTF-8 text (invalid start byte at byte 13)"], err


def test_a_deeply_nested_value_is_shown_shortened(run, tmp_path):
    (tmp_path / "settings.json").write_text('{"account": "83702741", "campaignId": ' + "[" * 500 + "]" * 500 + "}")
    status, out, err = run("build", "--settings", "settings.json")
    assert (status, out) == (2, "")
    assert err == ["driptag: settings.json: campaignId: [[[...]]] is not a Drip campaign ID: 1 to 20 digits, "
                   "like 1234567"], f"stderr {[line[:200] for line in err]}"


def test_an_empty_nonce_is_a_usage_error_that_names_the_flag(run):
    status, out, err = run("build", "--account", ACCOUNT, "--format", "html", "--nonce", "")
    assert (status, out) == (2, "")
    assert err == ["driptag: --nonce: a CSP nonce is 1 to 512 base64 or base64url characters "
                   "(see 'driptag build --help')"], f"stderr {err}"


def test_an_unexpected_error_with_a_long_multi_line_message_is_one_short_line(run, monkeypatch):
    def broken_render(*args, **kwargs):
        raise RuntimeError("first\nsecond " + "x" * 10_000)

    monkeypatch.setattr(cli, "render", broken_render)
    status, out, err = run("build", "--account", ACCOUNT)
    assert (status, out) == (1, "")
    assert len(err) == 1 and err[0].startswith("driptag: unexpected error: RuntimeError: first\\nsecond xxx") \
        and err[0].endswith("…") and len(err[0]) < 400, f"stderr {[line[:200] for line in err]}"


def test_a_host_or_path_with_control_characters_stays_on_one_line(run, tmp_path):
    status, out, err = run("demo", "--host", "evil\nhost", "--port", "0")
    assert (status, out) == (2, "")
    assert err == ["driptag: --host evil\\nhost: with the emulator the page loads track.js over http from "
                   "127.0.0.1, so listen on 127.0.0.1, localhost, 0.0.0.0 or ::, or use --drip real"], f"stderr {err}"
    status, out, err = run("build", "--account", ACCOUNT, "-o", "missing\n/drip.js")
    assert (status, err) == (1, ["driptag: missing\\n/drip.js: No such file or directory"]), f"stderr {err}"


# --- where the output goes -----------------------------------------------------------------------

def test_output_dash_is_stdout(run, tmp_path):
    status, out, err = run("build", "--account", ACCOUNT, "-o", "-")
    assert (status, err) == (0, [])
    assert out == render(Settings(account=ACCOUNT), "js")
    assert files_in(tmp_path) == [], f"a file was written: {files_in(tmp_path)}"


def test_output_to_dev_null_writes_nothing_anywhere(run, tmp_path, monkeypatch):
    renames = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: renames.append(dst) or real_replace(src, dst))
    status, out, err = run("build", "--account", ACCOUNT, "-o", "/dev/null", "--manifest", "/dev/null")
    assert (status, out, err) == (0, "", []), f"status {status}, stderr {err}"
    assert renames == [] and stat.S_ISCHR(os.stat("/dev/null").st_mode), renames
    assert files_in(tmp_path) == []


def test_output_through_a_symlink_writes_its_target_and_keeps_the_link(run, tmp_path):
    (tmp_path / "public").mkdir()
    (tmp_path / "public" / "drip.js").write_bytes(b"old")
    (tmp_path / "drip.js").symlink_to("public/drip.js")
    (tmp_path / "public" / "drip.json").write_bytes(b"{}")
    (tmp_path / "drip.json").symlink_to("public/drip.json")
    status, out, err = run("build", "--account", ACCOUNT, "-o", "drip.js", "--manifest", "drip.json")
    assert (status, out, err) == (0, "", []), f"status {status}, stderr {err}"
    assert (tmp_path / "drip.js").is_symlink() and (tmp_path / "drip.json").is_symlink(), "a link was replaced"
    assert (tmp_path / "public" / "drip.js").read_text() == render(Settings(account=ACCOUNT), "js")
    assert json.loads((tmp_path / "public" / "drip.json").read_text()) == build_manifest(Settings(account=ACCOUNT))
    assert files_in(tmp_path / "public") == ["drip.js", "drip.json"]


def test_an_existing_output_keeps_its_mode(run, tmp_path):
    (tmp_path / "drip.js").write_bytes(b"old")
    os.chmod(tmp_path / "drip.js", 0o640)
    status, out, err = run("build", "--account", ACCOUNT, "-o", "drip.js")
    assert (status, err) == (0, [])
    assert stat.S_IMODE(os.stat(tmp_path / "drip.js").st_mode) == 0o640
    assert (tmp_path / "drip.js").read_text() == render(Settings(account=ACCOUNT), "js")


# --- --batch: files that cannot be read ----------------------------------------------------------

def test_batch_cell_over_the_csv_field_limit_is_one_line_and_nothing_is_written(run, tmp_path):
    write_csv(tmp_path, f"account,campaignId\n{ACCOUNT},1\n1234567,{'9' * 200_000}\n7654321,2\n")
    status, out, err = run("build", "--batch", "accounts.csv", "--out-dir", "dist")
    assert (status, out) == (2, "")
    assert err == ["driptag: accounts.csv:3: a cell is longer than 131,072 characters, the most the CSV reader "
                   "takes (no setting is anywhere near that long)"], f"stderr {[line[:200] for line in err]}"
    assert not (tmp_path / "dist").exists(), "rows were written from a file that could not be read"


def test_batch_empty_csv_says_so(run, tmp_path):
    write_csv(tmp_path, "")
    status, out, err = run("build", "--batch", "accounts.csv", "--out-dir", "dist")
    assert (status, out) == (2, "")
    assert err == ["driptag: accounts.csv: the file is empty; its first line names the settings of each row by "
                   "their JSON keys, like account,campaignId"], f"stderr {err}"


def test_batch_csv_with_a_header_and_no_rows_says_so_and_succeeds(run, tmp_path):
    write_csv(tmp_path, "account,campaignId\n")
    status, out, err = run("build", "--batch", "accounts.csv", "--out-dir", "dist")
    assert (status, out) == (0, "")
    assert err == ["driptag: note: accounts.csv names its settings but has no rows; nothing was written"], err


def test_batch_csv_that_is_not_utf8_is_one_line_and_nothing_is_written(run, tmp_path):
    (tmp_path / "accounts.csv").write_bytes(b"account\n83702741\n\xff\xfe\n")
    status, out, err = run("build", "--batch", "accounts.csv", "--out-dir", "dist")
    assert (status, out) == (2, "")
    assert err == ["driptag: accounts.csv: not UTF-8 text (invalid start byte); save it as UTF-8"], f"stderr {err}"
    assert not (tmp_path / "dist").exists()


def test_batch_defaults_from_flags_and_file_are_checked_once_before_any_row(run, tmp_path):
    write_csv(tmp_path, "account\n83702741\n1234567\n")
    (tmp_path / "settings.json").write_text('{"globalName": "window"}')
    status, out, err = run("build", "--batch", "accounts.csv", "--out-dir", "dist", "--settings", "settings.json",
                           "--keys", "camel")
    assert (status, out) == (2, "")
    assert err == ["driptag: settings.json: globalName: 'window' is not allowed: the page, the browser or Drip "
                   "relies on that name; use another identifier, like analytics",
                   "driptag: keyStyle (--keys): 'camel' is not allowed: one of segment, snake"], f"stderr {err}"
    assert not (tmp_path / "dist").exists()


def test_batch_writes_through_a_symlinked_output_file(run, tmp_path):
    write_csv(tmp_path, f"account\n{ACCOUNT}\n")
    (tmp_path / "dist").mkdir()
    (tmp_path / "shared.js").write_bytes(b"old")
    (tmp_path / "dist" / f"{ACCOUNT}.js").symlink_to("../shared.js")
    status, out, err = run("build", "--batch", "accounts.csv", "--out-dir", "dist")
    assert (status, err) == (0, [])
    assert (tmp_path / "dist" / f"{ACCOUNT}.js").is_symlink()
    assert (tmp_path / "shared.js").read_text() == render(Settings(account=ACCOUNT))


# --- the installed console script ----------------------------------------------------------------

def test_the_installed_driptag_command_exit_codes_and_clean_stdout(tmp_path):
    driptag = Path(sys.executable).parent / "driptag"
    assert driptag.is_file(), f"{driptag} is not installed (run `make venv`)"
    ok = subprocess.run([str(driptag), "build", "--account", ACCOUNT], capture_output=True, text=True, cwd=tmp_path,
                        timeout=60)
    assert (ok.returncode, ok.stderr) == (0, ""), f"status {ok.returncode}, stderr {ok.stderr!r}"
    assert ok.stdout == render(Settings(account=ACCOUNT), "js"), "stdout holds more (or less) than the loader"
    bad = subprocess.run([str(driptag), "build", "--account", "12", "--campaign-id", "x"], capture_output=True,
                         text=True, cwd=tmp_path, timeout=60)
    assert (bad.returncode, bad.stdout) == (2, ""), f"status {bad.returncode}, stdout {bad.stdout!r}"
    assert bad.stderr.splitlines() == [
        "driptag: account (--account): '12' is not a Drip account ID: 7 to 9 digits, like 83702741",
        "driptag: campaignId (--campaign-id): 'x' is not a Drip campaign ID: 1 to 20 digits, like 1234567",
    ], f"stderr {bad.stderr!r}"
    usage = subprocess.run([str(driptag), "build", "--account", ACCOUNT, "--nonce", "abc"], capture_output=True,
                           text=True, cwd=tmp_path, timeout=60)
    assert (usage.returncode, usage.stdout, len(usage.stderr.splitlines())) == (2, "", 1), usage
