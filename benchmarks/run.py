"""driptag benchmark: driptag next to Drip's own snippet, in one run.

    make bench                       # = .venv/bin/python benchmarks/run.py
    .venv/bin/python benchmarks/run.py --loads 60 --json /tmp/bench.json
    .venv/bin/python benchmarks/run.py --relay-only [--quick]   # the relay's rows alone (--quick: tiny counts)

Prints one table and writes the same figures to benchmarks/results/latest.json (git-ignored). It reports;
it never fails because the machine is slow: the exit status is 0 whether or not a target is met (1 only
when the benchmark itself cannot run, e.g. Chromium is missing).

What is measured (all offline: pages come from 127.0.0.1, every other host fails to resolve):

- sizes: the minified `js` and `html` outputs for account 83702741 with campaign 1234567, raw and gzip -9,
  next to Drip's documented snippet for the same account (its script body for `js`, the element for `html`);
- page loads in Debian's chromium-headless-shell, alternating driptag's `html` output as built by default
  (a <link rel="preload"> for track.js, then the loader's inline <script>) and Drip's inline snippet
  (A, B, A, B, ...), after WARM_UP uncounted pairs. Each page is the same apart from the
  snippet:
      <head><meta charset=utf-8><script>performance.mark("s0")</script>SNIPPET<script>performance.mark("s1")</script>
  From each load, with the Resource Timing entry of track.js (its startTime is when the request started):
    * navigation start -> track.js request;
    * snippet start (mark s0) -> track.js request: the part the snippet controls; the page before the
      snippet is identical, so this is the same comparison without the navigation's noise (the target
      is judged on the difference of these medians);
    * s0 -> s1: main-thread time to parse, compile and run the snippet.
  Two more pages are loaded in the same rotation, their track.js request reported next to Drip's snippet:
    * driptag's html built with preload off: the loader's <script> element alone (the one-element
      form), whose own <script> for track.js is what requests it;
    * "why": Drip's snippet followed, in its element, by the loader's code in a function that is never
      called. The browser requests track.js while the snippet inserts its element, but V8 parses the whole
      script before any of it runs: this page's delay is what parsing the loader costs, the part of the
      one-element form's gap that no order of statements inside the element can remove (and the reason
      for the preload link: the browser's preload scanner requests track.js before any script is parsed).
  Pages are cross-origin isolated (COOP/COEP), so performance.now() has 5 us resolution rather than 100 us,
  and V8's in-memory compilation cache is off (--js-flags=--no-compilation-cache): every load compiles the
  loader as a first visit does. Two runs of these loads:
    * [Playwright]: driven by Playwright, Drip's host routed to a stub track.js;
    * [no DevTools]: the same pages in a chromium-headless-shell that no DevTools client is attached to
      (each page posts its figures to the server and loads the next one). Playwright drives Chromium
      through the DevTools protocol, and with it attached a bigger script takes longer before the request
      starts (measured: it widens driptag's gap to Drip's snippet by about half a millisecond on the
      machine of docs/performance.md); a visitor's browser has no DevTools client. Drip's host fails to resolve
      there, for both snippets alike.
- per bridged call (Playwright): a page with the loader and a track.js stub that never replaces the _dcq
  array (as Drip's track.js does until its configuration arrives), 10,000 analytics.identify(...) and
  10,000 analytics.track(...) calls, next to 10,000 bare _dcq.push([...]); median (and min-max) of REPS
  repetitions, _dcq emptied between batches; each batch is timed in chunks of CHUNK calls, and the fastest
  chunk is reported too (on a busy machine the medians include other processes' time). With the campaign setting every identify pushes two
  commands (identify, subscribe). document.cookie, localStorage, sessionStorage and Storage methods are
  instrumented: every access during the calls is counted (and the counter is checked to count).
- the relay (cloud mode): its rows come from benchmarks/relay.py, whose docstring says what they measure
  (ingest through /v1/batch and /v1/track, the drain of a backlog to the Drip API emulator, a spool with
  1,000,000 pending), each next to the limit it is measured against, taken in the same run.
- builder: cached render(settings, "html", nonce=...) calls per second, a new nonce each call (nonces made
  outside the timed loop), over RENDER_SECONDS in windows of about 0.25 s; and `driptag build --batch` for a generated
  10,000-row CSV, run as a subprocess (wall time, including interpreter start-up and the one-time minify).
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import os
import platform
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "latest.json"
# The tests' page helpers (tests/pages.py): the benchmark loads the same pages, in the same offline Chromium.
sys.path.insert(0, str(HERE.parent / "tests"))
from pages import CHROMIUM, OFFLINE, PageServer, drips_snippet, page_html  # noqa: E402

import relay  # noqa: E402  (benchmarks/relay.py, beside this file)

BROWSER_ARGS = [OFFLINE, "--disable-background-networking", "--js-flags=--no-compilation-cache"]

ACCOUNT = "83702741"
CAMPAIGN = "1234567"

# Drip's documented snippet for the same account, as Drip's documentation gives it.
DRIP_SNIPPET = drips_snippet(ACCOUNT)


def drip_snippet_then_unrun_loader(loader_js: str) -> str:
    """Drip's snippet followed, in its element, by the loader's code in a function that is never called:
    its track.js request comes later than the snippet's alone by what parsing the loader's code costs."""
    return DRIP_SNIPPET.replace("</script>", f"function driptagNeverCalled() {{\n{loader_js}}}\n</script>")


KIB = 1024
TARGETS = {
    "js_bytes": 8 * KIB,
    "js_gzip_bytes": 3 * KIB,
    "request_after_drip_ms": 0.5,
    "us_per_call": 3.0,
    "renders_per_second": 20_000,
}

CALLS = 10_000
CHUNK = 1_000  # each batch of CALLS is timed in chunks; the fastest chunk is reported too
REPS = 15
BATCH_ROWS = 10_000
RENDER_SECONDS = 1.5

# A track.js stand-in: it marks Drip as present and never replaces the _dcq array.
STUB_TRACK_JS = "window._dc = window._dc || {};\n"

ISOLATED = {  # cross-origin isolation: performance.now() to 5 us instead of 100 us
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
    "Cache-Control": "no-store",
}
WARM_UP = 3  # page loads of each snippet that are not counted
CHAIN_TIMEOUT = 600
LOAD_KEYS = ("nav_to_request", "snippet_to_request", "evaluate")

# Without DevTools, each page reports its own figures, then loads the next page.
CHAIN_REPORTER = """<script>window.addEventListener("load", function () { setTimeout(function () {
  fetch("/report" + location.search, { method: "POST", body: JSON.stringify((FIGURES)()) })
    .then(function () { location.replace(NEXT); });
}); });</script>"""

MARK_BEFORE = '<script>performance.mark("s0")</script>'
MARK_AFTER = '<script>performance.mark("s1")</script>'

# Installed before any page script of the per-call page: counts every cookie and Web Storage access.
STORAGE_SPY = """
(() => {
  let hits = 0;
  Object.defineProperty(window, "__storageHits", { get: () => hits });
  const cookie = Object.getOwnPropertyDescriptor(Document.prototype, "cookie");
  Object.defineProperty(Document.prototype, "cookie", {
    configurable: true,
    get() { hits++; return cookie.get.call(this); },
    set(value) { hits++; cookie.set.call(this, value); },
  });
  for (const name of ["localStorage", "sessionStorage"]) {
    const owner = Object.getOwnPropertyDescriptor(window, name) ? window : Window.prototype;
    const storage = Object.getOwnPropertyDescriptor(owner, name);
    Object.defineProperty(window, name, {
      configurable: true,
      get() { hits++; return storage.get.call(this); },
    });
  }
  for (const method of ["getItem", "setItem", "removeItem", "clear", "key"]) {
    const original = Storage.prototype[method];
    Storage.prototype[method] = function () { hits++; return original.apply(this, arguments); };
  }
})();
"""

LOAD_FIGURES = """() => {
  const nav = performance.getEntriesByType("navigation")[0];
  const request = performance.getEntriesByType("resource").find(e => e.name.includes("tag.getdrip.com/"));
  const s0 = performance.getEntriesByName("s0")[0], s1 = performance.getEntriesByName("s1")[0];
  return {
    isolated: crossOriginIsolated,
    url: request ? request.name : null,
    nav_to_request: request ? request.startTime : null,
    snippet_to_request: request ? request.startTime - s0.startTime : null,
    evaluate: s1.startTime - s0.startTime,
  };
}"""

PER_CALL = """([calls, reps, chunk]) => {
  const analytics = window.analytics, hits = () => window.__storageHits;
  const figures = { identify: [], track: [], bare: [] }, best = {}, pushed = {};
  const before = hits();
  const batches = {
    identify(n) { for (let i = 0; i < n; i++) analytics.identify("u", { email: "a@b.co", name: "x" }); },
    track(n) { for (let i = 0; i < n; i++) analytics.track("Order Completed", { revenue: "9.99", sku: "x" }); },
    bare(n) { for (let i = 0; i < n; i++) window._dcq.push(["track", "x", {}]); },
  };
  for (let rep = 0; rep < reps; rep++) {
    for (const name of Object.keys(batches)) {
      window._dcq.length = 0;
      let total = 0;
      for (let done = 0; done < calls; done += chunk) {  // timed in chunks: the fastest one is kept too
        const start = performance.now();
        batches[name](chunk);
        const took = performance.now() - start;
        total += took;
        best[name] = Math.min(best[name] === undefined ? Infinity : best[name], took * 1000 / chunk);
      }
      figures[name].push(total * 1000 / calls);
      pushed[name] = window._dcq.length / calls;
      window._dcq.length = 0;
    }
  }
  const accesses = hits() - before;
  document.cookie; window.localStorage.getItem("driptag-bench");  // the spy must see these
  return { figures, best, pushed, storage_accesses: accesses, spy_works: hits() - before - accesses >= 3,
           dcq_is_array: Array.isArray(window._dcq) };
}"""


# ---------------------------------------------------------------------------------------------
# Sizes


def gzip_size(data: bytes) -> int:
    return len(gzip.compress(data, compresslevel=9, mtime=0))


def sizes(settings) -> dict[str, Any]:
    from driptag import render

    js = render(settings, "js").encode()
    html = render(settings, "html").encode()
    drip_html = DRIP_SNIPPET.encode()
    drip_js = DRIP_SNIPPET[DRIP_SNIPPET.index(">") + 1: DRIP_SNIPPET.rindex("</script>")].strip().encode()
    return {
        "driptag": {"js_bytes": len(js), "js_gzip_bytes": gzip_size(js),
                    "html_bytes": len(html), "html_gzip_bytes": gzip_size(html)},
        "drip": {"js_bytes": len(drip_js), "js_gzip_bytes": gzip_size(drip_js),
                 "html_bytes": len(drip_html), "html_gzip_bytes": gzip_size(drip_html)},
    }


# ---------------------------------------------------------------------------------------------
# Browser


class Site(PageServer):
    """The benchmark's pages, by name, served from 127.0.0.1 (the tests' PageServer); every page is
    cross-origin isolated."""

    def __init__(self, pages: dict[str, str]) -> None:
        super().__init__(headers=ISOLATED, quiet=True)
        self.urls = {name: self.add(html, name=name) for name, html in pages.items()}


def snippet_page(snippet: str, marks: bool = True, extra: str = "") -> str:
    """A test page around `snippet`, between the performance marks s0 and s1 (unless `marks` is false)."""
    return page_html((f"{MARK_BEFORE}{snippet}{MARK_AFTER}" if marks else snippet) + extra)


def serve_stub(route) -> None:
    route.fulfill(body=STUB_TRACK_JS, content_type="application/javascript",
                  headers={"Cross-Origin-Resource-Policy": "cross-origin", "Cache-Control": "no-store"})


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def browser(settings, loads: int) -> dict[str, Any]:
    from driptag import render
    from playwright.sync_api import sync_playwright

    snippets = {"driptag": render(settings, "html"), "drip": DRIP_SNIPPET,
                "one_element": render(settings.replace(preload=False), "html"),
                "parse": drip_snippet_then_unrun_loader(render(settings, "js"))}
    site = Site({**{name: snippet_page(snippet) for name, snippet in snippets.items()},
                 "calls": snippet_page(snippets["driptag"], marks=False)})
    try:
        with sync_playwright() as playwright:
            chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
            try:
                version = chromium.version
                loaded = page_loads(chromium, site, loads)
                calls = per_call(chromium, site)
            finally:
                chromium.close()
    finally:
        site.close()
    without_devtools = page_loads_without_devtools(snippets, loads)
    return {"chromium": version, "loads": loaded, "loads_without_devtools": without_devtools, "calls": calls}


def page_loads(chromium, site: Site, loads: int) -> dict[str, Any]:
    page = chromium.new_page()
    page.route("**/tag.getdrip.com/**", serve_stub)
    raw: dict[str, list[dict[str, Any]]] = {"driptag": [], "drip": [], "one_element": [], "parse": []}
    for index in range(WARM_UP + loads):
        for name in raw:  # alternate: driptag, drip, one_element, parse, driptag, drip, ...
            page.goto(f"{site.urls[name]}?load={index}", wait_until="load")
            figures = page.evaluate(LOAD_FIGURES)
            if not figures["isolated"] or figures["url"] is None:
                raise RuntimeError(f"{name}: the page is not isolated or track.js was not requested: {figures}")
            if index >= WARM_UP:
                raw[name].append(figures)
    page.close()
    return summarise_loads(raw)


def summarise_loads(raw: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, rows in raw.items():
        out[name] = {key: summary([row[key] for row in rows]) for key in LOAD_KEYS}
        out[name]["track_js_url"] = rows[0]["url"]
    # Paired differences: driptag load i minus the Drip load right after it.
    out["paired_difference"] = {key: summary([a[key] - b[key] for a, b in zip(raw["driptag"], raw["drip"])])
                                for key in LOAD_KEYS}
    out["after_drip_ms"] = (out["driptag"]["snippet_to_request"]["median"]
                            - out["drip"]["snippet_to_request"]["median"])
    for name in ("one_element", "parse"):
        out[f"{name}_after_drip_ms"] = (out[name]["snippet_to_request"]["median"]
                                        - out["drip"]["snippet_to_request"]["median"])
    return out


def page_loads_without_devtools(pages: dict[str, str], loads: int) -> dict[str, Any]:
    """The same alternating page loads in a chromium-headless-shell that no DevTools client is attached
    to (see the module's docstring). Each page reports its figures to the server with fetch() and then
    moves on to the next page with location.replace(); Drip's host is not routed here, so track.js
    fails to resolve, for both snippets alike: only the time of the request matters."""
    from flask import Flask, Response, request

    names = list(pages)
    order = [(index, name) for index in range(WARM_UP + loads) for name in names]
    raw: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    done = threading.Event()
    app = Flask("driptag-bench-chain")

    @app.get("/chain")
    def chain_page():
        step = int(request.args["step"])
        follow = f"/chain?step={step + 1}" if step + 1 < len(order) else "/end"
        reporter = CHAIN_REPORTER.replace("FIGURES", LOAD_FIGURES).replace("NEXT", json.dumps(follow))
        response = Response(snippet_page(pages[order[step][1]], extra=reporter), mimetype="text/html")
        response.headers.update(ISOLATED)
        return response

    @app.post("/report")
    def report():
        index, name = order[int(request.args["step"])]
        if index >= WARM_UP:
            raw[name].append(json.loads(request.get_data()))
        return "ok"

    @app.get("/end")
    def end():
        done.set()
        return "done"

    server = PageServer(app, quiet=True)  # the tests' server, with the chain's routes
    with tempfile.TemporaryDirectory(prefix="driptag-bench-profile-") as profile:
        process = subprocess.Popen(
            [CHROMIUM, "--no-sandbox", "--no-first-run", f"--user-data-dir={profile}", *BROWSER_ARGS,
             f"{server.url}/chain?step=0"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            finished = done.wait(CHAIN_TIMEOUT)
        finally:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            server.close()
    if not finished or any(len(rows) != loads for rows in raw.values()):
        raise RuntimeError(f"page loads without DevTools did not finish: {[len(rows) for rows in raw.values()]}")
    for name, rows in raw.items():
        if not all(row["isolated"] and row["url"] for row in rows):
            raise RuntimeError(f"{name}: a page was not isolated or did not request track.js")
    return summarise_loads(raw)


def per_call(chromium, site: Site) -> dict[str, Any]:
    page = chromium.new_page()
    page.add_init_script(STORAGE_SPY)
    page.route("**/tag.getdrip.com/**", serve_stub)
    page.goto(site.urls["calls"], wait_until="load")
    page.wait_for_function("() => window.driptag && window.driptag.status === 'ready'")
    result = page.evaluate(PER_CALL, [CALLS, REPS, CHUNK])
    page.close()
    if not result["dcq_is_array"]:
        raise RuntimeError("the track.js stub replaced _dcq; per-call figures would be wrong")
    if not result["spy_works"]:
        raise RuntimeError("the cookie / Web Storage spy does not count accesses")
    out = {name: {**summary(values), "best_chunk": result["best"][name]} for name, values in result["figures"].items()}
    out["chunk"] = CHUNK
    out["commands_per_call"] = result["pushed"]
    out["storage_accesses"] = result["storage_accesses"]
    out["calls"] = CALLS
    out["repetitions"] = REPS
    return out


# ---------------------------------------------------------------------------------------------
# Builder


def renders_per_second(settings) -> dict[str, Any]:
    """Cached render(settings, "html", nonce=...) with a new nonce each call, for RENDER_SECONDS in
    windows of 0.25 s (the nonces of a window are made before it starts)."""
    from driptag import render

    render(settings, "html", nonce="warm")
    calls, elapsed, windows, batch = 0, 0.0, [], 1000
    while elapsed < RENDER_SECONDS:
        nonces = [secrets.token_urlsafe(16) for _ in range(batch)]
        start = time.perf_counter()
        for nonce in nonces:
            render(settings, "html", nonce=nonce)
        took = time.perf_counter() - start
        elapsed += took
        calls += batch
        windows.append(batch / took)
        batch = max(1000, min(200_000, int(batch * 0.25 / took)))  # about 0.25 s per window
    return {"renders_per_second": calls / elapsed, "us_per_render": elapsed / calls * 1e6, "calls": calls,
            "seconds": elapsed, "window_min": min(windows[1:] or windows), "window_max": max(windows[1:] or windows)}


def driptag_command() -> list[str]:
    script = Path(sys.executable).with_name("driptag")
    if script.exists():
        return [str(script)]
    found = shutil.which("driptag")
    if found:
        return [found]
    return [sys.executable, "-c", "import sys; from driptag.cli import main; sys.exit(main())"]


def batch_files_per_second() -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="driptag-bench-") as folder:
        accounts = Path(folder) / "accounts.csv"
        out_dir = Path(folder) / "dist"
        with open(accounts, "w", newline="", encoding="utf-8") as stream:
            writer = csv.writer(stream)
            writer.writerow(["account", "campaignId"])
            for index in range(BATCH_ROWS):
                writer.writerow([str(10_000_000 + index), CAMPAIGN])
        command = [*driptag_command(), "build", "--batch", str(accounts), "--out-dir", str(out_dir)]
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True)
        elapsed = time.perf_counter() - start
        written = len(list(out_dir.glob("*.js"))) if out_dir.exists() else 0
    if done.returncode != 0 or written != BATCH_ROWS:
        raise RuntimeError(f"driptag build --batch: status {done.returncode}, {written} files: {done.stderr[-500:]}")
    return {"files_per_second": written / elapsed, "seconds": elapsed, "files": written,
            "how": "driptag build --batch as a subprocess, wall time"}


# ---------------------------------------------------------------------------------------------
# Machine, table, JSON


def machine(chromium_version: str | None) -> dict[str, Any]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    from driptag import __version__

    try:
        revision = subprocess.run(["git", "-C", str(HERE.parent), "describe", "--always", "--dirty"],
                                  capture_output=True, text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        revision = None
    return {
        "nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu": model,
        "chromium": chromium_version,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_at_end": os.getloadavg(),
        "driptag_version": __version__,
        "source_revision": revision,  # the tree `make bench` installed driptag from
    }


def ms(figure: dict[str, float]) -> str:
    return f"{figure['median']:.2f} ({figure['min']:.2f}–{figure['max']:.2f})"


def us(figure: dict[str, float]) -> str:
    def f(value: float) -> str:
        return f"{value:.2f}" if value >= 0.1 else f"{value:.3f}"
    return f"{f(figure['median'])} ({f(figure['min'])}–{f(figure['max'])}); best {CHUNK:,}: {f(figure['best_chunk'])}"


def met(ok: bool) -> str:
    return "yes" if ok else "NO"


def table_rows(results: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    size, calls = results["sizes"], results["browser"]["calls"]
    d, s, t = size["driptag"], size["drip"], TARGETS
    rows = [
        ("js, minified: bytes", f"{d['js_bytes']:,}", f"{s['js_bytes']:,}", f"≤ {t['js_bytes']:,}",
         met(d["js_bytes"] <= t["js_bytes"])),
        ("js, minified: gzip -9 bytes", f"{d['js_gzip_bytes']:,}", f"{s['js_gzip_bytes']:,}",
         f"≤ {t['js_gzip_bytes']:,}", met(d["js_gzip_bytes"] <= t["js_gzip_bytes"])),
        ("html, minified: bytes", f"{d['html_bytes']:,}", f"{s['html_bytes']:,}", "", ""),
        ("html, minified: gzip -9 bytes", f"{d['html_gzip_bytes']:,}", f"{s['html_gzip_bytes']:,}", "", ""),
    ]
    for key, label in (("loads", "Playwright"), ("loads_without_devtools", "no DevTools")):
        loads = results["browser"][key]
        n = loads["driptag"]["nav_to_request"]["n"]
        rows += [
            (f"[{label}] navigation start → track.js request, ms, median (min–max) of {n}",
             ms(loads["driptag"]["nav_to_request"]), ms(loads["drip"]["nav_to_request"]), "", ""),
            (f"[{label}] snippet start → track.js request, ms", ms(loads["driptag"]["snippet_to_request"]),
             ms(loads["drip"]["snippet_to_request"]), "", ""),
            (f"[{label}] track.js requested after Drip's snippet would, ms", f"{loads['after_drip_ms']:+.2f}", "",
             f"≤ +{t['request_after_drip_ms']}", met(loads["after_drip_ms"] <= t["request_after_drip_ms"])),
            (f"[{label}] main thread: parse + run the inline snippet, ms", ms(loads["driptag"]["evaluate"]),
             ms(loads["drip"]["evaluate"]), "", ""),
            (f"[{label}] html with preload off (one <script> element): requested after Drip's snippet would, ms",
             f"{loads['one_element_after_drip_ms']:+.2f}", "", "", ""),
            (f"[{label}] why: Drip's snippet + the loader's code never run (parsing it): requested after"
             " Drip's snippet alone, ms", f"{loads['parse_after_drip_ms']:+.2f}", "", "", ""),
        ]
    rows += [
        (f"µs per analytics.identify, median (min–max) of {calls['repetitions']} × {calls['calls']:,}"
         " (Drip: a bare _dcq.push)", us(calls["identify"]), us(calls["bare"]), f"≤ {t['us_per_call']}",
         met(calls["identify"]["median"] <= t["us_per_call"])),
        ("µs per analytics.track (Drip: a bare _dcq.push)", us(calls["track"]), us(calls["bare"]),
         f"≤ {t['us_per_call']}", met(calls["track"]["median"] <= t["us_per_call"])),
        (f"cookie / Web Storage accesses during {2 * calls['repetitions'] * calls['calls']:,} bridged calls",
         f"{calls['storage_accesses']}", "", "0", met(calls["storage_accesses"] == 0)),
        ("cached render(…, 'html', nonce=new) per second (0.25 s windows: min–max)",
         f"{results['builder']['renders_per_second']:,.0f} ({results['builder']['window_min']:,.0f}–"
         f"{results['builder']['window_max']:,.0f})", "", f"≥ {t['renders_per_second']:,}",
         met(results["builder"]["renders_per_second"] >= t["renders_per_second"])),
        (f"--batch files per second ({BATCH_ROWS:,} accounts, CLI subprocess, wall time)",
         f"{results['batch']['files_per_second']:,.0f}", "", "", ""),
    ]
    return rows


def format_table(rows: list[tuple[str, ...]]) -> str:
    header = ("what", "driptag", "Drip's snippet, or the limit", "target", "met?")
    everything = [header, *rows]
    widths = [max(len(row[i]) for row in everything) for i in range(len(header))]
    lines = []
    for number, row in enumerate(everything):
        lines.append("| " + " | ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)) + " |")
        if number == 0:
            lines.append("|" + "|".join("-" * (width + 2) for width in widths) + "|")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--loads", type=int, default=40, help="page loads of each snippet (default 40, at least 30)")
    parser.add_argument("--json", type=Path, default=RESULTS, help=f"where the JSON goes (default {RESULTS})")
    parser.add_argument("--relay-only", action="store_true", help="only the relay's rows (no Chromium needed)")
    parser.add_argument("--quick", action="store_true",
                        help="the relay's rows with tiny counts: a smoke test, not a measurement")
    args = parser.parse_args(argv)
    if args.loads < 30:
        parser.error("--loads: at least 30 page loads each")
    if not args.relay_only and not os.access(CHROMIUM, os.X_OK):
        print(f"benchmark: Chromium is missing: {CHROMIUM} (make bench installs it)", file=sys.stderr)
        return 1

    from driptag import Settings

    settings = Settings(account=ACCOUNT, campaign_id=CAMPAIGN)
    plan = relay.QUICK if args.quick else relay.FULL
    started = time.perf_counter()
    what = [] if args.relay_only else [f"{args.loads} page loads each, {CALLS:,} calls × {REPS}",
                                       f"{BATCH_ROWS:,}-row batch"]
    what.append(f"the relay ({plan.backlog:,}-message ingest and drain, {plan.pending:,} pending"
                f"{', quick' if args.quick else ''})")
    print(f"driptag benchmark: {', '.join(what)}…", file=sys.stderr)
    load_at_start = os.getloadavg()
    results: dict[str, Any] = {"settings": {"account": ACCOUNT, "campaignId": CAMPAIGN},
                               "targets": {**({} if args.relay_only else TARGETS), **relay.TARGETS}}
    rows = []
    if not args.relay_only:
        results["sizes"] = sizes(settings)
        results["builder"] = renders_per_second(settings)
        results["batch"] = batch_files_per_second()
        results["browser"] = browser(settings, args.loads)
        rows += table_rows(results)
    try:
        results["relay"] = relay.measure(plan)
    except RuntimeError as error:
        print(f"benchmark: the relay's rows could not be measured: {error}", file=sys.stderr)
        return 1
    rows += relay.table_rows(results["relay"])
    chromium = None if args.relay_only else results["browser"]["chromium"]
    results["machine"] = {**machine(chromium), "load_average_at_start": load_at_start,
                          "disk": results["relay"]["disk"]}
    results["table"] = [dict(zip(("what", "driptag", "next_to", "target", "met"), row)) for row in rows]
    results["seconds"] = time.perf_counter() - started

    info = results["machine"]
    disk = info["disk"]
    print(format_table(rows))
    print(f"\nmachine: {info['nproc']} CPUs ({info['cpu']}), "
          + (f"Chromium {info['chromium']}, " if info["chromium"] else "")
          + f"Python {info['python']}, disk {disk['device']} ({disk['filesystem']}, {disk['reported_as']}), "
          f"load average (1 min) {info['load_average_at_start'][0]:.2f} at start, "
          f"{info['load_average_at_end'][0]:.2f} at end; driptag {info['driptag_version']} "
          f"({info['source_revision']}); {results['seconds']:.0f} s")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"figures: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
