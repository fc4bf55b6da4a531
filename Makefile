# The two commands of the README: `make demo` and `make test`. Both build the virtual
# environment from pyproject.toml first, so a missing install step fails here too.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed

.PHONY: demo test lint typecheck unit api clean

demo: $(STAMP)
	$(BIN)/extension-server demo

test: lint typecheck unit

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy compiler backends server

unit: $(STAMP)
	$(BIN)/python -m pytest

# Regenerate server/api/ from server/api/extension.proto (tests fail when they drift).
api: $(STAMP)
	$(BIN)/python scripts/generate_api.py

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit("Python 3.11 or newer is needed" if sys.version_info < (3, 11) else 0)'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
