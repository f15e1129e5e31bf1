# tether: `make demo` runs the order example on the embedded SQLite World,
# `make test` runs lint, the import-layer contract, types and the whole test suite.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck pytest bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m examples.versioning_demo

test: lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

# Four pytest-xdist workers on two cores: half of the suite waits on worker processes.
pytest: $(STAMP)
	$(BIN)/pytest -q -n 4

bench: $(STAMP)
	$(MAKE) -C bench run

clean:
	rm -rf $(VENV) .tether .pytest_cache .mypy_cache .ruff_cache
