# The README's commands. Everything a fresh machine (Python 3.11, Node 20 + npm, make, git) lacks
# is installed here, pinned: Python packages from requirements-dev.lock, Node tools from
# package-lock.json.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PY_STAMP   := $(VENV)/.installed
NODE_STAMP := node_modules/.installed

.PHONY: install test demo lint contracts clean

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

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy

# Rebuild the committed contract artifacts (ABI + bytecode) from the Solidity sources, offline.
contracts: $(NODE_STAMP)
	node contracts/build.mjs

clean:
	rm -rf $(VENV) node_modules .pytest_cache
