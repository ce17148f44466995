# The two commands of the README:
#   make demo   set up, then run the whole pipeline on the bundled sample (offline)
#   make test   set up, then lint, type-check and run the tests
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.stac2cube-installed
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# Pinned so pip takes the CPU wheel (a bare `torch` pulls a multi-GB CUDA build).
TORCH  ?= torch==2.13.0
SEN2SR ?= sen2sr==0.8.5
APT_PACKAGES ?= libgdal-dev slurm-wlm munge
DEMO_DIR ?= stac2cube-demo

.PHONY: setup demo test lint typecheck docs-reference docs clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@# System packages: libgdal-dev for GDAL's Python bindings (AROSICS, steps.coreg);
	@# slurm-wlm + munge for the tests' single-node SLURM cluster (the dask-jobqueue path).
	command -v gdal-config >/dev/null && command -v slurmctld >/dev/null && \
	  command -v munged >/dev/null || { $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_PACKAGES); }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip wheel numpy
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q --no-build-isolation "gdal==$$(gdal-config --version)"
	$(BIN)/python -m pip install -q -e ".[test]"
	@# sen2sr's own requirements pull timm -> torchvision -> another torch: install it alone.
	$(BIN)/python -m pip install -q --no-deps "$(SEN2SR)"
	touch $(STAMP)

demo: setup
	$(BIN)/stac2cube demo $(DEMO_DIR)

lint: setup
	$(BIN)/ruff check stac2cube tests benchmarks examples
	$(BIN)/ruff format --check stac2cube tests benchmarks examples

typecheck: setup
	$(BIN)/mypy stac2cube

test: lint typecheck
	$(BIN)/pytest

# Regenerate docs/configuration.md from the config classes (a test checks it is current).
docs-reference: setup
	$(BIN)/python -c "from stac2cube.config import config_reference; print(config_reference(), end='')" > docs/configuration.md

# Regenerate docs/cli.md and build the documentation site (strict: broken links fail).
docs: docs-reference
	$(BIN)/python -c "from stac2cube.cli.reference import cli_reference; print(cli_reference(), end='')" > docs/cli.md
	$(BIN)/mkdocs build --strict

clean:
	rm -rf $(VENV) $(DEMO_DIR) site stac2cube-examples .pytest_cache .mypy_cache .ruff_cache
