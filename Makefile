# Two commands do all the set-up:  `make demo`  and  `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DATA_DIR ?=
LIMIT  ?= 200

.PHONY: demo test lint install install-dev clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# The demo's learned router uses local MiniLM embeddings: torch first, pinned to the CPU build
# (an unpinned one pulls GBs of CUDA packages).
install: $(BIN)/python
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[learn,embed]"

install-dev: $(BIN)/python
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[dev]"

## Replay real recorded prompts through the engine (no API key) and print the spend report.
demo: install
	$(BIN)/tierwise demo --limit $(LIMIT) $(if $(DATA_DIR),--data-dir $(DATA_DIR),)

lint: install-dev
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

## The whole test suite (lint, types, tests; SQLite and the local PostgreSQL).
test: lint
	$(BIN)/pytest

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
