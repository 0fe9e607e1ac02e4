# Helpdesk IM — the two commands first: `make test` and `make run`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
PACKAGES := -e contracts -e services/runtime -e services/im-api -e services/delivery -e services/presence -e services/notifier -e deploy/imctl
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: test run install setup js console contracts contracts-check lock test-unit test-integration test-e2e \
        bench compose-up compose-down clean help

help:
	@echo "make test      - create the venv if missing, install, start servers, run the whole suite"
	@echo "make run       - the whole stack on this machine, with the agent console (Apache Kafka when Java is present)"
	@echo "make console   - build the agent console (clients/console/dist)"
	@echo "make contracts - regenerate JSON Schema, AsyncAPI, OpenAPI and the client's TypeScript types"
	@echo "make bench     - the benchmarks (not part of make test)"

$(STAMP): constraints.txt requirements-dev.txt contracts/pyproject.toml services/*/pyproject.toml deploy/imctl/pyproject.toml services/runtime/pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints.txt $(PACKAGES) -r requirements-dev.txt
	@touch $(STAMP)

install: $(STAMP)

# The TypeScript client (clients/js): its packages from the lockfile, then compiled.
JS := clients/js
JS_STAMP := $(JS)/node_modules/.installed
$(JS_STAMP): $(JS)/package.json $(JS)/package-lock.json
	cd $(JS) && npm ci --no-audit --no-fund
	@touch $(JS_STAMP)

js: $(JS_STAMP)
	cd $(JS) && npm run --silent build

# The agent console (clients/console): web components built by Vite into clients/console/dist.
CONSOLE := clients/console
CONSOLE_STAMP := $(CONSOLE)/node_modules/.installed
$(CONSOLE_STAMP): $(CONSOLE)/package.json $(CONSOLE)/package-lock.json $(JS_STAMP)
	cd $(CONSOLE) && npm ci --no-audit --no-fund
	@touch $(CONSOLE_STAMP)

console: js $(CONSOLE_STAMP)
	cd $(CONSOLE) && npm run --silent build

# `make run` builds the console only when it was never built.
$(CONSOLE)/dist/index.html:
	$(MAKE) console

# System tools some tests drive (kcat, ...): installed when absent, as root; otherwise printed.
setup: install
	@bash deploy/local/setup-tools.sh

test: setup console
	$(PY) -m pytest $(PYTEST_ARGS)

test-unit: install
	$(PY) -m pytest -m unit $(PYTEST_ARGS)

test-integration: install
	$(PY) -m pytest -m integration $(PYTEST_ARGS)

test-e2e: install
	$(PY) -m pytest -m e2e $(PYTEST_ARGS)

run: install $(CONSOLE)/dist/index.html
	$(VENV)/bin/imctl up $(ARGS)

contracts: install $(JS_STAMP)
	$(PY) -m im_contracts.schema
	$(PY) -m im_api.openapi
	cd $(JS) && npm run --silent generate

lock: install
	$(PIP) freeze --exclude-editable | sed '1i # Pinned versions of every Python dependency (make lock regenerates it from the current venv).' > constraints.txt

bench: install console
	$(PY) -m bench.run $(ARGS)

# Docker when an engine answers, else podman-compose + deploy/offline (images built, cached).
compose-up: install
	$(PY) -m imctl compose up $(ARGS)

# ARGS=--volumes also removes the data volumes.
compose-down: install
	$(PY) -m imctl compose down $(ARGS)

clean:
	rm -rf $(VENV) .run
