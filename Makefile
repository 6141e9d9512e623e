# One command per chore. `make run` and `make test` do all their own set-up.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PORT   ?= 8080
STAMP  := $(VENV)/.installed

.PHONY: run test lint bench soak crash-storm clean web browser rt promtool services cluster

# The widget, console and demo page: built from static/src by npm + esbuild when missing or
# older than their sources or the lockfile (static/.built is written by the build).
WEB_SOURCES := $(shell find static/src -type f 2>/dev/null) package.json package-lock.json
WEB_STAMP   := static/.built
NODE_STAMP  := node_modules/.package-lock.json

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund
	touch $(NODE_STAMP)

$(WEB_STAMP): $(NODE_STAMP) $(WEB_SOURCES)
	npm run --silent build

web: $(WEB_STAMP)

# Browser tests drive Debian's Chromium with Playwright (no browser downloads).
browser: $(STAMP)
	test -x /usr/bin/chromium || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium; \
	  else sudo apt-get update && sudo apt-get install -y chromium; fi; }
	$(BIN)/python -c 'import playwright' 2>/dev/null || $(BIN)/python -m pip install --quiet 'playwright>=1.45'

# promtool validates deploy/prometheus/alerts.yml in the tests; Debian ships it with the
# prometheus package, whose daemon is not wanted here: it is stopped and disabled again.
promtool:
	command -v promtool >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y prometheus; \
	  else sudo apt-get update && sudo apt-get install -y prometheus; fi; \
	  systemctl disable --now prometheus 2>/dev/null || sudo systemctl disable --now prometheus 2>/dev/null || true; }

# Request Tracker 5 for the handoff tests, from Debian's packages when missing (as root).
# The tests start it on a loopback port and stop it; CHATD_TEST_SKIP_RT=1 opts out.
rt:
	scripts/install-rt.sh

# PostgreSQL and Redis on their usual local ports, installed and started when missing.
services:
	scripts/services.sh

# The demo's accounts have published passwords: its database, uploads and transcripts live
# in var/demo/, whatever CHATD_* the shell exports, never in production's var/chatd.db.
run: $(STAMP) web
	mkdir -p var/demo
	CHATD_DATABASE_URL=sqlite:///var/demo/demo.db CHATD_UPLOAD_DIR=var/demo/uploads \
	  CHATD_HANDOFF_FILE_DIR=var/demo/handoff $(BIN)/chatd serve --demo --port $(PORT)

# Three processes on one PostgreSQL desk behind HAProxy, with the demo's accounts in a
# database of their own (docs/scaling.md#behind-a-load-balancer).
cluster: $(STAMP) web services
	BIN=$(BIN) PORT=$(PORT) scripts/cluster.sh

test: $(STAMP) web browser rt promtool services
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check chatd tests bench
	$(BIN)/mypy

bench: $(STAMP) services
	$(BIN)/python -m bench $(BENCH_ARGS)

# The siege: hostile clients of every kind against one chatd while honest pairs chat
# (docs/security.md). Not part of `make test`.
soak: $(STAMP)
	$(BIN)/python -m bench.siege $(SOAK_ARGS)

# The crash storm, long: KILLS random SIGKILLs of a chatd under chat load (`make test`
# runs a short one).
KILLS ?= 1000
crash-storm: $(STAMP)
	CHATD_CRASH_STORM_KILLS=$(KILLS) $(BIN)/python -m pytest -p no:cacheprovider \
	  tests/e2e/test_crash_storm.py -o timeout=0 -s $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) var build *.egg-info .pytest_cache .mypy_cache .ruff_cache node_modules \
	  static/widget.js static/widget.js.map static/console static/monitor static/demo static/.built
