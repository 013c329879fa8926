# driptag: two commands on a fresh Debian machine.
#   make demo   run the QA demo site on http://127.0.0.1:5000 (offline Drip emulator)
#   make test   install everything from nothing, then run the whole suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CHROMIUM := /usr/lib/chromium/chromium-headless-shell
APT_GET := $(shell [ "$$(id -u)" = 0 ] && echo apt-get || echo sudo apt-get)

.PHONY: demo test bench bench-relay-load chromium venv npm clean

demo: $(BIN)/driptag
	$(BIN)/driptag demo

test: chromium $(BIN)/driptag npm
	$(BIN)/pytest

bench: chromium $(BIN)/driptag npm
	$(BIN)/python benchmarks/run.py

# The relay's load test at full size: 100,000 messages while Drip fails now and then (make test sends 20,000).
bench-relay-load: $(BIN)/driptag
	DRIPTAG_LOAD_MESSAGES=100000 $(BIN)/pytest -q -s tests/test_relay_load.py

chromium:
	@test -x $(CHROMIUM) || { $(APT_GET) update && \
	  DEBIAN_FRONTEND=noninteractive $(APT_GET) install -y --no-install-recommends chromium-headless-shell; }
	@test -x $(CHROMIUM) || { echo "chromium-headless-shell did not install: $(CHROMIUM) is missing" >&2; exit 1; }

venv: $(BIN)/driptag

# The project, installed (not editable) into .venv with its test extra; redone when the sources change.
$(BIN)/driptag: pyproject.toml constraints.txt $(shell find builder templates static -type f -not -path '*/__pycache__/*' 2>/dev/null)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || { rm -rf $(VENV) && $(APT_GET) update && \
	  DEBIAN_FRONTEND=noninteractive $(APT_GET) install -y --no-install-recommends python3-venv && \
	  $(PYTHON) -m venv $(VENV); }
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --constraint constraints.txt ".[test]"
	touch $@

npm:
	@command -v npm >/dev/null || { $(APT_GET) update && \
	  DEBIAN_FRONTEND=noninteractive $(APT_GET) install -y --no-install-recommends nodejs npm; }
	@command -v npm >/dev/null || { echo "npm did not install: install Node.js with npm" >&2; exit 1; }
	@if [ -f tests/analytics_next/package.json ]; then $(MAKE) --no-print-directory \
	  tests/analytics_next/node_modules/.package-lock.json tests/analytics_next/dist/analytics-next.js; fi

# The test clients (Analytics.js 2.0 bundled for the browser, @segment/analytics-node run by node): a clean
# install from the lock whenever the lock changed or node_modules is gone (npm writes .package-lock.json).
tests/analytics_next/node_modules/.package-lock.json: tests/analytics_next/package-lock.json
	cd tests/analytics_next && npm ci --no-audit --no-fund --loglevel=error && touch node_modules/.package-lock.json

tests/analytics_next/dist/analytics-next.js: tests/analytics_next/node_modules/.package-lock.json tests/analytics_next/entry.js
	cd tests/analytics_next && npm run --silent build

clean:
	rm -rf $(VENV) build *.egg-info tests/analytics_next/node_modules tests/analytics_next/dist artifacts
