# The README's commands. Everything a fresh machine (Python 3.11, Node 20 + npm, make, git) lacks
# is installed here, pinned: Python packages from requirements-dev.lock, Node tools from
# package-lock.json.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PY_STAMP   := $(VENV)/.installed
NODE_STAMP := node_modules/.installed

.PHONY: install test demo lint contracts clean serve e2e postgres

install: $(PY_STAMP) $(NODE_STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# uv installs the locked set in seconds where pip takes most of a minute.
$(PY_STAMP): requirements-dev.lock pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check 'uv>=0.5,<1'
	$(BIN)/uv pip sync --quiet --python $(BIN)/python requirements-dev.lock
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps -e .
	touch $@

$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

test: install
	$(BIN)/python -m pytest

demo: install
	$(BIN)/python -m deployments.demo

# The project on this machine: Prefect server + UI on 127.0.0.1:4200, every deployment, the
# automations, a worker and the sandbox, until Ctrl-C. Pass options through ARGS, e.g.
# `make serve ARGS="--env /etc/tokenforge/production.toml --no-sandbox"`.
serve: install
	$(BIN)/tfops up $(ARGS)

# The end-to-end tests alone: `tfops up` with a real worker, once on SQLite and once on PostgreSQL.
e2e: install postgres
	$(BIN)/python -m pytest tests/e2e

# PostgreSQL's server from Debian's packages, for the end-to-end test on a PostgreSQL-backed Prefect
# server (the test starts its own private cluster; nothing is started here).
postgres:
	@if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
	  echo "PostgreSQL server: installed"; \
	else \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends postgresql; \
	fi

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy

# Rebuild the committed contract artifacts (ABI + bytecode) from the Solidity sources, offline.
contracts: $(NODE_STAMP)
	node contracts/build.mjs

clean:
	rm -rf $(VENV) node_modules .pytest_cache
