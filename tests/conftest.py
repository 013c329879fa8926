"""Shared fixtures: Debian's headless Chromium (offline), and a local site that serves test pages and
the Drip emulator. One browser per session, a fresh page per test (pytest-playwright)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from flask import Flask

from driptag.emulators import trackjs as emulator
from pages import CHROMIUM, OFFLINE, PageServer, page_html

TEST_CAMPAIGN = "1234567"


_BROWSER_FIXTURES = {"page", "browser", "context", "browser_type", "drip"}

# The relay's proofs that take real time: the relay run as a process, killed and restarted, Drip's faults
# waited out with real back-offs and budget windows, thousands of fuzzed requests, the load test, the
# benchmark's quick run.
_SLOW_MODULES = {"test_relay_crashes", "test_relay_drip_faults", "test_relay_end_to_end", "test_relay_fuzz",
                 "test_relay_load", "test_benchmark_relay"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that drives Chromium is marked `browser`, and the relay's real-time proofs `slow`, so
    `pytest -m "not browser and not slow"` is the inner loop; `make test` runs everything."""
    for item in items:
        if _BROWSER_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.browser)
        if item.module is not None and item.module.__name__ in _SLOW_MODULES:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(
            f"Chromium is missing: {CHROMIUM} is not an executable. Install it with\n"
            "  apt-get install -y --no-install-recommends chromium-headless-shell\n"
            "(`make test` does this). Browser tests never skip.",
            pytrace=False,
        )
    args = [*browser_type_launch_args.get("args", []), OFFLINE, "--disable-background-networking",
            "--disable-component-update", "--no-first-run"]
    return {**browser_type_launch_args, "executable_path": CHROMIUM, "args": args}


class Site(PageServer):
    """The test site on 127.0.0.1: the emulator blueprint (its track.js and collector), and pages registered by
    tests (`add`, `add_page`: see pages.PageServer)."""

    def __init__(self) -> None:
        app = Flask("driptag-tests")
        app.config.update(DRIP_EMULATOR_CAMPAIGNS=[TEST_CAMPAIGN])
        app.register_blueprint(emulator.bp)
        super().__init__(app)


@pytest.fixture
def run(capsys, tmp_path, monkeypatch):
    """Run `driptag ARGS` in-process, in a fresh folder (tmp_path); return (status, stdout, stderr lines)."""
    from driptag.cli import main

    monkeypatch.chdir(tmp_path)

    def driptag(*args: str) -> tuple[int, str, list[str]]:
        status = main(list(args))
        out, err = capsys.readouterr()
        return status, out, err.splitlines()
    return driptag


@pytest.fixture(scope="session")
def site() -> Iterator[Site]:
    server = Site()
    yield server
    server.close()


# A spy on Drip's queue, installed before any page script: it records a JSON copy of every command
# pushed while _dcq is still an array (functions shown as "[function]"), then lets the push through.
QUEUE_SPY = """
window.__pushed = [];
window._dcq = [];
window._dcq.push = function () {
  for (var i = 0; i < arguments.length; i++) {
    window.__pushed.push(JSON.parse(JSON.stringify(arguments[i], function (key, value) {
      return typeof value === "function" ? "[function]" : value;
    })));
  }
  return Array.prototype.push.apply(this, arguments);
};
"""

# Queue the Drip configuration "forever": track.js (the emulator) loads, but never swaps _dcq.
HOLD_QUEUE = "window.dripEmulatorOptions = {configDelay: 600000};"


class DripPage:
    """A fresh page with Drip's host routed to the emulator, and helpers to load a generated loader."""

    def __init__(self, page, site: Site) -> None:
        self.page = page
        self.site = site
        self.track_js_requests: list[str] = []
        self.console: list[tuple[str, str]] = []
        self.page_errors: list[str] = []
        page.on("console", lambda message: self.console.append((message.type, message.text)))
        page.on("pageerror", lambda error: self.page_errors.append(str(error)))
        page.route("**/tag.getdrip.com/**", self._serve_track_js)

    def _serve_track_js(self, route) -> None:
        self.track_js_requests.append(route.request.url)
        route.fulfill(body=emulator.emulator_script(campaigns=[TEST_CAMPAIGN]),
                      content_type="application/javascript")

    def open(self, settings=None, *, fmt: str = "js", head: str = "", after: str = "", spy: bool = False,
             hold: bool = False, nonce: str | None = None, wait: str = "load") -> "DripPage":
        """Load a page from the test site with the generated loader in its <head>.

        `head` goes before the loader, `after` after it; `spy` records pushes (see QUEUE_SPY); `hold`
        keeps the emulator from swapping _dcq (so every push stays visible to the spy).
        """
        from driptag import Settings, render

        settings = settings or Settings(account="83702741")
        if spy:
            self.page.add_init_script(QUEUE_SPY)
        if hold:
            head = f"<script>{HOLD_QUEUE}</script>" + head
        if fmt == "js":
            src = self.site.add(render(settings, "js"), "js")
            nonce_attr = f' nonce="{nonce}"' if nonce else ""
            tag = f'<script async src="{src}"{nonce_attr}></script>'
        else:
            tag = render(settings, "html", nonce=nonce)
        html = page_html(f"{head}{tag}{after}")
        self.page.goto(self.site.add_page(html), wait_until=wait)
        if fmt == "js" and wait == "load":
            self.page.wait_for_function("() => window.driptag || window.__noLoader", timeout=5000)
        return self

    def run(self, script: str, arg=None):
        """Evaluate `script` (a function expression) in the page."""
        return self.page.evaluate(script, arg)

    def pushed(self) -> list:
        return self.page.evaluate("() => window.__pushed")

    def received(self, count: int | None = None, timeout: float = 5000) -> list:
        """Commands the emulator took, in order; with `count`, wait until it has taken that many."""
        if count is not None:
            self.page.wait_for_function(
                "n => window.dripEmulator && dripEmulator.received.filter(r => r.answer !== 'pending').length >= n",
                arg=count, timeout=timeout)
        return self.page.evaluate("() => window.dripEmulator ? dripEmulator.received.map(r => r.command) : []")

    def warnings(self) -> list[str]:
        return [text for kind, text in self.console if kind == "warning"]


@pytest.fixture
def drip(page, site) -> DripPage:
    return DripPage(page, site)
