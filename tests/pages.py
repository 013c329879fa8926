"""Test pages and the server that serves them, shared by the tests and the benchmark.

The tests (through conftest.py) and `benchmarks/run.py` load the same kind of page in the same offline
Chromium: a minimal document around a snippet, served from 127.0.0.1, every other host failing to resolve.
Keeping the pieces here means the benchmark measures the pages the tests check, not a copy that drifts.
The benchmark imports this module by putting tests/ on sys.path; it needs only Flask and werkzeug.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Mapping
from typing import Any

from flask import Flask, abort
from werkzeug.serving import WSGIRequestHandler, make_server

__all__ = ["CHROMIUM", "OFFLINE", "PageServer", "drips_snippet", "page_html"]

CHROMIUM = os.environ.get("DRIPTAG_CHROMIUM", "/usr/lib/chromium/chromium-headless-shell")
# Chromium's flag that keeps a page on this machine: every host but 127.0.0.1 and localhost fails to resolve.
OFFLINE = "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1 , EXCLUDE localhost"

_MIMETYPES = {"html": "text/html", "js": "application/javascript"}


def page_html(head: str, body: str = "") -> str:
    """The smallest document around `head` (a snippet, scripts) and `body`."""
    return f"<!doctype html><html><head><meta charset=utf-8>{head}</head><body>{body}</body></html>"


def drips_snippet(account: str) -> str:
    """Drip's own install snippet for `account`, as Drip's documentation gives it (track.js protocol-relative)."""
    return f"""<script type="text/javascript">
  var _dcq = _dcq || [];
  var _dcs = _dcs || {{}};
  _dcs.account = '{account}';
  (function() {{
    var dc = document.createElement('script');
    dc.type = 'text/javascript'; dc.async = true;
    dc.src = '//tag.getdrip.com/{account}.js';
    var s = document.getElementsByTagName('script')[0];
    s.parentNode.insertBefore(dc, s);
  }})();
</script>"""


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, *args: Any) -> None:
        pass


class PageServer:
    """A Flask app on 127.0.0.1 (werkzeug, threaded, in a daemon thread) that serves pages added at run time
    at /pages/<name>.

    `app`: an app of the caller's with routes of its own (a new empty one by default). `headers` go on every
    page served (e.g. cross-origin isolation). `quiet` drops werkzeug's access log lines.
    """

    def __init__(self, app: Flask | None = None, *, headers: Mapping[str, str] | None = None,
                 quiet: bool = False) -> None:
        self.app = app or Flask("driptag-pages")
        self._pages: dict[str, tuple[str, str]] = {}
        self._ids = itertools.count(1)
        extra_headers = dict(headers or {})

        @self.app.get("/pages/<name>")
        def serve_page(name: str):
            if name not in self._pages:
                abort(404)
            body, mimetype = self._pages[name]
            response = self.app.response_class(body, mimetype=mimetype)
            response.headers.update(extra_headers)
            return response

        handler = _QuietHandler if quiet else WSGIRequestHandler
        self._server = make_server("127.0.0.1", 0, self.app, threaded=True, request_handler=handler)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def add(self, body: str, suffix: str = "html", name: str | None = None) -> str:
        """Serve `body` from this origin (as `name`, or a new name ending in `.suffix`); return its URL."""
        name = name or f"p{next(self._ids)}.{suffix}"
        self._pages[name] = (body, _MIMETYPES[suffix])
        return f"{self.url}/pages/{name}"

    def add_page(self, html: str) -> str:
        return self.add(html, "html")

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
