# keel — `make run` starts everything on embedded defaults, `make test` runs the suite.
SHELL := /bin/bash
PYTHON ?= python3
UV := $(PYTHON) -m uv
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test bench lint fmt typecheck install migrate clean

# Another Python in its own venv: make test VENV=.venv-3.13 UV_PYTHON=<interpreter>
# (see .ci/test-python). PostgreSQL/Redis binaries for the embedded servers
# come from wheels on Python < 3.13 and from the distribution on 3.13
# (.ci/system-packages installs them).
$(BIN)/python: pyproject.toml uv.lock .python-version
	@$(PYTHON) -m uv --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet --disable-pip-version-check uv
	UV_PROJECT_ENVIRONMENT=$(VENV) $(UV) sync --frozen --compile-bytecode
	@touch $(BIN)/python

install: $(BIN)/python

run: install
	$(BIN)/keel dev

migrate: install
	$(BIN)/keel migrate

test: install
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check app tests bench deploy
	$(BIN)/ruff format --check app tests bench deploy
	$(BIN)/mypy app

typecheck: install
	$(BIN)/mypy app

fmt: install
	$(BIN)/ruff format app tests bench deploy
	$(BIN)/ruff check --fix app tests bench deploy

bench: install
	$(BIN)/python bench/run_all.py

clean:
	rm -rf .keel .pytest_cache .mypy_cache .ruff_cache
