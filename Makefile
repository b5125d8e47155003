# Two commands for a newcomer: `make run` and `make test`. Everything else is optional.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test test-gpu bench services lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# One stamp per extra set, remade when pyproject.toml changes.
$(VENV)/.run-deps: pyproject.toml client/pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[train]' -e './client[plot]'
	touch $@

$(VENV)/.dev-deps: pyproject.toml client/pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[train,dev]' -e './client[plot]'
	touch $@ $(VENV)/.run-deps

run: $(VENV)/.run-deps
	$(BIN)/python scripts/run_local.py

services:
	scripts/ensure-services.sh

test: services lint
	$(BIN)/python -m pytest -m "not gpu"

lint: $(VENV)/.dev-deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# The CUDA path: run on a machine with an NVIDIA GPU.
test-gpu: $(VENV)/.dev-deps
	$(BIN)/python -m pytest -m gpu tests

bench: services $(VENV)/.dev-deps
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) var .pytest_cache
