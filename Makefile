# Helpdesk IM — the two commands first: `make test` and `make run`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
PACKAGES := -e contracts -e services/runtime -e services/im-api -e services/delivery -e services/presence -e deploy/imctl
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: test run install setup contracts contracts-check lock test-unit test-integration test-e2e \
        bench compose-up compose-down clean help

help:
	@echo "make test      - create the venv if missing, install, start servers, run the whole suite"
	@echo "make run       - the whole stack on this machine (Apache Kafka when Java is present)"
	@echo "make contracts - regenerate JSON Schema + AsyncAPI from contracts/"
	@echo "make bench     - the benchmarks (not part of make test)"

$(STAMP): constraints.txt requirements-dev.txt contracts/pyproject.toml services/*/pyproject.toml deploy/imctl/pyproject.toml services/runtime/pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints.txt $(PACKAGES) -r requirements-dev.txt
	@touch $(STAMP)

install: $(STAMP)

# System tools some tests drive (kcat, ...): installed when absent, as root; otherwise printed.
setup: install
	@bash deploy/local/setup-tools.sh

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

test-unit: install
	$(PY) -m pytest -m unit $(PYTEST_ARGS)

test-integration: install
	$(PY) -m pytest -m integration $(PYTEST_ARGS)

test-e2e: install
	$(PY) -m pytest -m e2e $(PYTEST_ARGS)

run: install
	$(VENV)/bin/imctl up $(ARGS)

contracts: install
	$(PY) -m im_contracts.schema

lock: install
	$(PIP) freeze --exclude-editable | sed '1i # Pinned versions of every Python dependency (make lock regenerates it from the current venv).' > constraints.txt

bench: install
	$(PY) -m bench.run $(ARGS)

# Docker when an engine answers, else podman-compose + deploy/offline (images built, cached).
compose-up: install
	$(PY) -m imctl compose up $(ARGS)

# ARGS=--volumes also removes the data volumes.
compose-down: install
	$(PY) -m imctl compose down $(ARGS)

clean:
	rm -rf $(VENV) .run
