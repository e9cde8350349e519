# Two commands on a fresh machine with Python 3.10+ and make: `make demo`, `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The demo records its runs where every headwater command looks: HEADWATER_HOME if set,
# else ~/.headwater. So `.venv/bin/headwater runs` (docs/tutorial.md) shows them, and so
# do the runs of examples started by hand. `make demo HEADWATER_HOME=/tmp/hw` keeps them
# apart; then give the same HEADWATER_HOME to `headwater runs`.

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
	@echo "These runs are in $${HEADWATER_HOME:-~/.headwater}: .venv/bin/headwater runs lists them, .venv/bin/headwater runs show NAME shows one."

test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -q

bench: $(VENV)/.installed-dev
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) .headwater-demo build *.egg-info core/*.egg-info
