# trackhook developer commands. Nothing needs activating: every tool runs from .venv/bin.
#   make run    serve on http://127.0.0.1:8000 (SQLite, dev signing key and API token in ./var/)
#   make test   the test suite (PostgreSQL on 127.0.0.1:5432 when reachable, and SQLite)
#   make lint   ruff check, ruff format --check, mypy (strict) on app/, the layers contract

SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV := .venv
BIN := $(VENV)/bin
# Re-install only when pyproject.toml is newer than this stamp.
STAMP := $(VENV)/.installed-stamp
VAR := var
DEV_PRIVATE_KEY := $(VAR)/dev-private.pem
DEV_PUBLIC_KEY := $(VAR)/dev-public.pem
DEV_API_TOKEN := $(VAR)/dev-api-token
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

# The exact versions of requirements-dev.lock (the image installs the same pins from
# requirements.lock); `pip check` fails when pyproject.toml asks for something the lock lacks:
# run `make lock` after changing the dependencies.
$(STAMP): pyproject.toml requirements-dev.lock | $(BIN)/python
	$(BIN)/python -m pip install --disable-pip-version-check --quiet --require-hashes \
		-r requirements-dev.lock
	$(BIN)/python -m pip install --disable-pip-version-check --quiet --no-deps \
		--no-build-isolation -e .
	$(BIN)/python -m pip check
	touch $(STAMP)

install: $(STAMP)

# A key given by the user (VIDEOSDK_PUBLIC_KEY or VIDEOSDK_PUBLIC_KEY_FILE) wins; otherwise
# the dev pair in ./var/ is made once and its public half verifies the webhooks. Likewise
# API tokens (API_TOKENS, API_TOKENS_FILE, or API_AUTH=off): otherwise a dev token in ./var/.
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
	if [ -z "$${API_TOKENS:-}" ] && [ -z "$${API_TOKENS_FILE:-}" ] \
		&& [ "$${API_AUTH:-required}" != "off" ]; then \
		if [ ! -s $(DEV_API_TOKEN) ]; then \
			mkdir -p $(VAR) && (umask 077 && $(BIN)/python -c \
				'import secrets; print(secrets.token_urlsafe(32))' > $(DEV_API_TOKEN)) || exit 1; \
		fi; \
		export API_TOKENS_FILE="$(CURDIR)/$(DEV_API_TOKEN)"; \
		echo "make run: /v1 needs 'Authorization: Bearer $$(cat $(DEV_API_TOKEN))'" \
			"(the development token, kept in $(DEV_API_TOKEN))"; \
	fi; \
	exec $(BIN)/trackhook serve --host $(HOST) --port $(PORT)

# Coverage of app/ (also inside the servers the tests start) is printed after the tests;
# the exit status is pytest's.
test: install
	@rm -rf .coverage && mkdir -p .coverage
	@status=0; $(BIN)/coverage run -m pytest $(PYTEST_ARGS) || status=$$?; \
		$(BIN)/coverage combine -q && $(BIN)/coverage report; \
		exit $$status

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy app
	$(BIN)/lint-imports

# The benchmark (docs/PERFORMANCE.md): needs wrk (apt-get install -y wrk) and PostgreSQL on
# 127.0.0.1:5432; it makes and drops its own database. BENCH_ARGS='--quick' for a short run.
BENCH_ARGS ?=

.PHONY: bench
bench: install
	$(BIN)/python -m bench $(BENCH_ARGS)

# The lock files (docs/OPERATIONS.md, Containers): requirements.lock (runtime dependencies and
# the build backend, which the image installs with --require-hashes) and requirements-dev.lock
# (the same pins plus the dev extra). uv's `pip compile` rather than pip-tools: it resolves for
# a target (CPython 3.11, Linux x86_64) instead of the interpreter running it, and reads no
# pip.conf: with its own index settings cleared below it resolves on PyPI alone, so the local
# indexes configured here never reach a lock. Pins already in a lock are kept;
# `make lock LOCK_ARGS=--upgrade` moves everything to the newest releases.
UV_VERSION := 0.13.9
LOCK_ARGS ?=
UV := env -u UV_INDEX -u UV_DEFAULT_INDEX -u UV_INDEX_URL -u UV_EXTRA_INDEX_URL -u UV_FIND_LINKS \
	$(BIN)/uv
LOCK_FLAGS := --quiet --no-config --generate-hashes --python-version 3.11 \
	--python-platform x86_64-unknown-linux-gnu --custom-compile-command 'make lock' $(LOCK_ARGS)
BUILD_REQUIRES := import tomllib; print(*tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"], sep="\n")

.PHONY: lock
lock: | $(BIN)/python
	@$(BIN)/uv --version 2>/dev/null | grep -qF 'uv $(UV_VERSION) ' \
		|| $(BIN)/python -m pip install --disable-pip-version-check --quiet 'uv==$(UV_VERSION)'
	$(BIN)/python -c '$(BUILD_REQUIRES)' \
		| $(UV) pip compile $(LOCK_FLAGS) pyproject.toml - -o requirements.lock
	$(BIN)/python -c '$(BUILD_REQUIRES)' \
		| $(UV) pip compile $(LOCK_FLAGS) pyproject.toml - --extra dev \
			-c requirements.lock -o requirements-dev.lock
