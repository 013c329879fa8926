"""The README's "Using driptag" examples, run as a user would paste them, in the browser against the emulator.

Each example is a fenced block after an `<!-- example: NAME -->` marker between the README's ecosystem
markers. What the tests change, and why:
- standalone: nothing. The `driptag build` command runs (this .venv's driptag) and the page is served as is.
- Analytics.js 2.0: the app's `import { AnalyticsBrowser } from '@segment/analytics-next'` stays as written: it
  is bundled by the pinned esbuild against the pinned package in tests/analytics_next (as the user's bundler
  would). Only the load options change: `{ writeKey: 'YOUR_WRITE_KEY' }` becomes a load that needs no network
  (cdnSettings given, metrics and the Segment.io destination off). The page example is a <head> fragment, so
  it is put inside a minimal document.
- Flask: app.py and templates/index.html are written to a temporary folder and app.py is imported from there
  (Flask finds the template next to it); the test adds only the emulator's blueprint (its collector) to the
  app and serves it with werkzeug on 127.0.0.1.
"""

from __future__ import annotations

import importlib.util
import re
import shlex
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from flask import Flask, abort
from werkzeug.serving import make_server

from driptag.emulators import trackjs as emulator
from conftest import TEST_CAMPAIGN, DripPage

ROOT = Path(__file__).resolve().parent.parent
NPM_DIR = ROOT / "tests" / "analytics_next"
ESBUILD = NPM_DIR / "node_modules" / ".bin" / "esbuild"
NPM_MISSING = "run make test (it installs the npm pieces of the tests and builds the Analytics.js 2.0 bundle with npm)"
ACCOUNT = "83702741"
EXAMPLES = ("standalone-build", "standalone-page", "analytics-next-app", "analytics-next-page", "flask-app",
            "flask-template")
OFFLINE_LOAD = ("{ writeKey: 'test', cdnSettings: { integrations: {}, metrics: { sampleRate: 0 } } },"
                " { integrations: { 'Segment.io': false } }")


def readme_examples() -> dict[str, str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("<!-- BEGIN ecosystem -->"):text.index("<!-- END ecosystem -->")]
    found = re.findall(r"<!-- example: ([\w-]+) -->\n```[\w+-]*\n(.*?)^```", section, re.DOTALL | re.MULTILINE)
    examples = dict(found)
    assert len(examples) == len(found), "two README examples have the same name"
    assert tuple(examples) == EXAMPLES, f"README examples: {list(examples)}"
    return examples


@pytest.fixture(scope="module")
def examples() -> dict[str, str]:
    return readme_examples()


@pytest.fixture(scope="module")
def drip_js(examples, tmp_path_factory) -> str:
    """drip.js, built by the README's command."""
    command = shlex.split(examples["standalone-build"].strip())
    assert command[:2] == ["driptag", "build"], command
    folder = tmp_path_factory.mktemp("build")
    driptag = Path(sys.executable).with_name("driptag")  # the command as installed in this environment
    result = subprocess.run([str(driptag), *command[1:]], cwd=folder, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return (folder / "drip.js").read_text(encoding="utf-8")


class StaticSite:
    """Files at fixed paths (/, /drip.js, /app.js) on 127.0.0.1, with the emulator's collector."""

    def __init__(self, files: dict[str, tuple[str, str]]) -> None:
        app = Flask("driptag-readme-test")
        app.register_blueprint(emulator.bp)

        @app.get("/", defaults={"path": ""})
        @app.get("/<path:path>")
        def serve(path: str):
            if "/" + path not in files:
                abort(404)
            body, mimetype = files["/" + path]
            return app.response_class(body, mimetype=mimetype)

        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def serve() -> Iterator:
    servers: list = []

    def start(app_or_files) -> str:
        if isinstance(app_or_files, Flask):
            server = make_server("127.0.0.1", 0, app_or_files, threaded=True)
            threading.Thread(target=server.serve_forever, daemon=True).start()
            servers.append(server)
            return f"http://127.0.0.1:{server.server_port}/"
        site = StaticSite(app_or_files)
        servers.append(site.server)
        return site.url

    yield start
    for server in servers:
        server.shutdown()


@pytest.fixture
def browser_page(drip) -> DripPage:
    """The `drip` page (Drip's host routed to the emulator), recording every request it makes."""
    drip.requests = []
    drip.page.on("request", lambda request: drip.requests.append(request.url))
    drip.page.add_init_script("window.violations = []; document.addEventListener('securitypolicyviolation', "
                              "e => violations.push(e.violatedDirective + ' ' + e.blockedURI));")
    return drip


def assert_offline(drip: DripPage) -> None:
    elsewhere = [url for url in drip.requests
                 if urlsplit(url).hostname != "127.0.0.1" and url != f"https://tag.getdrip.com/{ACCOUNT}.js"]
    assert elsewhere == [], f"requests left the machine: {elsewhere}"


def test_readme_has_the_three_ways_each_with_its_examples():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("<!-- BEGIN ecosystem -->"):text.index("<!-- END ecosystem -->")]
    assert re.findall(r"^#{2,3} .*", section, re.MULTILINE) == [
        "## Using driptag", "### On its own", "### With Analytics.js 2.0", "### From Flask / Jinja"]
    readme_examples()


def test_standalone_example(examples, drip_js, serve, browser_page):
    drip = browser_page
    url = serve({"/": (examples["standalone-page"], "text/html"), "/drip.js": (drip_js, "application/javascript")})
    drip.page.goto(url)
    assert drip.received(1) == [["track", "Viewed Pricing", {"plan": "pro"}]]
    drip.page.click("button")
    ann = {"email": "ann@example.com", "tags": ["trial"], "id": "ann@example.com", "user_id": "ann@example.com"}
    assert drip.received(4) == [
        ["track", "Viewed Pricing", {"plan": "pro"}],
        ["identify", ann],
        ["subscribe", {"campaign_id": TEST_CAMPAIGN, "fields": ann}],
        ["track", "Started Trial", {"value": 1999}],
    ]
    assert drip.run("() => driptag.status") == "ready"
    assert drip.page_errors == [] and drip.warnings() == []
    assert_offline(drip)


def bundle_app(source: str) -> str:
    """The README's app.js, bundled as the user's bundler would (an ES module), with the offline load options."""
    if not ESBUILD.exists():
        pytest.fail(f"{ESBUILD} is missing: {NPM_MISSING}", pytrace=False)
    assert source.count("{ writeKey: 'YOUR_WRITE_KEY' }") == 1, "the README's load options changed"
    source = source.replace("{ writeKey: 'YOUR_WRITE_KEY' }", OFFLINE_LOAD)
    result = subprocess.run([str(ESBUILD), "--bundle", "--format=esm", "--platform=browser", "--target=es2017",
                             "--minify", "--log-level=warning", "--sourcefile=app.js"],
                            input=source, cwd=NPM_DIR, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "import(" not in result.stdout, "the bundle would load parts from the network"
    return result.stdout


def test_analytics_next_example(examples, drip_js, serve, browser_page):
    drip = browser_page
    page = f"<!doctype html><html><head><meta charset=utf-8>{examples['analytics-next-page']}</head><body></body></html>"
    url = serve({"/": (page, "text/html"), "/drip.js": (drip_js, "application/javascript"),
                 "/app.js": (bundle_app(examples["analytics-next-app"]), "application/javascript")})
    drip.page.goto(url)
    ann = {"email": "ann@example.com", "firstName": "Ann", "id": "user-42", "user_id": "user-42"}
    assert drip.received(3) == [
        ["identify", ann],
        ["subscribe", {"campaign_id": TEST_CAMPAIGN, "fields": ann}],
        ["track", "Order Completed", {"order_id": "A-1", "total": 42.5, "value": 4250}],
    ]
    # driptag registered its plugin with Analytics.js 2.0 (once) instead of installing its own facade.
    assert drip.run("""async () => { const [instance] = await window.analytics;
        return [typeof analytics.register, instance.queue.plugins.filter(p => p === driptag.plugin).length]; }""") \
        == ["function", 1]
    drip.page.wait_for_timeout(100)
    assert len(drip.received()) == 3
    assert drip.page_errors == [] and drip.warnings() == []
    assert_offline(drip)


@pytest.fixture
def readme_flask_app(examples, tmp_path) -> Iterator[Flask]:
    """The README's app.py and templates/index.html in a folder, app.py imported from there."""
    (tmp_path / "templates").mkdir()
    (tmp_path / "app.py").write_text(examples["flask-app"], encoding="utf-8")
    (tmp_path / "templates" / "index.html").write_text(examples["flask-template"], encoding="utf-8")
    name = f"readme_flask_app_{id(tmp_path)}"
    spec = importlib.util.spec_from_file_location(name, tmp_path / "app.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # Flask(__name__) finds its folder (and templates/) through the module
    try:
        spec.loader.exec_module(module)
        app = module.app
        app.config["DRIP_EMULATOR_CAMPAIGNS"] = [TEST_CAMPAIGN]
        app.register_blueprint(emulator.bp)  # the emulator's collector, for the emulator's reports
        yield app
    finally:
        del sys.modules[name]


def test_flask_example_with_a_fresh_csp_nonce_per_request(readme_flask_app, serve, browser_page):
    drip = browser_page
    url = serve(readme_flask_app)
    ann = {"email": "ann@example.com", "id": "user-42", "user_id": "user-42"}
    expected = [["identify", ann], ["subscribe", {"campaign_id": TEST_CAMPAIGN, "fields": ann}],
                ["track", "Visited Dashboard", {}]]
    nonces = []
    for _ in range(2):
        response = drip.page.goto(url)
        policy = response.headers["content-security-policy"]
        nonce = re.fullmatch(r"script-src 'nonce-([A-Za-z0-9_-]+)' 'strict-dynamic'; object-src 'none'; "
                             r"base-uri 'none'", policy).group(1)
        nonces.append(nonce)
        assert response.text().count(f'<script nonce="{nonce}">') == 2, "the snippet and the page's own script"
        assert drip.received(3) == expected
        assert drip.run("() => document.querySelector('script[src*=\"tag.getdrip.com\"]').nonce") == nonce
        assert drip.run("() => [driptag.status, violations]") == ["ready", []]
    assert nonces[0] != nonces[1], "the nonce must be fresh per request"
    assert drip.page_errors == [] and drip.warnings() == []
    assert_offline(drip)
