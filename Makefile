# The two commands of the README: `make run` and `make test`. Everything else is a helper.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: setup run console test lint bench-ingest bench-hostile bench-retention bench-console bench-sign-in bench-forward bench-alerts clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "error: Python 3.11 or newer is needed; set PYTHON=/path/to/python3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

setup: $(STAMP)

## Set up and start the demo: its own embedded database, ingest server, simulated agents, the console.
run: setup
	$(BIN)/python -m console demo

## Open the console on the configured database (DATABASE_URL, default: embedded SQLite).
console: setup
	$(BIN)/python -m console

## Set up and run the whole test suite (lint, formatting, types and layers first).
test: lint
	$(BIN)/python -m pytest -q

## Lint, formatting, types and the import-linter contracts of pyproject.toml.
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

bench-ingest: setup
	$(BIN)/python bench/ingest.py

bench-hostile: setup
	$(BIN)/python bench/hostile.py

bench-retention: setup
	$(BIN)/python bench/retention.py

bench-console: setup
	$(BIN)/python bench/console.py

bench-sign-in: setup
	$(BIN)/python bench/sign_in.py

bench-forward: setup
	$(BIN)/python bench/forward.py
	$(BIN)/python bench/forward.py --postgres

bench-alerts: setup
	$(BIN)/python bench/alerts.py
	$(BIN)/python bench/alerts.py --postgres
	$(BIN)/python bench/dispatch_cpu.py
	$(BIN)/python bench/dispatch_cpu.py --postgres --together --rounds 7 --seconds 15

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache *.egg-info
