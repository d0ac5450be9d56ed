# Two commands on a fresh machine: `make demo` (the main job) and `make test` (lint + the whole suite).
# Both bootstrap .venv idempotently: it is rebuilt only when setup.cfg or pyproject.toml change.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: demo test lint venv clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) tools/train_multitask.py --config configs/experiments/synthetic.yaml

lint: $(STAMP)
	$(VENV)/bin/ruff check unified tasks tools tests

test: lint
	$(PY) -m pytest -q -n 2 $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
