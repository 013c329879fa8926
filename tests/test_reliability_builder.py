"""Reliability: the builder fed hostile values.

- Every setting, given by flag and by --settings file, each hostile value (`</script>`, quotes, backslashes,
  U+2028/2029, newlines, NUL, a 10 MB string, non-ASCII digits): `driptag build` exits 2 with exactly one
  short, printable line naming the setting, writes nothing to stdout, and leaves an existing output file and
  manifest byte-identical with no stray file. The API token is the exception: it is never used, so a hostile
  one is ignored with the one warning (inert).
- Rendered inert, proven in Chromium: hostile values forced past validation into every template value (the
  second line of defence), in the js and html forms, minified and readable, run nothing and arrive as
  the exact strings.
- The API token appears nowhere the browser can see (page, scripts, requests, globals), for every format,
  minified and readable, and in no file or manifest the CLI writes.
- A build interrupted while writing (Ctrl-C) leaves the old file and no temporary file.

Unit tests of the same rules with Python values are in test_settings.py, test_render.py and test_cli.py
(one hostile value per setting in Python, the token in render() outputs, a failed build with a bad account).
"""

from __future__ import annotations

import importlib
import json
import os

import pytest

from driptag import Settings, render
from driptag.cli import API_TOKEN_WARNING
from driptag.loader.render import browser_context, track_js_selector

render_module = importlib.import_module("driptag.loader.render")

ACCOUNT = "83702741"
TOKEN = "HostileTokenNeverInTheBrowser0042"
BIG = "x" * 10_000_000  # 10 MB

PAYLOADS = {
    "</script>": "</script><script>window.__pwned=1</script>",
    "single quote": "'",
    "double quote": '"',
    "backslash": "\\",
    "U+2028": "\u2028",
    "U+2029": "\u2029",
    "newline": "\n",
    "NUL": "\x00",
    "10 MB": BIG,
    "Arabic-Indic digits": "٨٣٧٠٢٧٤١",
    "fullwidth digits": "８３７０２７４１",
    "Devanagari digits": "८३७०२७४१",
}

# setting (JSON key) -> (flag, a valid value the payload is appended to)
SETTINGS = {
    "account": ("--account", "83702741"),
    "campaignId": ("--campaign-id", "1234567"),
    "scriptOrigin": ("--script-origin", "https://tag.getdrip.com/"),
    "globalName": ("--global", "analytics"),
    "keyStyle": ("--keys", "snake"),
    "consent": ("--consent", "required"),
    "callbackTimeout": ("--callback-timeout", "300"),
    "debug": (None, "true"),  # a boolean flag: a value comes only from a settings file
    "preload": (None, "true"),
}


EARLIER = {"drip.js": b"// the earlier build\n\x00\xff", "drip.json": b'{"earlier": true}\n'}


def hostile_cases(setting: str) -> list[tuple[str, str]]:
    """(name, value): each payload alone, and appended to a valid value."""
    valid = SETTINGS[setting][1]
    cases = [(name, payload) for name, payload in PAYLOADS.items()]
    cases += [(f"valid + {name}", valid + payload) for name, payload in PAYLOADS.items() if name != "10 MB"]
    return cases


def check_rejected(status, out, err, setting, how, name, tmp_path):
    flag = SETTINGS[setting][0]
    where = f"{setting} by {how}, {name}"
    assert (status, out) == (2, ""), f"{where}: status {status}, stdout {out[:100]!r}"
    assert len(err) == 1, f"{where}: {len(err)} lines on stderr: {[line[:120] for line in err[:5]]}"
    line = err[0]
    assert line.startswith("driptag: ") and (setting in line or (flag and flag in line)), \
        f"{where}: the line does not name the setting: {line[:200]!r}"
    assert len(line) <= 300, f"{where}: the line is {len(line):,} characters long: {line[:150]!r}…"
    assert line.isprintable(), f"{where}: the line holds control or separator characters: {line[:300]!r}"
    for file, content in EARLIER.items():
        assert (tmp_path / file).read_bytes() == content, f"{where}: {file} changed"


@pytest.mark.parametrize("setting", sorted(SETTINGS))
def test_hostile_value_of_each_setting_exits_2_with_one_clear_line_and_leaves_earlier_files(run, tmp_path, setting):
    flag = SETTINGS[setting][0]
    for file, content in EARLIER.items():
        (tmp_path / file).write_bytes(content)
    tried = 0
    for name, value in hostile_cases(setting):
        if flag is not None:
            status, out, err = run("build", "--account", ACCOUNT, flag, value, "-o", "drip.js",
                                   "--manifest", "drip.json") if setting != "account" else \
                run("build", flag, value, "-o", "drip.js", "--manifest", "drip.json")
            check_rejected(status, out, err, setting, "flag", name, tmp_path)
            tried += 1
        document = {"account": ACCOUNT, setting: value}
        (tmp_path / "settings.json").write_text(json.dumps(document), encoding="utf-8")
        status, out, err = run("build", "--settings", "settings.json", "-o", "drip.js", "--manifest", "drip.json")
        check_rejected(status, out, err, setting, "settings file", name, tmp_path)
        tried += 1
    assert sorted(os.listdir(tmp_path)) == ["drip.js", "drip.json", "settings.json"], \
        f"stray files: {sorted(os.listdir(tmp_path))}"
    assert tried == (2 if flag else 1) * (2 * len(PAYLOADS) - 1)


def test_hostile_api_token_is_refused_without_being_shown_and_nothing_is_written(run, tmp_path):
    refused = 0
    for name, payload in PAYLOADS.items():
        for value in (TOKEN + payload, payload):
            status, out, err = run("build", "--account", ACCOUNT, "--api-token", value, "-o", "drip.out",
                                   "--manifest", "m.json")
            assert (status, out) == (2, ""), f"api token {name}: exit {status}, stderr {err[:3]}"
            assert err == [f"driptag: apiToken (--api-token): a value of {len(value):,} characters is not a Drip "
                           "API token: 20 to 128 letters and digits"], f"api token {name}: {err[:3]}"
            refused += 1
    assert refused == 2 * len(PAYLOADS)
    assert os.listdir(tmp_path) == [], f"files were written: {sorted(os.listdir(tmp_path))}"


@pytest.mark.parametrize("fmt, extra", [("js", []), ("js", ["--no-minify"]), ("html", []),
                                        ("html", ["--no-minify", "--nonce", "bm9uY2U"])])
def test_api_token_reaches_no_file_of_any_format_from_flags_file_or_batch(run, tmp_path, fmt, extra):
    (tmp_path / "settings.json").write_text(json.dumps({"account": ACCOUNT, "apiToken": TOKEN}), encoding="utf-8")
    (tmp_path / "accounts.csv").write_text(f"account,apiToken\n{ACCOUNT},{TOKEN}\n1234567,{TOKEN}\n", encoding="utf-8")
    results = [run("build", "--account", ACCOUNT, "--api-token", TOKEN, "--format", fmt, *extra,
                   "-o", "a.out", "--manifest", "a.json"),
               run("build", "--settings", "settings.json", "--format", fmt, *extra),
               run("build", "--batch", "accounts.csv", "--out-dir", "dist", "--format", fmt, *extra,
                   "--manifest", "batch.json")]
    for status, out, err in results:
        assert (status, err) == (0, [API_TOKEN_WARNING]), (status, err)
        assert TOKEN not in out
    files = [path for path in tmp_path.rglob("*") if path.is_file() and path.suffix != ".csv"
             and path.name != "settings.json"]
    assert sorted(path.name for path in files) == ["1234567." + fmt, f"{ACCOUNT}.{fmt}", "a.json", "a.out",
                                                   "batch.json"]
    for path in files:
        assert TOKEN.encode() not in path.read_bytes(), f"the API token is in {path.name}"


def test_build_interrupted_while_writing_leaves_the_earlier_file_and_no_temporary_file(run, tmp_path, monkeypatch):
    (tmp_path / "drip.js").write_bytes(EARLIER["drip.js"])

    def interrupted(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupted)
    status, out, err = run("build", "--account", ACCOUNT, "-o", "drip.js")
    assert (status, out, [line for line in err if line]) == (1, "", ["driptag: interrupted"]), (status, out, err)
    assert (tmp_path / "drip.js").read_bytes() == EARLIER["drip.js"]
    assert os.listdir(tmp_path) == ["drip.js"], f"the folder holds {os.listdir(tmp_path)}"


# ---------------------------------------------------------------------------------------------------
# In the browser: hostile values forced past validation are inert; the token is nowhere.

BROWSER_PAYLOADS = [
    "</script><script>window.__pwned='script'</script>",
    "'-(window.__pwned='single')-'",
    '"-(window.__pwned="double")-"',
    '\\"-(window.__pwned="backslash")//',
    "\u2028window.__pwned='u2028'//\u2029window.__pwned='u2029'//",
    "<!--<script>window.__pwned='comment'//",
    "]]><img src=x onerror=\"window.__pwned='img'\">",
    "${window.__pwned='template'}\x00\n\r",
    "javascript:window.__pwned='url'//",
]
STRING_KEYS = ["account", "campaign_id", "script_url", "global_name", "version"]  # script_selector: derived


def hostile_contexts() -> list[dict]:
    """Four contexts; each puts a different payload into each string value, and strings into the others."""
    contexts = []
    base = browser_context(Settings(account=ACCOUNT))
    for shift in range(4):
        context = dict(base)
        for index, key in enumerate(STRING_KEYS):
            context[key] = f"{key}:" + BROWSER_PAYLOADS[(index + shift) % len(BROWSER_PAYLOADS)]
        # Derived from script_url as the builder derives it (render.browser_context).
        context["script_selector"] = track_js_selector(context["script_url"])
        extra = BROWSER_PAYLOADS[(shift + 5) % len(BROWSER_PAYLOADS)]
        context.update(debug=extra, callback_timeout_ms=extra, snake_keys=extra) if shift % 2 else None
        contexts.append(context)
    return contexts


def loader_code(context: dict, minified: bool) -> str:
    template = (render_module._minified_template() if minified
                else render_module._environment().get_template("loader.js.j2"))
    return template.render(context)


ERROR_SPY = "window.__errors = []; addEventListener('error', function (e) { __errors.push(String(e.message)); });"


def frame_page(drip, sources: list[str]) -> list:
    """A page with one iframe per URL; returns the frames, each loaded."""
    iframes = "".join(f'<iframe src="{src}"></iframe>' for src in sources)
    drip.page.goto(drip.site.add_page(f"<!doctype html><html><body>{iframes}</body></html>"))
    frames = [frame for frame in drip.page.frames if frame != drip.page.main_frame]
    assert len(frames) == len(sources), f"{len(frames)} frames loaded of {len(sources)}"
    return frames


def test_hostile_template_values_forced_past_validation_run_nothing_in_chromium(drip):
    drip.page.add_init_script(ERROR_SPY)
    variants, sources = [], []
    for context in hostile_contexts():
        for minified in (True, False):
            code = loader_code(context, minified)
            html = render_module._snippet_template().render(body=render_module.Markup(code), nonce=None,
                                                            preload_url=context["script_url"])
            sources.append(drip.site.add_page(f"<!doctype html><head>{html}</head>"))
            variants.append((context, minified, "html"))
            js = drip.site.add(code, "js")
            sources.append(drip.site.add_page(f'<!doctype html><head><script src="{js}"></script></head>'))
            variants.append((context, minified, "js"))
    frames = frame_page(drip, sources)
    for frame, (context, minified, fmt) in zip(frames, variants):
        where = f"{fmt}, {'minified' if minified else 'readable'}, account {context['account'][:40]!r}"
        try:
            frame.wait_for_function("() => window.driptag", timeout=5000)
        except Exception:
            raise AssertionError(f"{where}: the loader did not run; errors {frame.evaluate('() => __errors')}") from None
        seen = frame.evaluate("""names => ({pwned: window.__pwned, errors: __errors, account: driptag.account,
            version: driptag.version, dcs: _dcs.account, facade: typeof (window[names.global] || {}).track,
            src: [...document.querySelectorAll('script[src]')].map(s => s.getAttribute('src')).filter(s => !/pages/.test(s))})""",
                              {"global": context["global_name"]})
        assert seen["pwned"] is None, f"{where}: injected code ran ({seen['pwned']!r})"
        assert seen["errors"] == [], f"{where}: errors {seen['errors']}"
        assert [seen["account"], seen["version"], seen["dcs"]] == [context["account"], context["version"],
                                                                     context["account"]], f"{where}: values changed"
        assert seen["facade"] == "function", f"{where}: the facade is not at window[global_name]"
        assert seen["src"] == [context["script_url"]], f"{where}: track.js src {seen['src']!r}"
    assert drip.run("() => window.__pwned") is None and drip.page_errors == [], drip.page_errors


def test_api_token_is_nowhere_in_the_browser_for_every_format_minified_or_not(drip):
    settings = Settings(account=ACCOUNT, campaign_id="1234567", api_token=TOKEN)
    bodies: list[str] = []
    drip.page.on("request", lambda request: bodies.append(request.url + " " + (request.post_data or "")))
    sources = []
    with pytest.warns(UserWarning, match="server-side secret"):  # the builder's one warning about the token
        for minified in (True, False):
            sources.append(drip.site.add_page("<!doctype html><head>" + render(settings, "html", minify=minified)
                                              + "</head>"))
            js = drip.site.add(render(settings, "js", minify=minified), "js")
            sources.append(drip.site.add_page(f'<!doctype html><head><script src="{js}"></script></head>'))
    frames = frame_page(drip, sources)
    for frame in frames:
        frame.wait_for_function("() => window.driptag && driptag.status === 'ready'", timeout=5000)
        frame.evaluate("() => { analytics.identify('u1', {email: 'a@b.co'}); analytics.track('t'); }")
    for frame in frames:
        frame.wait_for_function("() => dripEmulator.received.filter(r => r.answer !== 'pending').length === 3",
                                timeout=5000)
    def reports_sent() -> int:  # the emulator posts one report, or a list of them, per request
        bodies_ = [json.loads(body.split(" ", 1)[1]) for body in bodies if "/emulator/events " in body]
        return sum(len(body) if isinstance(body, list) else 1 for body in bodies_)

    for _ in range(50):  # the last reports are posted after the last answers: a bounded wait for them
        if reports_sent() >= 12:
            break
        drip.page.wait_for_timeout(100)
    for frame in frames:
        visible = frame.evaluate("""() => {
            var seen = [document.documentElement.outerHTML];
            [...document.scripts].forEach(s => seen.push(s.text, s.src));
            ['driptag', 'analytics', '_dcs', 'dripEmulator'].forEach(name => {
              try { seen.push(JSON.stringify(window[name], (k, v) => typeof v === 'function' ? String(v) : v)); }
              catch (e) { seen.push('unserialisable ' + name); }
            });
            seen.push(JSON.stringify(Object.keys(window)), document.cookie, JSON.stringify(localStorage));
            return seen.join('\\n'); }""")
        assert TOKEN not in visible, "the API token is visible in the page"
    script_bodies = [drip.run("url => fetch(url).then(r => r.text())", url) for url in sources]
    assert all(TOKEN not in body for body in bodies + script_bodies), "the API token went over the network"
    assert reports_sent() == 12, f"{reports_sent()} of the 12 collector reports were sent"
