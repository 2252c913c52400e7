# The README's commands. Each target sets everything up first, so each works on a fresh machine
# with nothing but Python; setup is idempotent and does nothing when nothing changed.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check
STAMP_BUILD := $(VENV)/.skelfast-build
CSRC := $(shell find csrc -name '*.cpp' -o -name '*.h' -o -name '*.cu' 2>/dev/null)

.PHONY: setup test lint format demo bench clean

setup: $(STAMP_BUILD)

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch first and pinned: an unpinned torch pulls a 5 GB CUDA build; the editable install below
# compiles skelfast._C against this torch (--no-build-isolation), so it must be there before.
# One stamp, one build: pip finds the pinned dependencies already satisfied after the first run.
$(STAMP_BUILD): pyproject.toml setup.py $(CSRC) | $(PY)
	$(PIP) install -q torch==2.13.0 "setuptools>=64" wheel ninja
	$(PIP) install -q -e ".[dev]" --no-build-isolation
	touch $@

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

test: setup lint
	$(PY) -m skelfast info
	$(PY) -m pytest -q tests benchmarks

demo: setup
	$(PY) -m skelfast demo --method hico

bench: setup
	$(PY) -m benchmarks.run $(BENCH)

clean:
	rm -rf build $(VENV) skelfast/_C*.so *.egg-info
