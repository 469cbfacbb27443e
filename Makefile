# Steward: `make up` runs the product on the embedded default; `make test` runs the suite.
SHELL := /bin/bash
PYTHON ?= python3
UV := $(shell command -v uv 2>/dev/null || echo "$(PYTHON) -m uv")
MANAGE := .venv/bin/python manage.py
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: up dev test sync uv lint format browser-test worker

uv:
	@command -v uv >/dev/null 2>&1 || $(PYTHON) -m uv --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet uv

# Bytecode compiled here, once: this machine's environment sets PYTHONDONTWRITEBYTECODE, so
# every process (each worker, test subprocess and server) compiled every module it imported
# from source again — 7.6 s to import the engine's providers and Django, 4.2 s compiled.
sync: uv
	@$(UV) sync --frozen --quiet --compile-bytecode
	@.venv/bin/python -m compileall -q -j 0 approvals bench config executions tests manage.py >/dev/null

up: sync
	@HOST=$(HOST) PORT=$(PORT) $(MANAGE) up

# As `make up`, with DEBUG on (Django's debug pages, templates and static files re-read).
dev: sync
	@DEBUG=true HOST=$(HOST) PORT=$(PORT) $(MANAGE) up

worker: sync
	@$(MANAGE) worker

test: sync
	@.venv/bin/pytest -q -m "not browser" $(PYTEST_ARGS)

browser-test: sync
	@.venv/bin/pytest -q -m browser $(PYTEST_ARGS)

lint: sync
	@.venv/bin/ruff check . && .venv/bin/ruff format --check .

format: sync
	@.venv/bin/ruff format . && .venv/bin/ruff check --fix .
