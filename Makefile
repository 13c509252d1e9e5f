# Two commands for a new user: `make demo` and `make test`. Each sets up .venv when needed.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
CORE := $(VENV)/.core-installed
DEV := $(VENV)/.dev-installed

.PHONY: demo test check docs lint format bench fixtures clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(CORE): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(DEV): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@ $(CORE)

demo: $(CORE)
	$(BIN)/datafiniti-loader demo --output demo-output

test: check docs
	$(BIN)/python -m pytest

# The API reference from the docstrings, with the README as its front page (site/).
# Strict: a broken link or a docstring mkdocstrings cannot read fails the build.
docs: $(DEV)
	@$(BIN)/mkdocs build --strict > $(VENV)/mkdocs.log 2>&1 || (cat $(VENV)/mkdocs.log; exit 1)
	@echo "docs: site/index.html (built with no warning)"

check: $(DEV)
	$(BIN)/ruff check src tests benchmarks notebooks
	$(BIN)/ruff format --check src tests benchmarks notebooks
	$(BIN)/mypy

format: $(DEV)
	$(BIN)/ruff format src tests benchmarks notebooks
	$(BIN)/ruff check --fix src tests benchmarks notebooks

# `make bench` records every figure in BENCHMARKS.md (about 10 minutes here);
# `make bench QUICK=1` prints a one-round look in under two minutes.
bench: $(DEV)
ifdef QUICK
	$(BIN)/python benchmarks/run.py --quick
	$(BIN)/python benchmarks/report.py --print benchmarks/results/quick.json
else
	$(BIN)/python benchmarks/run.py
	$(BIN)/python benchmarks/report.py
endif

fixtures: $(CORE)
	$(BIN)/python -m datafiniti_loader.sandbox.fixtures data/fixtures

clean:
	rm -rf $(VENV) demo-output site .pytest_cache .mypy_cache .ruff_cache
