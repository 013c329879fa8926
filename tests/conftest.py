"""Shared fixtures: Debian's headless Chromium (offline), and a local site that serves test pages and
the Drip emulator. One browser per session, a fresh page per test (pytest-playwright)."""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Iterator

import pytest
from flask import Flask, abort
from werkzeug.serving import make_server

from builder import emulator

CHROMIUM = os.environ.get("DRIPTAG_CHROMIUM", "/usr/lib/chromium/chromium-headless-shell")
OFFLINE = "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1 , EXCLUDE localhost"
TEST_CAMPAIGN = "1234567"


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


class Site:
    """A Flask app on 127.0.0.1: the emulator blueprint, and pages registered by tests."""

    def __init__(self) -> None:
        self.app = Flask("driptag-tests")
        self.app.config.update(DRIP_EMULATOR_CAMPAIGNS=[TEST_CAMPAIGN])
        self.app.register_blueprint(emulator.bp)
        self._pages: dict[str, tuple[str, str]] = {}
        self._ids = itertools.count(1)

        @self.app.get("/pages/<name>")
        def page(name: str):
            if name not in self._pages:
                abort(404)
            body, mimetype = self._pages[name]
            return self.app.response_class(body, mimetype=mimetype)

        self._server = make_server("127.0.0.1", 0, self.app, threaded=True)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def add(self, body: str, suffix: str = "html") -> str:
        """Serve `body` from this origin; return its absolute URL."""
        name = f"p{next(self._ids)}.{suffix}"
        mimetype = {"html": "text/html", "js": "application/javascript"}[suffix]
        self._pages[name] = (body, mimetype)
        return f"{self.url}/pages/{name}"

    def add_page(self, html: str) -> str:
        return self.add(html, "html")

    def close(self) -> None:
        self._server.shutdown()


@pytest.fixture(scope="session")
def site() -> Iterator[Site]:
    server = Site()
    yield server
    server.close()
