# trackhook developer commands. Nothing needs activating: every tool runs from .venv/bin.
#   make run    serve on http://127.0.0.1:8000 (SQLite, dev signing key in ./var/)
#   make test   the test suite (PostgreSQL on 127.0.0.1:5432 when reachable, and SQLite)
#   make lint   ruff check, ruff format --check, mypy (strict) on app/

SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV := .venv
BIN := $(VENV)/bin
# Re-install only when pyproject.toml is newer than this stamp.
STAMP := $(VENV)/.installed-stamp
VAR := var
DEV_PRIVATE_KEY := $(VAR)/dev-private.pem
DEV_PUBLIC_KEY := $(VAR)/dev-public.pem
HOST ?= 127.0.0.1
PORT ?= 8000
PYTEST_ARGS ?=

.PHONY: help install run test lint

help:
	@echo "make run    serve trackhook on http://$(HOST):$(PORT) (HOST=, PORT= to change)"
	@echo "make test   run the test suite (PYTEST_ARGS='-k ...' to narrow it)"
	@echo "make lint   ruff check, ruff format --check, mypy app"

$(BIN)/python:
	python3 -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --disable-pip-version-check --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# A key given by the user (VIDEOSDK_PUBLIC_KEY or VIDEOSDK_PUBLIC_KEY_FILE) wins; otherwise
# the dev pair in ./var/ is made once and its public half verifies the webhooks.
run: install
	@if [ -z "$${VIDEOSDK_PUBLIC_KEY:-}" ] && [ -z "$${VIDEOSDK_PUBLIC_KEY_FILE:-}" ]; then \
		if [ ! -f $(DEV_PRIVATE_KEY) ] || [ ! -f $(DEV_PUBLIC_KEY) ]; then \
			mkdir -p $(VAR) && \
			$(BIN)/trackhook keygen --private $(DEV_PRIVATE_KEY) --public $(DEV_PUBLIC_KEY) || exit 1; \
		fi; \
		export VIDEOSDK_PUBLIC_KEY_FILE="$(CURDIR)/$(DEV_PUBLIC_KEY)"; \
		echo "make run: webhooks are verified with $(DEV_PUBLIC_KEY);" \
			"sign with: $(BIN)/trackhook sign BODY_FILE --key $(DEV_PRIVATE_KEY)"; \
	fi; \
	exec $(BIN)/trackhook serve --host $(HOST) --port $(PORT)

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy app

# The benchmark (docs/PERFORMANCE.md): needs wrk (apt-get install -y wrk) and PostgreSQL on
# 127.0.0.1:5432; it makes and drops its own database. BENCH_ARGS='--quick' for a short run.
BENCH_ARGS ?=

.PHONY: bench
bench: install
	$(BIN)/python -m bench $(BENCH_ARGS)
