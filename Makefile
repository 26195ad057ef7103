# Switchboard — one-command run and test from a fresh clone. No Docker needed.
#   make up      venv + install + Redis + all services + gateway, prints the URL
#   make down    stops exactly what `make up` started
#   make test    install (idempotent) + the whole suite
#   make lint    ruff + mypy
#   make bench   side-by-side performance ratios (bounded, 127.0.0.1 only)

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV := $(BIN)/uv
UV_VERSION := 0.13.9
STAMP := $(VENV)/.installed
PROJECTS := pyproject.toml uv.lock $(wildcard */pyproject.toml libs/*/pyproject.toml tools/*/pyproject.toml)
export UV_PYTHON_DOWNLOADS := never
export UV_LINK_MODE := copy
export UV_PROJECT_ENVIRONMENT := $(VENV)

.PHONY: install up down status test test-fast lint fmt bench lock docs clean help

help:
	@grep -E '^#   make' Makefile | sed 's/^#   //'

$(UV):
	@echo "→ creating $(VENV) with $$($(PYTHON) --version)"
	@$(PYTHON) -m venv $(VENV)
	@$(BIN)/pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"

$(STAMP): $(UV) $(PROJECTS)
	@echo "→ installing the workspace into $(VENV) (uv sync --locked)"
	@$(UV) sync --locked --all-packages --python $(BIN)/python --quiet
	@touch $(STAMP)

install: $(STAMP)

lock: $(UV)
	$(UV) lock

up: install
	@$(BIN)/switchboard-dev up

down:
	@if [ -x $(BIN)/switchboard-dev ]; then $(BIN)/switchboard-dev down; else echo "Nothing to stop (no venv)."; fi

status: install
	@$(BIN)/switchboard-dev status

test: install
	@$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: install
	@$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy libs/common/src gateway/src auth-service/src inference-service/src knowledge-service/src memory-service/src tools/devtools/src

fmt: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: install
	@$(BIN)/python -m benchmarks $(BENCH_ARGS)

clean: down
	rm -rf $(VENV) .run .mypy_cache .ruff_cache

docs: install
	@UPDATE_DOCS=1 $(BIN)/python -m pytest -q tests/test_docs_config.py
