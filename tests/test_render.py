"""Rendering the loader (js and html, minified and readable), the one escaping
path, the nonce, the per-settings cache, and build_manifest."""

from __future__ import annotations

import base64
import gzip
import importlib
import hashlib
import json
import re
import subprocess
import sys
import warnings
from pathlib import Path

import jinja2
import pytest
from markupsafe import Markup

import driptag
from driptag import Settings, SettingsError, build_manifest, render
from driptag.loader.escaping import html_attribute, script_json
from driptag.loader.minify import minify
from driptag.loader.render import browser_context, inline_body

render_module = importlib.import_module("driptag.loader.render")  # `driptag.loader.render` the attribute is the function

ACCOUNT = "83702741"
TRACK_JS = f"https://tag.getdrip.com/{ACCOUNT}.js"

VARIANTS = {
    "defaults": dict(account=ACCOUNT),
    "campaign": dict(account=ACCOUNT, campaign_id="1234567"),
    "everything": dict(account="123456789", campaign_id="98765432109876543210", script_origin="http://127.0.0.1:5000/",
                       global_name="$drip_2", key_style="snake", consent="required", callback_timeout_ms=0,
                       debug=True),
}


def settings_for(name: str) -> Settings:
    return Settings(**VARIANTS[name])


def script_tags(html: str) -> tuple[int, int]:
    return len(re.findall(r"<script", html, re.I)), len(re.findall(r"</script", html, re.I))


# --- outputs -------------------------------------------------------------------------------------

def test_js_is_minified_by_default_with_comments_and_white_space_removed_and_local_names_shortened():
    settings = settings_for("campaign")
    minified, readable = render(settings, "js"), render(settings, "js", minify=False)
    assert minified == render(settings, "js", minify=True), "minify=True is not the default"
    assert len(minified) < len(readable) * 0.6, f"minified is {len(minified)} bytes, readable {len(readable)}"
    assert "/*" not in minified and "\n  " not in minified, "the minified loader keeps comments or indentation"
    constants = set(re.findall(r"\b([A-Z][A-Z0-9_]{4,})\s*=", readable))
    assert len(constants) >= 3, f"the readable loader names few constants: {constants}"
    kept = {name for name in constants if re.search(rf"\b{name}\b", minified)}
    assert not kept, f"local names were not shortened: {sorted(kept)}"
    assert re.search(r"\bACCOUNT\s*=\s*\"83702741\"", readable), "the readable loader does not hold the account as JSON"
    assert '"83702741"' in minified and '"1234567"' in minified, "the minified loader lost a setting"
    assert '"https://tag.getdrip.com/83702741.js"' in minified, "the script URL is not placed as JSON"


@pytest.mark.parametrize("minified", [True, False])
def test_html_is_a_preload_link_for_track_js_then_one_script_element_around_the_js_loader(minified):
    settings = settings_for("campaign")
    js = render(settings, "js", minify=minified)
    link = f'<link rel="preload" as="script" href="{TRACK_JS}"'
    assert render(settings, "html", minify=minified) == f"{link}><script>{js}</script>"
    assert render(settings, "html", minify=minified, nonce="r4nd0m+/=") == \
        f'{link} nonce="r4nd0m+/="><script nonce="r4nd0m+/=">{js}</script>'


@pytest.mark.parametrize("minified", [True, False])
def test_html_without_preload_is_one_script_element_around_the_js_loader(minified):
    settings = settings_for("campaign").replace(preload=False)
    js = render(settings, "js", minify=minified)
    assert render(settings, "html", minify=minified) == f"<script>{js}</script>"
    assert render(settings, "html", minify=minified, nonce="r4nd0m+/=") == f'<script nonce="r4nd0m+/=">{js}</script>'


def test_html_with_consent_required_has_no_preload_link():
    # Nothing is requested from Drip before consent, so no <link rel="preload"> either.
    settings = Settings(account=ACCOUNT, consent="required")
    assert render(settings, "html") == f"<script>{render(settings, 'js')}</script>"
    assert render(settings, "html", nonce="abc") == f'<script nonce="abc">{render(settings, "js")}</script>'


def test_the_preload_link_names_the_script_origin_setting_escaped_as_an_attribute():
    settings = Settings(account=ACCOUNT, script_origin="http://127.0.0.1:5000")
    assert render(settings, "html").startswith(
        '<link rel="preload" as="script" href="http://127.0.0.1:5000/83702741.js"><script>')


def test_the_preload_setting_does_not_change_the_js_format():
    settings = settings_for("campaign")
    assert render(settings.replace(preload=False), "js") == render(settings, "js")
    assert render(settings.replace(preload=False), "js", minify=False) == render(settings, "js", minify=False)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_minified_output_equals_minifying_the_readable_render(name):
    settings = settings_for(name)
    assert render(settings, "js") == minify(render(settings, "js", minify=False)), \
        "the cached minified template does not give what minifying the readable loader gives"


def test_minified_output_equals_minifying_the_readable_render_for_hostile_values_placed_past_validation():
    settings = Settings(account=ACCOUNT)
    object.__setattr__(settings, "global_name", "x</script><!--\u2028\u2029'\"\\&{{ y }}{% raw %}@@driptag:account@@")
    assert render(settings, "js") == minify(render(settings, "js", minify=False))


def test_minifier_joins_consecutive_var_statements_and_writes_booleans_short():
    assert minify("function f(a) { var x = true; var y = false; if (a) { var z; var w; } return [x, y, z, w]; }") == \
        "function f(e){var c=!0,b=!1;if(e){var a,d}return[c,b,a,d]}\n"
    assert minify("var x = 1; var y; f(); var z;") == "var x=1,y;f();var z\n"


def test_unknown_format_is_an_error():
    with pytest.raises(ValueError) as caught:
        render(Settings(account=ACCOUNT), "css")
    assert str(caught.value) == "format must be one of js, html, not 'css'"


# --- determinism ---------------------------------------------------------------------------------

def all_outputs(settings: Settings) -> list[str]:
    return [render(settings, "js"), render(settings, "js", minify=False),
            render(settings, "html", nonce="abc"), render(settings, "html", minify=False)]


def test_output_is_byte_identical_across_calls_and_after_the_caches_are_cleared():
    first = all_outputs(settings_for("everything"))
    assert all_outputs(Settings(**VARIANTS["everything"])) == first, "a second render differs"
    render_module._loader.cache_clear()
    render_module._minified_template.cache_clear()
    assert all_outputs(Settings(**VARIANTS["everything"])) == first, "re-minifying gave different bytes"


def test_output_is_byte_identical_in_a_fresh_process_with_another_hash_seed(tmp_path):
    code = ("import json; from driptag import Settings, render; "
            f"s = Settings(**{VARIANTS['everything']!r}); "
            "print(json.dumps([render(s, 'js'), render(s, 'js', minify=False), "
            "render(s, 'html', nonce='abc'), render(s, 'html', minify=False)]))")
    same_builder = str(Path(driptag.__file__).resolve().parent.parent)  # the builder this process imported
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=60,
                            env={"PYTHONHASHSEED": "12345", "PATH": "/usr/bin:/bin", "PYTHONPATH": same_builder})
    assert result.returncode == 0, f"the fresh process failed: {result.stderr}"
    assert json.loads(result.stdout) == all_outputs(settings_for("everything")), \
        "a fresh process (PYTHONHASHSEED=12345) rendered different bytes"


# --- the one escaping path ----------------------------------------------------------------------

@pytest.mark.parametrize("value, expected", [
    ("</script>", '"\\u003c/script\\u003e"'),
    ("</SCRIPT >", '"\\u003c/SCRIPT \\u003e"'),
    ("<!--", '"\\u003c!--"'),
    ("-->", '"--\\u003e"'),
    ('say "hi"', '"say \\"hi\\""'),
    ("it's", '"it\\u0027s"'),
    ("back\\slash", '"back\\\\slash"'),
    ("line\u2028para\u2029", '"line\\u2028para\\u2029"'),
    ("a&b", '"a\\u0026b"'),
    ("é中😀", '"é中😀"'),
    ("nul\x00\n", '"nul\\u0000\\n"'),
    (None, "null"),
    (True, "true"),
    (300, "300"),
    ({"b": "<", "a": [1, "'"]}, '{"a":[1,"\\u0027"],"b":"\\u003c"}'),
])
def test_script_json_escapes_what_could_end_or_break_an_inline_script(value, expected):
    result = script_json(value)
    assert isinstance(result, Markup), "script_json must return Markup so the template accepts it"
    assert str(result) == expected, f"script_json({value!r}) gave {str(result)!r}"
    assert json.loads(result) == value, "the escaped JSON does not read back as the same value"
    for unsafe in "<>&'\u2028\u2029":
        assert unsafe not in result, f"{unsafe!r} is left unescaped in {str(result)!r}"


def test_script_json_refuses_nan():
    with pytest.raises(ValueError):
        script_json(float("nan"))


def test_html_attribute_escapes_quotes_and_markup():
    assert str(html_attribute("a\"b'<c>&")) == "a&quot;b&#x27;&lt;c&gt;&amp;"


def test_a_template_cannot_place_a_value_without_the_js_or_attr_filter():
    env = render_module._environment()
    with pytest.raises(TypeError) as caught:
        env.from_string("var x = {{ value }};").render(value="</script>")
    assert str(caught.value) == "a template placed a value without the |js or |attr filter"
    assert env.from_string("var x = {{ value|js }};").render(value="</script>") == 'var x = "\\u003c/script\\u003e";'


def test_a_missing_template_value_is_an_error_not_an_empty_string():
    with pytest.raises(jinja2.UndefinedError) as caught:
        render_module._environment().from_string("var x = {{ missing|js }};").render()
    assert str(caught.value) == "'missing' is undefined"
    with pytest.raises((jinja2.UndefinedError, TypeError)):  # and without a filter, still an error
        render_module._environment().from_string("var x = {{ missing }};").render()


HOSTILE = ["</script><script>alert(1)</script>", "<!--", '"', "'", "\\", "\u2028", "\u2029", "&amp;", "é"]


@pytest.mark.parametrize("setting", ["account", "campaign_id", "script_origin", "global_name", "key_style", "consent"])
@pytest.mark.parametrize("payload", HOSTILE)
def test_hostile_values_in_string_settings_are_rejected_by_validation(setting, payload):
    base = {"script_origin": "https://tag.getdrip.com/x", "global_name": "drip", "key_style": "snake",
            "consent": "auto", "account": ACCOUNT, "campaign_id": "1234"}
    value = base[setting] + payload
    with pytest.raises(SettingsError) as caught:
        Settings(**{**base, setting: value})
    assert [p.setting for p in caught.value.problems] == [setting], f"{setting}={value!r} gave {caught.value}"


@pytest.mark.parametrize("setting", ["account", "campaign_id", "script_url", "global_name"])
@pytest.mark.parametrize("minified", [True, False])
def test_values_that_get_past_validation_are_placed_only_through_script_json(setting, minified):
    """The second line of defence: force a hostile value into the context, bypassing validation."""
    hostile = f"{setting}</script><script>alert(1)</script><!--'\"\\&\u2028\u2029"
    settings = Settings(account=ACCOUNT, campaign_id="1", key_style="snake", debug=minified)
    context = browser_context(settings)
    context[setting] = hostile
    template = (render_module._minified_template() if minified
                else render_module._environment().get_template("loader.js.j2"))
    code = template.render(context)
    assert str(script_json(hostile)) in code, f"{setting} was not placed as script_json"
    assert hostile not in code and "alert(1)</script>" not in code, f"{setting} was placed raw"
    tag = f"<script>{code}</script>"
    assert script_tags(tag) == (1, 1) and "<!--" not in tag, f"{setting} breaks out of the inline <script>"


@pytest.mark.parametrize("name", sorted(VARIANTS))
@pytest.mark.parametrize("minified", [True, False])
@pytest.mark.parametrize("nonce", [None, "abc-_+/="])
def test_html_holds_exactly_one_script_element_and_no_html_comment(name, minified, nonce):
    settings = settings_for(name)
    html = render(settings, "html", minify=minified, nonce=nonce)
    assert script_tags(html) == (1, 1), f"the html output has {script_tags(html)} <script / </script"
    assert "<!--" not in html, "the html output holds <!--"
    assert html.endswith("</script>"), f"the html ends {html[-20:]!r}"
    nonce_attribute = f' nonce="{nonce}"' if nonce else ""
    link = f'<link rel="preload" as="script" href="{settings.script_url}"{nonce_attribute}>'
    assert html[:html.index("<script")] == ("" if settings.consent == "required" else link), \
        f"before the <script>: {html[:html.index('<script')]!r}"


def test_the_browser_context_never_holds_the_api_token():
    token = "BrowserContextToken0001"
    context = browser_context(Settings(account=ACCOUNT, api_token=token))
    assert sorted(context) == ["account", "callback_timeout_ms", "campaign_id", "consent_required", "debug",
                               "global_name", "script_selector", "script_url", "snake_keys", "version"], f"context keys: {sorted(context)}"
    assert token not in repr(context)


def test_the_api_token_never_appears_in_any_output_and_warns_once():
    token = "NeverInTheBrowser0042xyz"  # unique to this test, so no earlier render is cached
    settings = Settings(account=ACCOUNT, campaign_id="77", api_token=token)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        outputs = [render(settings, fmt, minify=minified, nonce=nonce)
                   for fmt, nonce in (("js", None), ("html", None), ("html", "n0nce"))
                   for minified in (True, False)]
        outputs += [render(settings, "js"), json.dumps(build_manifest(settings, "html"))]
    for output in outputs:
        assert token not in output, "the API token was written into browser output"
    messages = [str(w.message) for w in caught]
    assert messages == ["driptag: the API token is a server-side secret; it is not written into browser output"], \
        f"expected one warning, got {messages}"
    without = Settings(account=ACCOUNT, campaign_id="77")
    assert outputs[:2] == [render(without, "js"), render(without, "js", minify=False)], \
        "the token changed the output"


# --- the nonce -----------------------------------------------------------------------------------

@pytest.mark.parametrize("nonce", ["abc", "AbC0+/==", "a-b_c", "x" * 512, "nonce-value_2"])
def test_base64_and_base64url_nonces_are_placed_as_an_attribute(nonce):
    html = render(Settings(account=ACCOUNT), "html", nonce=nonce)
    assert html.startswith(f'<link rel="preload" as="script" href="{TRACK_JS}" nonce="{nonce}"><script nonce="{nonce}">'), \
        f"the html starts {html[:120]!r}"


@pytest.mark.parametrize("nonce", ['a"b', "a<b", "a>b", "a b", " abc", "abc\n", "a'b", "a&b", "", "x" * 513, "é",
                                   'x" onload="alert(1)', 123])
def test_other_nonces_are_refused(nonce):
    with pytest.raises(ValueError) as caught:
        render(Settings(account=ACCOUNT), "html", nonce=nonce)
    assert str(caught.value) == "a CSP nonce is 1 to 512 base64 or base64url characters", f"{nonce!r}: {caught.value}"


def test_a_nonce_with_the_js_format_is_refused():
    with pytest.raises(ValueError) as caught:
        render(Settings(account=ACCOUNT), "js", nonce="abc")
    assert str(caught.value) == "a nonce belongs to the html format; for js put it on the page's <script src> tag"


def test_the_nonce_does_not_change_the_body_or_its_csp_hash():
    settings = settings_for("campaign")
    bodies = {inline_body(render(settings, "html", nonce=nonce)) for nonce in (None, "one", "two+/=")}
    assert bodies == {render(settings, "js")}, "the nonce changed the script body"
    hashes = {build_manifest(settings, "html", nonce=nonce)["csp_hash"] for nonce in (None, "one", "two+/=")}
    assert len(hashes) == 1, f"the CSP hash depends on the nonce: {hashes}"


def test_another_nonce_is_served_from_the_cache_without_rendering_or_minifying_again(monkeypatch):
    settings = Settings(account="7777777", campaign_id="4242")  # not rendered by any other test
    first = render(settings, "html", nonce="first")
    calls = []
    monkeypatch.setattr(render_module, "minify", lambda source: calls.append("minify") or minify(source))
    real_template = render_module._minified_template
    monkeypatch.setattr(render_module, "_minified_template", lambda: calls.append("template") or real_template())
    before = render_module._loader.cache_info()
    second = render(settings, "html", nonce="second")
    after = render_module._loader.cache_info()
    assert (after.hits - before.hits, after.misses - before.misses) == (1, 0), \
        f"the second render was not a cache hit: {before} then {after}"
    assert calls == [], f"the second render re-rendered or re-minified: {calls}"
    assert second == first.replace('nonce="first"', 'nonce="second"')


def test_new_settings_reuse_the_process_wide_minified_template(monkeypatch):
    render(Settings(account=ACCOUNT), "js")  # the minified template exists
    calls = []
    monkeypatch.setattr(render_module, "minify", lambda source: calls.append(source) or minify(source))
    code = render(Settings(account="7654321", campaign_id="99"), "js")
    assert calls == [], "rendering new settings ran the minifier again"
    assert '"7654321"' in code and '"99"' in code


# --- build_manifest ------------------------------------------------------------------------------

@pytest.mark.parametrize("minified", [True, False])
def test_js_manifest_reports_sizes_hashes_and_the_sri_integrity(minified):
    settings = settings_for("campaign")
    manifest = build_manifest(settings, "js", minify=minified)
    data = render(settings, "js", minify=minified).encode("utf-8")
    assert manifest == {
        "account": ACCOUNT,
        "format": "js",
        "minified": minified,
        "bytes": len(data),
        "gzip_bytes": len(gzip.compress(data, compresslevel=9, mtime=0)),
        "sha256": hashlib.sha256(data).hexdigest(),
        "integrity": "sha384-" + base64.b64encode(hashlib.sha384(data).digest()).decode(),
        "driptag_version": driptag.__version__,
    }, f"manifest was {manifest}"
    assert re.fullmatch(r"sha384-[A-Za-z0-9+/]{64}", manifest["integrity"]), manifest["integrity"]
    assert re.fullmatch(r"[0-9a-f]{64}", manifest["sha256"]), manifest["sha256"]
    assert json.loads(json.dumps(manifest)) == manifest


@pytest.mark.parametrize("minified", [True, False])
def test_html_manifest_reports_the_csp_hash_of_the_inline_body(minified):
    settings = settings_for("everything")
    manifest = build_manifest(settings, "html", minify=minified, nonce="abc")
    html = render(settings, "html", minify=minified, nonce="abc")
    body = re.fullmatch(r'<script nonce="abc">(.*)</script>', html, re.S).group(1).encode("utf-8")
    data = html.encode("utf-8")
    assert manifest == {
        "account": "123456789",
        "format": "html",
        "minified": minified,
        "bytes": len(data),
        "gzip_bytes": len(gzip.compress(data, compresslevel=9, mtime=0)),
        "sha256": hashlib.sha256(data).hexdigest(),
        "csp_hash": "'sha256-" + base64.b64encode(hashlib.sha256(body).digest()).decode() + "'",
        "driptag_version": driptag.__version__,
    }, f"manifest was {manifest}"
    assert "integrity" not in manifest


def test_the_version_is_the_packages_version():
    assert driptag.__version__ == "0.1.0"
    assert f'"{driptag.__version__}"' in render(Settings(account=ACCOUNT), "js")
