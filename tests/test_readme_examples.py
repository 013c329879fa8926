"""The README's examples and commands (and those of docs/analytics-next.md), run as a user would paste them.

Each example is a fenced block after an `<!-- example: NAME -->` marker. Commands run with this .venv's
`python` first on PATH, in a temporary folder holding a copy of examples/. What the tests change, and why:
- standalone: nothing. The build command runs and the page is served as is, in the browser against the emulator.
- build commands: nothing; their outputs are compared with what `render` and `build_manifest` give.
- Python API: nothing; the block is executed and its results checked.
- demo commands: `--port 0` (a free port) instead of 5000, and a real account number for YOUR_ACCOUNT and
  YOUR_CAMPAIGN; each demo is asked for its page, then stopped with Ctrl+C (SIGINT).
- Analytics.js 2.0 (docs/analytics-next.md): the app's
  `import { AnalyticsBrowser } from '@segment/analytics-next'` stays as written: it is bundled by the pinned
  esbuild against the pinned package in tests/analytics_next (as the user's bundler would). Only the load options change: `{ writeKey: 'YOUR_WRITE_KEY' }` becomes a load that needs no network
  (cdnSettings given, metrics and the Segment.io destination off). The page example is a <head> fragment, so
  it is put inside a minimal document.
- relay: the serve command gets `--port 0` and `--drip-api` of the Drip API emulator, and the token the
  emulator accepts instead of `your-drip-api-token`; the Python example sends to that relay's URL instead of
  http://127.0.0.1:8088; the relay is stopped with Ctrl+C (SIGINT).
- Flask: app.py and templates/index.html are written to a temporary folder and app.py is imported from there
  (Flask finds the template next to it); the test adds only the emulator's blueprint (its collector) to the
  app and serves it with werkzeug on 127.0.0.1.
"""

from __future__ import annotations

import importlib.util
import json
import os
import queue
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from flask import Flask, abort
from werkzeug.serving import make_server

from driptag import Settings, build_manifest, render
from driptag.emulators import trackjs as emulator
from conftest import TEST_CAMPAIGN, DripPage
from pages import page_html
from relay_support import TOKEN, drip_api, wait_for

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
ANALYTICS_NEXT_DOC = ROOT / "docs" / "analytics-next.md"
NPM_DIR = ROOT / "tests" / "analytics_next"
ESBUILD = NPM_DIR / "node_modules" / ".bin" / "esbuild"
NPM_MISSING = "run make test (it installs the npm pieces of the tests and builds the Analytics.js 2.0 bundle with npm)"
ACCOUNT = "83702741"
README_EXAMPLES = ("standalone-build", "standalone-page", "build-commands", "python-api", "flask-app",
                   "flask-template", "relay-serve", "relay-python", "demo-commands")
DOC_EXAMPLES = ("analytics-next-app", "analytics-next-page")
# The README's sections, in order (the settings one is matched by the word "Settings" in its heading).
README_SECTIONS = ["# driptag", "## Quick start", "Settings", "## Outputs and CSP", "## From Python and Flask",
                   "## Cloud mode: the relay", "## The QA demo", "## Development", "## More"]
# What a reader of the documents cannot follow: the source folder `builder` where the import name `driptag`
# belongs, or a citation of the spec (its name, a section sign) or of an issue. Spelt with a character class and an escape so that a grep of the repository
# for such citations does not find this line itself.
NOT_FOR_USERS = re.compile(r"(?:from|import) builder\b|python -m builder|S[P]EC|\u00a7|[Ii]ssue #?\d+")
OFFLINE_LOAD = ("{ writeKey: 'test', cdnSettings: { integrations: {}, metrics: { sampleRate: 0 } } },"
                " { integrations: { 'Segment.io': false } }")


def examples_in(path: Path, names: tuple[str, ...]) -> dict[str, str]:
    """The fenced blocks of `path` that follow an `<!-- example: NAME -->` marker, by name, in order."""
    text = path.read_text(encoding="utf-8")
    found = re.findall(r"<!-- example: ([\w-]+) -->\n```[\w+-]*\n(.*?)^```", text, re.DOTALL | re.MULTILINE)
    examples = dict(found)
    assert len(examples) == len(found), f"two examples in {path.name} have the same name"
    assert tuple(examples) == names, f"examples in {path.name}: {list(examples)}"
    return examples


def readme_examples() -> dict[str, str]:
    return {**examples_in(README, README_EXAMPLES), **examples_in(ANALYTICS_NEXT_DOC, DOC_EXAMPLES)}


@pytest.fixture(scope="module")
def examples() -> dict[str, str]:
    return readme_examples()


def commands(block: str) -> list[str]:
    """The command lines of a shell example, without their comments."""
    lines = [line.split("  #")[0].strip() for line in block.splitlines()]
    return [line for line in lines if line]


def venv_env() -> dict[str, str]:
    """The environment of a user's shell where `python` is this .venv's."""
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}


@pytest.fixture
def workdir(tmp_path) -> Path:
    """A folder like a checkout's top folder, for the README's commands: it has a copy of examples/."""
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    return tmp_path


def run_line(line: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", line], cwd=cwd, env=venv_env(), capture_output=True, text=True,
                          timeout=120)


@pytest.fixture(scope="module")
def drip_js(examples, tmp_path_factory) -> str:
    """drip.js, built by the README's command."""
    [line] = commands(examples["standalone-build"])
    assert shlex.split(line)[:4] == ["python", "-m", "driptag", "build"], line
    folder = tmp_path_factory.mktemp("build")
    result = run_line(line, folder)
    assert (result.returncode, result.stderr) == (0, ""), f"{line}: {result.stderr}"
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


def test_readme_sections_in_order_each_with_its_examples():
    text = re.sub(r"^```.*?^```", "", README.read_text(encoding="utf-8"), flags=re.DOTALL | re.MULTILINE)
    headings = re.findall(r"^#{1,2} .*", text, re.MULTILINE)
    # These sections, in this order; others may come between them (a new mode's, for example).
    expected = iter(README_SECTIONS)
    wanted = next(expected)
    for heading in headings:
        if heading == wanted or (wanted == "Settings" and heading.startswith("## ") and "Settings" in heading):
            wanted = next(expected, None)
    assert wanted is None, f"README headings {headings}: {wanted!r} missing or out of order"
    readme_examples()


def test_readme_is_short_and_plain():
    text = README.read_text(encoding="utf-8")
    lines = text.splitlines()
    assert len(lines) < 300, f"the README has {len(lines)} lines: move details to docs/"
    # Table rows are exempt: the settings table is generated with one row per setting.
    long = [(number, len(line)) for number, line in enumerate(lines, 1) if len(line) > 120 and not line.startswith("|")]
    assert long == [], f"README lines over 120 characters (line, length): {long}"
    # The two set-up commands of a fresh machine come first, and nothing else is needed before them.
    first_block = re.search(r"^```sh\n(.*?)^```", text, re.DOTALL | re.MULTILINE).group(1)
    assert commands(first_block) == ["make demo", "make test"], first_block


@pytest.mark.parametrize("path", [README, *sorted((ROOT / "docs").glob("*.md"))], ids=lambda path: path.name)
def test_user_documents_use_the_driptag_names_and_cite_no_spec_or_issue(path: Path):
    text = path.read_text(encoding="utf-8")
    assert NOT_FOR_USERS.findall(text) == []
    links = re.findall(r"\]\(((?!https?:)[^)#]+)", text)
    missing = [link for link in links if not (path.parent / link).exists()]
    assert missing == [], f"{path.name} links to files that do not exist: {missing}"


def test_build_commands_on_the_sample_files(examples, workdir):
    lines = commands(examples["build-commands"])
    assert len(lines) == 3, lines
    for line in lines:
        result = run_line(line, workdir)
        assert (result.returncode, result.stderr) == (0, ""), f"{line}: exit {result.returncode}, {result.stderr}"

    # The settings file: Segment's Drip settings object.
    from_file = Settings(account="83702741", campaign_id="1234567", key_style="snake", callback_timeout_ms=500)
    assert (workdir / "drip.js").read_text(encoding="utf-8") == render(from_file, "js")
    assert json.loads((workdir / "drip.json").read_text(encoding="utf-8")) == build_manifest(from_file, "js")

    # Inline, without the preload link, and the CSP hash of it.
    inline = Settings(account="83702741", preload=False)
    tag = (workdir / "drip-tag.html").read_text(encoding="utf-8")
    assert tag == render(inline, "html") and tag.startswith("<script>")
    manifest = json.loads((workdir / "tag.json").read_text(encoding="utf-8"))
    assert manifest == build_manifest(inline, "html") and manifest["csp_hash"].startswith("'sha256-")

    # One file per row of the CSV, an empty cell meaning "not set".
    rows = [Settings(account="83702741", campaign_id="1234567"),
            Settings(account="91234567", key_style="snake"),
            Settings(account="5551234", campaign_id="7654321", key_style="segment")]
    dist = workdir / "dist"
    assert sorted(path.name for path in dist.iterdir()) == ["5551234.js", "83702741.js", "91234567.js",
                                                             "manifest.json"]
    for settings in rows:
        assert (dist / f"{settings.account}.js").read_text(encoding="utf-8") == render(settings, "js"), \
            settings.account
    listed = json.loads((dist / "manifest.json").read_text(encoding="utf-8"))
    assert sorted(listed, key=lambda entry: entry["account"]) == sorted(
        (build_manifest(settings, "js") for settings in rows), key=lambda entry: entry["account"])


def test_python_api_example():
    namespace: dict = {}
    exec(compile(readme_examples()["python-api"], "README.md: python-api", "exec"), namespace)
    settings = Settings(account="83702741", campaign_id="1234567")
    assert namespace["settings"] == settings
    assert namespace["code"] == render(settings, "js")
    nonce = re.search(r'<script nonce="([^"]+)">', namespace["tag"]).group(1)
    assert namespace["tag"] == render(settings, "html", nonce=nonce)
    assert namespace["manifest"] == build_manifest(settings, "js")


def _as_in_a_terminal() -> None:
    """Ctrl+C reaches a command run in a terminal: undo an ignored SIGINT inherited from whatever started
    the tests (a shell without job control ignores it for commands it runs in the background)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_demo(line: str, cwd: Path, **env: str) -> tuple[subprocess.Popen, str, queue.Queue]:
    """Start a README demo command on a free port, as from a terminal; return the process, the URL it
    printed and the queue of the lines it prints (stdout and stderr) from then on. PYTHONFAULTHANDLER lets a
    test that finds it hung ask it, with SIGABRT, for every thread's stack."""
    line = line.replace("YOUR_ACCOUNT", "83702741").replace("YOUR_CAMPAIGN", "1234567")
    line = re.sub(r"--port \d+", "--port 0", line) if "--port" in line else line + " --port 0"
    process = subprocess.Popen(["bash", "-c", f"exec {line}"], cwd=cwd,
                               env={**venv_env(), "PYTHONFAULTHANDLER": "1", **env}, preexec_fn=_as_in_a_terminal,
                               text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(out) for out in process.stdout], daemon=True).start()
    seen, deadline = [], time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            seen.append(lines.get(timeout=max(0.01, deadline - time.monotonic())))
        except queue.Empty:
            break
        found = re.search(r"http://127\.0\.0\.1:(\d+)/", seen[-1])
        if found and found.group(1) != "0":
            return process, found.group(0), lines
    process.kill()
    raise AssertionError(f"{line}: never printed the URL it serves; it printed {seen!r}")


def stack_dump(process: subprocess.Popen, lines: queue.Queue) -> str:
    """What a hung demo prints when asked for its threads' stacks (SIGABRT with the fault handler on)."""
    process.send_signal(signal.SIGABRT)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    printed = []
    while True:
        try:
            printed.append(lines.get(timeout=1))
        except queue.Empty:
            return "".join(printed)


def test_demo_commands_serve_the_demo_page(examples, workdir):
    lines = commands(examples["demo-commands"])
    assert [shlex.split(line)[:4] for line in lines] == [["python", "-m", "driptag", "demo"]] * 2, lines
    for line, mode in zip(lines, ("offline emulator", "real Drip")):
        process, url, printed = start_demo(line, workdir)
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                page = response.read().decode("utf-8")
            assert response.status == 200
            assert '<dd id="fact-account">83702741</dd>' in page and f'<dd id="fact-mode">{mode}</dd>' in page, line
        finally:
            process.send_signal(signal.SIGINT)  # Ctrl+C, as the README's demo says
            try:
                status = process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                raise AssertionError(f"{line}: still running 15 s after Ctrl+C; its threads:\n"
                                     f"{stack_dump(process, printed)}") from None
        assert status == 0, f"{line}: exit status {status} after Ctrl+C"


def test_sigterm_stops_the_demo_as_ctrl_c_does_and_removes_its_temporary_spool(examples, workdir):
    temporary = workdir / "tmp"
    temporary.mkdir()
    process, url, printed = start_demo(commands(examples["demo-commands"])[0], workdir, TMPDIR=str(temporary))
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
    folders = [path.name for path in temporary.iterdir()]
    assert len(folders) == 1 and folders[0].startswith("driptag-demo-"), f"the relay's spool folder: {folders}"
    process.terminate()
    try:
        status = process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"still running 15 s after SIGTERM; its threads:\n{stack_dump(process, printed)}") \
            from None
    assert status == 0, f"exit status {status} after SIGTERM"
    assert list(temporary.iterdir()) == [], "the relay's temporary spool folder is still there"


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
    page = page_html(examples["analytics-next-page"])
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


def test_relay_example_delivers_the_python_calls_to_drip(examples, workdir):
    export, serve = commands(examples["relay-serve"])
    assert export == "export DRIP_API_TOKEN=your-drip-api-token", export
    assert shlex.split(serve)[:5] == ["python", "-m", "driptag", "relay", "serve"], serve
    with drip_api() as drip:
        line = f"{export.replace('your-drip-api-token', TOKEN)}; exec {serve} --port 0 --drip-api {drip.url}"
        process = subprocess.Popen(["bash", "-c", line], cwd=workdir, env=venv_env(), stderr=subprocess.PIPE,
                                   text=True)
        try:
            said = []
            for said_line in process.stderr:
                said.append(said_line)
                found = re.search(r"on (http://127\.0\.0\.1:\d+)", said_line)
                if found:
                    break
            assert found, f"the relay never said where it listens: {said}"
            code = examples["relay-python"].replace("http://127.0.0.1:8088", found.group(1))
            result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
            assert result.returncode == 0, result.stderr
            wait_for(lambda: drip.records("events") and drip.records("campaign_subscriptions"),
                     "the README's calls reached Drip")
            assert drip.records("subscribers") == [{"email": "ann@example.com", "user_id": "u1", "first_name": "Ann",
                                                    "custom_fields": {"id": "u1"}}]
            assert [(e["action"], e["properties"]) for e in drip.records("events")] == \
                [("Order Completed", {"value": 1999})]
        finally:
            process.send_signal(signal.SIGINT)
            status = process.wait(timeout=15)
        assert status == 0, f"the relay exited with {status} after Ctrl+C"
