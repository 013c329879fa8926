"""The Flask extension (driptag.web.flask): `drip_snippet(nonce=...)` in Jinja, settings checked at init_app,
and a small app with a fresh CSP nonce per request, in the browser against the emulator."""

from __future__ import annotations

import importlib
import re
import secrets
import threading
from collections.abc import Iterator

import pytest
from flask import Flask, g, render_template_string
from markupsafe import Markup
from werkzeug.serving import make_server

from driptag import Settings, SettingsError, render
from driptag.emulators import trackjs as emulator
from driptag.web.flask import Driptag, DriptagState
from conftest import TEST_CAMPAIGN

ACCOUNT = "83702741"
NONCE = "cmFuZG9tLW5vbmNl"
render_module = importlib.import_module("driptag.loader.render")  # the module (driptag.loader.render is also the function)


def make_app(config=None, **driptag_args) -> Flask:
    app = Flask("driptag-flask-ext-test")
    if config is not None:
        app.config["DRIPTAG"] = config
    Driptag(app, **driptag_args)
    return app


def snippet_in(app: Flask, template: str = "{{ drip_snippet(nonce=csp_nonce) }}", **context) -> str:
    with app.test_request_context("/"):
        return render_template_string(template, **context)


# Set-up and settings


def test_drip_snippet_renders_the_html_format_with_the_nonce():
    app = make_app({"account": ACCOUNT, "campaignId": TEST_CAMPAIGN})
    settings = Settings(account=ACCOUNT, campaign_id=TEST_CAMPAIGN)
    assert snippet_in(app, csp_nonce=NONCE) == render(settings, "html", nonce=NONCE)
    assert snippet_in(app, "{{ drip_snippet() }}") == render(settings, "html")
    assert snippet_in(app, csp_nonce=NONCE).startswith(
        f'<link rel="preload" as="script" href="https://tag.getdrip.com/{ACCOUNT}.js" nonce="{NONCE}"><script nonce="{NONCE}">')


def test_drip_snippet_without_the_preload_link():
    app = make_app({"account": ACCOUNT, "preload": False})
    assert snippet_in(app, csp_nonce=NONCE) == render(Settings(account=ACCOUNT, preload=False), "html", nonce=NONCE)
    assert snippet_in(app, csp_nonce=NONCE).startswith(f'<script nonce="{NONCE}">')


def test_the_snippet_is_markup_so_autoescaping_keeps_it_intact():
    app = make_app({"account": ACCOUNT})
    with app.test_request_context("/"):
        snippet = app.jinja_env.globals["drip_snippet"](nonce=NONCE)
        assert isinstance(snippet, Markup)
        # An .html template is autoescaped: the snippet is not turned into &lt;script…
        assert render_template_string("{% autoescape true %}{{ drip_snippet() }}{% endautoescape %}").startswith(
            '<link rel="preload" as="script" href="https://tag.getdrip.com/83702741.js"><script>')


def test_settings_argument_wins_over_the_config_and_may_be_a_settings_object_or_a_mapping():
    settings = Settings(account="1234567", global_name="dripAnalytics")
    app = make_app({"account": ACCOUNT}, settings=settings)
    assert app.extensions["driptag"].settings == settings
    app = make_app(settings={"account": "7654321", "keyStyle": "snake"})
    assert app.extensions["driptag"].settings == Settings(account="7654321", key_style="snake")


def test_a_whole_segment_settings_object_is_accepted():
    app = make_app({"integrations": {"Drip": {"account": ACCOUNT, "campaignId": TEST_CAMPAIGN, "versionSettings": {}}}})
    assert app.extensions["driptag"].settings == Settings(account=ACCOUNT, campaign_id=TEST_CAMPAIGN)


@pytest.mark.parametrize("config, setting", [
    ({"account": "12"}, "account"),
    ({"account": ACCOUNT, "campaignID": "1"}, "campaignID"),
    ({"account": ACCOUNT, "globalName": "window"}, "global_name"),
    ({"campaignId": "1"}, "account"),
    (None, "account"),
    ("83702741", "settings"),
])
def test_invalid_settings_fail_at_init_app_naming_the_setting(config, setting):
    app = Flask("driptag-flask-ext-test")
    if config is not None:
        app.config["DRIPTAG"] = config
    with pytest.raises(SettingsError) as error:
        Driptag().init_app(app)
    assert [problem.setting for problem in error.value.problems] == [setting]
    assert "driptag" not in app.extensions and "drip_snippet" not in app.jinja_env.globals


def test_a_bad_nonce_is_an_error_not_a_script_without_one():
    app = make_app({"account": ACCOUNT})
    with pytest.raises(ValueError, match="nonce"):
        snippet_in(app, csp_nonce='x" onload="alert(1)')


def test_state_lives_on_each_app_so_one_extension_serves_apps_with_different_accounts():
    driptag = Driptag()
    first, second = Flask("first"), Flask("second")
    first.config["DRIPTAG"] = {"account": "1111111"}
    second.config["DRIPTAG"] = {"account": "2222222"}
    driptag.init_app(first)
    driptag.init_app(second)
    assert isinstance(first.extensions["driptag"], DriptagState)
    assert '"1111111"' in snippet_in(first, csp_nonce=NONCE) and '"2222222"' not in snippet_in(first, csp_nonce=NONCE)
    assert '"2222222"' in snippet_in(second, csp_nonce=NONCE)
    with second.test_request_context("/"):
        assert driptag.snippet(NONCE) == render(Settings(account="2222222"), "html", nonce=NONCE)
    with Flask("third").test_request_context("/"), pytest.raises(RuntimeError, match="init_app"):
        driptag.snippet()


def test_each_request_uses_the_render_cache():
    app = make_app({"account": "3333333"})  # init_app rendered (and cached) the loader for these settings
    before = render_module._loader.cache_info()
    for _ in range(50):
        snippet_in(app, csp_nonce=secrets.token_urlsafe(16))
    after = render_module._loader.cache_info()
    assert after.misses == before.misses, "a request re-rendered the loader"
    assert after.hits >= before.hits + 50


# In the browser: a fresh nonce per request under a strict CSP


PAGE = """<!doctype html>
<html><head><meta charset="utf-8">{{ drip_snippet(nonce=csp_nonce) }}</head>
<body>
<script nonce="{{ csp_nonce }}">
  analytics.identify({{ user_id|tojson }}, {email: {{ email|tojson }}});
  analytics.track('Viewed Page', {revenue: '4.20'});
</script>
<script>window.withoutNonce = true;</script>
</body></html>"""


class CspApp:
    """A Flask app with the extension, a fresh nonce per request, and the emulator's collector."""

    def __init__(self) -> None:
        self.app = app = Flask("driptag-csp-test")
        app.config.update(DRIPTAG={"account": ACCOUNT, "campaignId": TEST_CAMPAIGN},
                          DRIP_EMULATOR_CAMPAIGNS=[TEST_CAMPAIGN])
        Driptag(app)
        app.register_blueprint(emulator.bp)

        @app.before_request
        def new_nonce():
            g.csp_nonce = secrets.token_urlsafe(16)

        @app.after_request
        def csp(response):
            response.headers["Content-Security-Policy"] = (
                f"script-src 'nonce-{g.csp_nonce}' 'strict-dynamic'; object-src 'none'; base-uri 'none'")
            return response

        @app.get("/")
        def home():
            return render_template_string(PAGE, csp_nonce=g.csp_nonce, user_id="user-42", email="ann@example.com")

        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def csp_app() -> Iterator[CspApp]:
    server = CspApp()
    yield server
    server.server.shutdown()


VIOLATIONS = """window.violations = [];
document.addEventListener('securitypolicyviolation', e => violations.push(e.violatedDirective + ' ' + e.blockedURI));"""


def test_snippet_with_a_fresh_nonce_per_request_works_under_a_strict_csp(drip, csp_app):
    drip.page.add_init_script(VIOLATIONS)
    responses, nonces = [], []
    for _ in range(2):
        response = drip.page.goto(csp_app.url)
        drip.page.wait_for_function("() => window.driptag && driptag.status === 'ready'", timeout=5000)
        csp = re.fullmatch(r"script-src 'nonce-([A-Za-z0-9_-]+)' 'strict-dynamic'; .*",
                           response.headers["content-security-policy"])
        nonce = csp.group(1)
        nonces.append(nonce)
        assert re.search(rf'<script nonce="{re.escape(nonce)}">', response.text())
        # The browser hides nonces from the DOM's attributes; the property keeps it.
        assert drip.run("() => document.querySelector('script[src*=\"tag.getdrip.com\"]').nonce") == nonce
        # The CSP is enforced: the script without the nonce was blocked (and is the only violation).
        assert drip.run("() => [window.withoutNonce, violations]") == [None, ["script-src-elem inline"]]
        responses.append(drip.received(3))
    assert nonces[0] != nonces[1], "the nonce must be fresh per request"
    ann = {"email": "ann@example.com", "id": "user-42", "user_id": "user-42"}
    expected = [["identify", ann], ["subscribe", {"campaign_id": TEST_CAMPAIGN, "fields": ann}],
                ["track", "Viewed Page", {"value": 420}]]
    assert responses == [expected, expected]
    assert drip.page_errors == [] and drip.warnings() == []
    # What the emulator reported to the app's collector (the emulator POSTs each answered command).
    collector = emulator.collector_for(csp_app.app)
    for _ in range(50):
        if len(collector.reports(account=ACCOUNT)) >= 6:
            break
        drip.page.wait_for_timeout(100)
    reported = collector.reports(account=ACCOUNT)
    assert [report["command"] for report in reported] == expected + expected
    assert {report["answer"] for report in reported} == {"success"}
