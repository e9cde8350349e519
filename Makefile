# Two commands on a fresh machine with Python 3.10+ and make: `make demo`, `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export HEADWATER_HOME ?= $(CURDIR)/.headwater-demo

.PHONY: demo test bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: $(BIN)/python pyproject.toml $(wildcard contrib/*/pyproject.toml)
	$(BIN)/pip install --quiet -e ".[dev,ui]"
	for pkg in contrib/*/; do [ -f $$pkg/pyproject.toml ] && $(BIN)/pip install --quiet -e $$pkg || true; done
	touch $(VENV)/.installed $@

demo: $(VENV)/.installed
	$(BIN)/python examples/run_all.py
	$(BIN)/headwater runs --limit 20

test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -q

bench: $(VENV)/.installed-dev
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) .headwater-demo build *.egg-info core/*.egg-info
