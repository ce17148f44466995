# The two commands of the README:
#   make demo   set up, then run the whole pipeline on the bundled sample (offline)
#   make test   set up, then lint, type-check and run the tests
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.stac2cube-installed
DEMO_DIR ?= stac2cube-demo

.PHONY: setup demo test lint typecheck docs-reference clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $(STAMP)

demo: setup
	$(BIN)/stac2cube demo $(DEMO_DIR)

lint: setup
	$(BIN)/ruff check stac2cube tests benchmarks
	$(BIN)/ruff format --check stac2cube tests benchmarks

typecheck: setup
	$(BIN)/mypy stac2cube

test: lint typecheck
	$(BIN)/pytest

# Regenerate docs/configuration.md from the config classes (a test checks it is current).
docs-reference: setup
	$(BIN)/python -c "from stac2cube.config import config_reference; print(config_reference(), end='')" > docs/configuration.md

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache .mypy_cache .ruff_cache
